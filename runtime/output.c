/* Record encoders (JSON strings and numbers, CSV fields) and the writer
 * that puts whole records on a file descriptor.
 *
 * Strings are copied in runs: a run of bytes that need no escaping and form
 * well-formed UTF-8 is one memcpy, and 8 bytes at a time are checked for
 * anything special, since most text in repository records is plain ASCII. */
#include "output.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- buffer ---- */

bool fleet_buf_grow(struct fleet_buf *b, size_t extra)
{
    if (b->failed)
        return false;
    if (extra > SIZE_MAX / 2 - b->len) {
        b->failed = true;
        return false;
    }
    size_t need = b->len + extra;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p) {
        b->failed = true;
        return false;
    }
    b->data = p;
    b->cap = cap;
    return true;
}

void fleet_buf_free(struct fleet_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
    b->failed = false;
}

/* ---- UTF-8 ---- */

/* The length (2..4) of the well-formed sequence at s, whose first byte is
 * >= 0x80; or 0, with *bad the length of the maximal ill-formed subpart
 * (the bytes one U+FFFD replaces), per Unicode Table 3-7 and the
 * "substitution of maximal subparts" practice. */
static size_t utf8_sequence(const unsigned char *s, const unsigned char *end, size_t *bad)
{
    unsigned c = s[0];
    unsigned lo = 0x80, hi = 0xBF;
    size_t need;
    if (c < 0xC2) {
        *bad = 1; /* a continuation byte, or an overlong 2-byte lead */
        return 0;
    } else if (c < 0xE0) {
        need = 1;
    } else if (c < 0xF0) {
        need = 2;
        if (c == 0xE0)
            lo = 0xA0; /* overlong */
        else if (c == 0xED)
            hi = 0x9F; /* surrogates */
    } else if (c < 0xF5) {
        need = 3;
        if (c == 0xF0)
            lo = 0x90; /* overlong */
        else if (c == 0xF4)
            hi = 0x8F; /* above U+10FFFF */
    } else {
        *bad = 1;
        return 0;
    }
    size_t avail = (size_t)(end - s) - 1;
    for (size_t i = 1; i <= need; i++) {
        if (i > avail || s[i] < lo || s[i] > hi) {
            *bad = i;
            return 0;
        }
        lo = 0x80;
        hi = 0xBF;
    }
    return need + 1;
}

size_t fleet_utf8_valid_prefix(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str, *p = s, *end = s + len;
    while (p < end) {
        if (*p < 0x80) {
            p++;
            continue;
        }
        size_t bad, n = utf8_sequence(p, end, &bad);
        if (!n)
            break;
        p += n;
    }
    return (size_t)(p - s);
}

static const char replacement[3] = {'\xEF', '\xBF', '\xBD'}; /* U+FFFD */

/* ---- JSON ---- */

#define ONES UINT64_C(0x0101010101010101)
#define HIGHS UINT64_C(0x8080808080808080)

/* Whether any of the 8 bytes in x is < 0x20, '"', '\\' or >= 0x80. Each
 * test is exact about "any byte", which is all a run needs to know. */
static inline bool json_special8(uint64_t x)
{
    uint64_t quote = x ^ (ONES * '"'), backslash = x ^ (ONES * '\\');
    uint64_t t = ((x - ONES * 0x20) & ~x) | ((quote - ONES) & ~quote) | ((backslash - ONES) & ~backslash) | x;
    return (t & HIGHS) != 0;
}

/* 1: copied as is (printable ASCII but '"' and '\\'). */
static const unsigned char json_plain[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x00 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x10 */
    1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x20: '"' */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x30 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x40 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, /* 0x50: '\\' */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x60 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x70 */
    /* 0x80..0xFF: 0, checked as UTF-8 */
};

static const char hex[] = "0123456789abcdef";

