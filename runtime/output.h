/* Record encoders and a record-at-a-time file writer, without Lua.
 *
 * fleet_buf is a growable byte buffer; the encoders append to it and never
 * fail in the middle: an allocation failure marks the buffer failed and
 * later appends are dropped, so the caller checks once per record.
 *
 * fleet_out writes a file descriptor in whole records: a record is encoded
 * into the buffer after the last committed one, and only committed bytes
 * are ever written, so a reader of the file (or pipe) never sees half a
 * record from a record that failed to encode. */
#ifndef FLEET_OUTPUT_H
#define FLEET_OUTPUT_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

struct fleet_buf {
    char *data;
    size_t len, cap;
    bool failed; /* an allocation failed since the last fleet_buf_reset */
};

/* Grows b so that extra more bytes fit; false (and b->failed) if it cannot. */
bool fleet_buf_grow(struct fleet_buf *b, size_t extra);
void fleet_buf_free(struct fleet_buf *b);

static inline bool fleet_buf_reserve(struct fleet_buf *b, size_t extra)
{
    return b->cap - b->len >= extra || fleet_buf_grow(b, extra);
}

static inline void fleet_buf_reset(struct fleet_buf *b)
{
    b->len = 0;
    b->failed = false;
}

static inline void fleet_buf_putc(struct fleet_buf *b, char c)
{
    if (fleet_buf_reserve(b, 1))
        b->data[b->len++] = c;
}

static inline void fleet_buf_add(struct fleet_buf *b, const void *p, size_t n)
{
    if (fleet_buf_reserve(b, n)) {
        memcpy(b->data + b->len, p, n);
        b->len += n;
    }
}

#define fleet_buf_literal(b, s) fleet_buf_add((b), "" s, sizeof(s) - 1)

/* A JSON string literal with its quotes: '"' and '\\' escaped, control
 * characters as \n, \r, \t, \b, \f or \u00XX, and every ill-formed UTF-8
 * sequence (stray continuation bytes, overlong forms, surrogates, code
 * points above U+10FFFF, truncated sequences) replaced by U+FFFD, one per
 * maximal ill-formed subpart, so the output is always valid UTF-8. */
void fleet_json_string(struct fleet_buf *b, const char *s, size_t len);

/* Integers exactly; finite floats as %.17g (round-trips every double);
 * NaN and infinities, which JSON cannot express, as null. */
void fleet_json_integer(struct fleet_buf *b, long long v);
void fleet_json_float(struct fleet_buf *b, double v);

/* The text of a number as fleet_json_* writes it, for CSV cells: returns
 * false (and writes nothing) for NaN and infinities. */
bool fleet_number_text(struct fleet_buf *b, double v);

/* One CSV field (RFC 4180): quoted when it holds a comma, a quote, CR or LF,
 * or begins or ends with a space or tab; quotes doubled inside; UTF-8 kept
 * and ill-formed sequences replaced by U+FFFD as for JSON. */
void fleet_csv_field(struct fleet_buf *b, const char *s, size_t len);

/* Length of the well-formed UTF-8 prefix of s[0..len) (a fast check). */
size_t fleet_utf8_valid_prefix(const char *s, size_t len);

#define FLEET_OUT_FLUSH_AT (64 * 1024)

struct fleet_out {
    int fd;
    bool own_fd;          /* close it in fleet_out_close (never for stdout) */
    bool regular;         /* a regular file: truncate back on a failed write */
    struct fleet_buf buf; /* [0, committed) complete records, then the one being encoded */
    size_t committed;
    unsigned long long written; /* bytes written to fd */
    int err;                    /* errno of the first failure; 0 if none */
    bool closed;
};

/* Takes fd (own_fd: the writer closes it). Never fails. */
void fleet_out_init(struct fleet_out *o, int fd, bool own_fd);

/* Starts a record: drops whatever an abandoned record left after the last
 * committed one. Encode into o->buf next. */
static inline void fleet_out_begin(struct fleet_out *o)
{
    o->buf.len = o->committed;
    o->buf.failed = false;
}

/* Drops the record being encoded. */
static inline void fleet_out_abort(struct fleet_out *o)
{
    o->buf.len = o->committed;
    o->buf.failed = false;
}

/* Commits the record being encoded, and writes the buffer out once it
 * holds FLEET_OUT_FLUSH_AT bytes. Returns 0, ENOMEM if the record could not
 * be encoded for lack of memory (it is dropped), or the errno of a failed
 * write (this one or an earlier one: failures are sticky). */
int fleet_out_commit(struct fleet_out *o);

/* Writes every committed byte. 0 or the (sticky) errno. */
int fleet_out_flush(struct fleet_out *o);

/* Flushes, then closes the descriptor if owned, and frees the buffer.
 * 0 or the errno of the first failure. A second call returns the same. */
int fleet_out_close(struct fleet_out *o);

#endif