void fleet_json_string(struct fleet_buf *b, const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str, *end = s + len;
    /* Invariant: room for the rest of the input byte for byte, plus the
     * closing quote. Escapes and replacements grow it as they go. */
    if (len > SIZE_MAX - 2 - b->len || !fleet_buf_reserve(b, len + 2))
        return;
    char *o = b->data + b->len;
    *o++ = '"';
    while (s < end) {
        const unsigned char *run = s;
        for (;;) {
            while (end - s >= 8) {
                uint64_t x;
                memcpy(&x, s, 8);
                if (json_special8(x))
                    break;
                s += 8;
            }
            while (s < end && json_plain[*s])
                s++;
            if (s == end || *s < 0x80)
                break;
            size_t bad, n = utf8_sequence(s, end, &bad);
            if (!n)
                break;
            s += n; /* well-formed: part of the run */
        }
        memcpy(o, run, (size_t)(s - run));
        o += s - run;
        if (s == end)
            break;
        b->len = (size_t)(o - b->data);
        if (!fleet_buf_reserve(b, (size_t)(end - s) + 6 + 1))
            return;
        o = b->data + b->len;
        unsigned c = *s;
        if (c >= 0x80) {
            size_t bad;
            utf8_sequence(s, end, &bad);
            memcpy(o, replacement, 3);
            o += 3;
            s += bad;
            continue;
        }
        s++;
        *o++ = '\\';
        switch (c) {
        case '"':
        case '\\':
            *o++ = (char)c;
            break;
        case '\n':
            *o++ = 'n';
            break;
        case '\r':
            *o++ = 'r';
            break;
        case '\t':
            *o++ = 't';
            break;
        case '\b':
            *o++ = 'b';
            break;
        case '\f':
            *o++ = 'f';
            break;
        default:
            memcpy(o, "u00", 3);
            o[3] = hex[c >> 4];
            o[4] = hex[c & 15];
            o += 5;
        }
    }
    *o++ = '"';
    b->len = (size_t)(o - b->data);
}

void fleet_json_integer(struct fleet_buf *b, long long v)
{
    char tmp[24], *p = tmp + sizeof tmp;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--p = '-';
    fleet_buf_add(b, p, (size_t)(tmp + sizeof tmp - p));
}

bool fleet_number_text(struct fleet_buf *b, double v)
{
    if (!isfinite(v))
        return false;
    if (!fleet_buf_reserve(b, 32))
        return true;
    char *p = b->data + b->len;
    int n = snprintf(p, 32, "%.17g", v);
    if (n <= 0 || n >= 32)
        return true; /* cannot happen for a finite double */
    for (int i = 0; i < n; i++)
        if (p[i] == ',')
            p[i] = '.'; /* a locale with a decimal comma */
    b->len += (size_t)n;
    return true;
}

void fleet_json_float(struct fleet_buf *b, double v)
{
    if (!fleet_number_text(b, v))
        fleet_buf_literal(b, "null");
}

/* ---- CSV ---- */

void fleet_csv_field(struct fleet_buf *b, const char *str, size_t len)
{
    /* An empty field is no bytes at all; str may then be NULL (an empty
     * list flattened into a scratch buffer never allocated), and NULL + 0
     * is undefined. */
    if (len == 0)
        return;
    const unsigned char *s = (const unsigned char *)str, *end = s + len, *p = s;
    bool quote = len && (s[0] == ' ' || s[0] == '\t' || end[-1] == ' ' || end[-1] == '\t');
    bool verbatim = true; /* no quote to double, no byte to replace */
    while (p < end) {
        unsigned c = *p;
        if (c < 0x80) {
            if (c == ',' || c == '\r' || c == '\n') {
                quote = true;
            } else if (c == '"') {
                quote = true;
                verbatim = false;
            }
            p++;
            continue;
        }
        size_t bad, n = utf8_sequence(p, end, &bad);
        if (n) {
            p += n;
        } else {
            verbatim = false;
            p += bad;
        }
    }
    if (verbatim) {
        if (!fleet_buf_reserve(b, len + 2))
            return;
        if (quote)
            b->data[b->len++] = '"';
        memcpy(b->data + b->len, s, len);
        b->len += len;
        if (quote)
            b->data[b->len++] = '"';
        return;
    }
    /* Each byte becomes at most 3 (a replacement); plus the quotes. */
    if (len > (SIZE_MAX - 2 - b->len) / 3 || !fleet_buf_reserve(b, 3 * len + 2))
        return;
    char *o = b->data + b->len;
    if (quote)
        *o++ = '"';
    for (p = s; p < end;) {
        unsigned c = *p;
        if (c < 0x80) {
            if (c == '"')
                *o++ = '"';
            *o++ = (char)c;
            p++;
            continue;
        }
        size_t bad, n = utf8_sequence(p, end, &bad);
        if (n) {
            memcpy(o, p, n);
            o += n;
            p += n;
        } else {
            memcpy(o, replacement, 3);
            o += 3;
            p += bad;
        }
    }
    if (quote)
        *o++ = '"';
    b->len = (size_t)(o - b->data);
}

/* ---- the writer ---- */

void fleet_out_init(struct fleet_out *o, int fd, bool own_fd)
{
    memset(o, 0, sizeof *o);
    o->fd = fd;
    o->own_fd = own_fd;
    struct stat st;
    o->regular = own_fd && fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
}

/* write(2) all of p[0..n), through short writes and EINTR. SIGPIPE is
 * blocked meanwhile (and a SIGPIPE this write raised is consumed), so a
 * closed pipe is an EPIPE to report rather than the death of the process,
 * whatever the host did with the signal. */
static int write_all(struct fleet_out *o, const char *p, size_t n)
{
    sigset_t pipe_only, old, pending;
    sigemptyset(&pipe_only);
    sigaddset(&pipe_only, SIGPIPE);
    bool blocked = pthread_sigmask(SIG_BLOCK, &pipe_only, &old) == 0 && !sigismember(&old, SIGPIPE);
    bool was_pending = blocked && sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE);
    if (o->fd == STDOUT_FILENO)
        fflush(stdout); /* what a script print()ed before comes first */
    int err = 0;
    while (n > 0) {
        ssize_t k = write(o->fd, p, n);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            err = errno;
            break;
        }
        if (k == 0) {
            err = EIO;
            break;
        }
        p += k;
        n -= (size_t)k;
        o->written += (unsigned long long)k;
    }
    if (blocked) {
        if (err == EPIPE && !was_pending) {
            struct timespec zero = {0, 0};
            while (sigtimedwait(&pipe_only, NULL, &zero) < 0 && errno == EINTR)
                ;
        }
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    return err;
}

int fleet_out_flush(struct fleet_out *o)
{
    if (o->err)
        return o->err;
    if (o->committed == 0)
        return 0;
    unsigned long long before = o->written;
    int err = write_all(o, o->buf.data, o->committed);
    if (err) {
        o->err = err;
        /* A file we created: cut the part of a record that got out, so the
         * file ends at a record boundary. */
        if (o->regular && o->written != before && ftruncate(o->fd, (off_t)before) == 0)
            o->written = before;
        return err;
    }
    size_t rest = o->buf.len - o->committed;
    memmove(o->buf.data, o->buf.data + o->committed, rest);
    o->buf.len = rest;
    o->committed = 0;
    /* One huge record grew the buffer: give the memory back. */
    if (o->buf.cap > 16 * FLEET_OUT_FLUSH_AT && rest < 2 * FLEET_OUT_FLUSH_AT) {
        char *p = realloc(o->buf.data, 2 * FLEET_OUT_FLUSH_AT);
        if (p) {
            o->buf.data = p;
            o->buf.cap = 2 * FLEET_OUT_FLUSH_AT;
        }
    }
    return 0;
}

int fleet_out_commit(struct fleet_out *o)
{
    if (o->buf.failed) {
        fleet_out_abort(o);
        return o->err ? o->err : ENOMEM;
    }
    o->committed = o->buf.len;
    if (o->err)
        return o->err;
    if (o->committed >= FLEET_OUT_FLUSH_AT)
        return fleet_out_flush(o);
    return 0;
}

int fleet_out_close(struct fleet_out *o)
{
    if (o->closed)
        return o->err;
    o->closed = true;
    o->buf.len = o->committed;
    fleet_out_flush(o);
    if (o->own_fd && o->fd >= 0 && close(o->fd) != 0 && !o->err)
        o->err = errno; /* e.g. a deferred write error on NFS; not retried */
    o->fd = -1;
    fleet_buf_free(&o->buf);
    o->committed = 0;
    return o->err;
}
