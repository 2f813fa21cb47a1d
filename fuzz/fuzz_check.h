/* Independent oracles the harnesses check the runtime's output against:
 * a strict UTF-8 decoder and U+FFFD substitution written from the Unicode
 * tables (not from output.c), a JSON grammar checker, and an RFC 4180 row
 * parser. Header-only: each harness is one translation unit. */
#ifndef FLEET_FUZZ_CHECK_H
#define FLEET_FUZZ_CHECK_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A broken invariant: say which, then abort so libFuzzer keeps the input. */
static void fuzz_fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void fuzz_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("fuzz invariant broken: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

#define FUZZ_CHECK(cond, ...)                                                                                  \
    do {                                                                                                       \
        if (!(cond))                                                                                           \
            fuzz_fail(__VA_ARGS__);                                                                            \
    } while (0)

/* ---- a byte vector ---- */

struct fz_vec {
    unsigned char *p;
    size_t len, cap;
};

/* Appends n bytes; p is never NULL afterwards, even for n == 0, so the
 * bytes can always go to memcmp. */
static void fz_add(struct fz_vec *v, const void *p, size_t n)
{
    if (v->len + n > v->cap || !v->p) {
        size_t cap = v->cap ? v->cap : 64;
        while (cap < v->len + n)
            cap *= 2;
        v->p = realloc(v->p, cap);
        if (!v->p)
            abort();
        v->cap = cap;
    }
    if (n)
        memcpy(v->p + v->len, p, n);
    v->len += n;
}

/* Whether v holds exactly the n bytes at p. */
static bool fz_equals(const struct fz_vec *v, const void *p, size_t n)
{
    return v->len == n && (n == 0 || memcmp(v->p, p, n) == 0);
}

static void fz_addc(struct fz_vec *v, unsigned char c) { fz_add(v, &c, 1); }

static void fz_free(struct fz_vec *v)
{
    free(v->p);
    memset(v, 0, sizeof *v);
}

/* ---- UTF-8 ---- */

/* The second byte's range for a lead byte (Unicode Table 3-7), and how many
 * continuation bytes follow; 0 for a byte that cannot start a sequence. */
static int fz_utf8_lead(unsigned c, unsigned *lo, unsigned *hi)
{
    *lo = 0x80, *hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        return 1;
    if (c == 0xE0)
        return *lo = 0xA0, 2;
    if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF)
        return 2;
    if (c == 0xED)
        return *hi = 0x9F, 2;
    if (c == 0xF0)
        return *lo = 0x90, 3;
    if (c >= 0xF1 && c <= 0xF3)
        return 3;
    if (c == 0xF4)
        return *hi = 0x8F, 3;
    return 0;
}

/* s with every maximal ill-formed subpart replaced by U+FFFD, appended to out.
 * Returns the number of replacements. */
static size_t fz_utf8_sanitize(const unsigned char *s, size_t len, struct fz_vec *out)
{
    size_t i = 0, bad = 0;
    while (i < len) {
        unsigned c = s[i];
        if (c < 0x80) {
            fz_addc(out, (unsigned char)c);
            i++;
            continue;
        }
        unsigned lo, hi;
        int need = fz_utf8_lead(c, &lo, &hi);
        int k = 1; /* bytes of the sequence seen to be right */
        if (need) {
            while (k <= need && i + (size_t)k < len && s[i + k] >= lo && s[i + k] <= hi) {
                k++;
                lo = 0x80, hi = 0xBF;
            }
        }
        if (need && k == need + 1) {
            fz_add(out, s + i, (size_t)k);
        } else {
            fz_add(out, "\xEF\xBF\xBD", 3);
            bad++;
        }
        i += (size_t)k;
    }
    return bad;
}

/* Length of the longest well-formed prefix. */
static size_t fz_utf8_prefix(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        unsigned lo, hi;
        int need = fz_utf8_lead(s[i], &lo, &hi);
        if (!need)
            return i;
        for (int k = 1; k <= need; k++) {
            if (i + (size_t)k >= len || s[i + k] < lo || s[i + k] > hi)
                return i;
            lo = 0x80, hi = 0xBF;
        }
        i += (size_t)need + 1;
    }
    return i;
}

static bool fz_utf8_valid(const unsigned char *s, size_t len) { return fz_utf8_prefix(s, len) == len; }

static void fz_put_utf8(struct fz_vec *out, unsigned long cp)
{
    if (cp < 0x80) {
        fz_addc(out, (unsigned char)cp);
    } else if (cp < 0x800) {
        fz_addc(out, (unsigned char)(0xC0 | (cp >> 6)));
        fz_addc(out, (unsigned char)(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        fz_addc(out, (unsigned char)(0xE0 | (cp >> 12)));
        fz_addc(out, (unsigned char)(0x80 | ((cp >> 6) & 0x3F)));
        fz_addc(out, (unsigned char)(0x80 | (cp & 0x3F)));
    } else {
        fz_addc(out, (unsigned char)(0xF0 | (cp >> 18)));
        fz_addc(out, (unsigned char)(0x80 | ((cp >> 12) & 0x3F)));
        fz_addc(out, (unsigned char)(0x80 | ((cp >> 6) & 0x3F)));
        fz_addc(out, (unsigned char)(0x80 | (cp & 0x3F)));
    }
}

/* ---- JSON (RFC 8259), strictly ---- */

struct fz_json {
    const unsigned char *p, *end;
    int depth;
    const char *why; /* the first problem found */
};

static bool fz_json_value(struct fz_json *j);

static void fz_json_ws(struct fz_json *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static bool fz_json_bad(struct fz_json *j, const char *why)
{
    if (!j->why)
        j->why = why;
    return false;
}

static int fz_hex(unsigned c)
{
    if (c >= '0' && c <= '9')
        return (int)(c - '0');
    if (c >= 'a' && c <= 'f')
        return (int)(c - 'a' + 10);
    if (c >= 'A' && c <= 'F')
        return (int)(c - 'A' + 10);
    return -1;
}

static bool fz_json_u4(struct fz_json *j, unsigned long *cp)
{
    if (j->end - j->p < 4)
        return fz_json_bad(j, "short \\u escape");
    *cp = 0;
    for (int i = 0; i < 4; i++) {
        int h = fz_hex(j->p[i]);
        if (h < 0)
            return fz_json_bad(j, "bad hex digit in \\u escape");
        *cp = *cp * 16 + (unsigned long)h;
    }
    j->p += 4;
    return true;
}

/* A string literal at j->p; its decoded bytes go to out (if not NULL). The
 * raw bytes must be well-formed UTF-8 and a \u escape must not be a lone
 * surrogate. */
static bool fz_json_string(struct fz_json *j, struct fz_vec *out)
{
    if (j->p >= j->end || *j->p != '"')
        return fz_json_bad(j, "expected a string");
    j->p++;
    while (j->p < j->end) {
        unsigned c = *j->p;
        if (c == '"') {
            j->p++;
            return true;
        }
        if (c < 0x20)
            return fz_json_bad(j, "raw control character in a string");
        if (c == '\\') {
            if (++j->p >= j->end)
                return fz_json_bad(j, "truncated escape");
            unsigned e = *j->p++;
            unsigned long cp;
            switch (e) {
            case '"': cp = '"'; break;
            case '\\': cp = '\\'; break;
            case '/': cp = '/'; break;
            case 'b': cp = '\b'; break;
            case 'f': cp = '\f'; break;
            case 'n': cp = '\n'; break;
            case 'r': cp = '\r'; break;
            case 't': cp = '\t'; break;
            case 'u':
                if (!fz_json_u4(j, &cp))
                    return false;
                if (cp >= 0xDC00 && cp <= 0xDFFF)
                    return fz_json_bad(j, "lone low surrogate escape");
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    unsigned long lo;
                    if (j->end - j->p < 2 || j->p[0] != '\\' || j->p[1] != 'u')
                        return fz_json_bad(j, "lone high surrogate escape");
                    j->p += 2;
                    if (!fz_json_u4(j, &lo))
                        return false;
                    if (lo < 0xDC00 || lo > 0xDFFF)
                        return fz_json_bad(j, "high surrogate not followed by a low one");
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                }
                break;
            default:
                return fz_json_bad(j, "unknown escape");
            }
            if (out)
                fz_put_utf8(out, cp);
            continue;
        }
        if (c < 0x80) {
            if (out)
                fz_addc(out, (unsigned char)c);
            j->p++;
            continue;
        }
        unsigned lo, hi;
        int need = fz_utf8_lead(c, &lo, &hi);
        if (!need || j->end - j->p <= need)
            return fz_json_bad(j, "ill-formed UTF-8 in a string");
        for (int k = 1; k <= need; k++) {
            if (j->p[k] < lo || j->p[k] > hi)
                return fz_json_bad(j, "ill-formed UTF-8 in a string");
            lo = 0x80, hi = 0xBF;
        }
        if (out)
            fz_add(out, j->p, (size_t)need + 1);
        j->p += need + 1;
    }
    return fz_json_bad(j, "unterminated string");
}

static bool fz_json_number(struct fz_json *j)
{
    const unsigned char *p = j->p, *e = j->end;
    if (p < e && *p == '-')
        p++;
    if (p >= e || *p < '0' || *p > '9')
        return fz_json_bad(j, "bad number");
    if (*p == '0')
        p++;
    else
        while (p < e && *p >= '0' && *p <= '9')
            p++;
    if (p < e && *p == '.') {
        p++;
        if (p >= e || *p < '0' || *p > '9')
            return fz_json_bad(j, "bad fraction");
        while (p < e && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < e && (*p == '+' || *p == '-'))
            p++;
        if (p >= e || *p < '0' || *p > '9')
            return fz_json_bad(j, "bad exponent");
        while (p < e && *p >= '0' && *p <= '9')
            p++;
    }
    j->p = p;
    return true;
}

static bool fz_json_literal(struct fz_json *j, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, word, n) != 0)
        return fz_json_bad(j, "unexpected character");
    j->p += n;
    return true;
}

static bool fz_json_value(struct fz_json *j)
{
    fz_json_ws(j);
    if (j->p >= j->end)
        return fz_json_bad(j, "expected a value");
    switch (*j->p) {
    case '"':
        return fz_json_string(j, NULL);
    case 't':
        return fz_json_literal(j, "true");
    case 'f':
        return fz_json_literal(j, "false");
    case 'n':
        return fz_json_literal(j, "null");
    case '[':
    case '{': {
        bool object = *j->p == '{';
        unsigned char close = object ? '}' : ']';
        if (++j->depth > 512)
            return fz_json_bad(j, "nested too deep for the checker");
        j->p++;
        fz_json_ws(j);
        if (j->p < j->end && *j->p == close) {
            j->p++;
            j->depth--;
            return true;
        }
        for (;;) {
            if (object) {
                fz_json_ws(j);
                if (!fz_json_string(j, NULL))
                    return false;
                fz_json_ws(j);
                if (j->p >= j->end || *j->p != ':')
                    return fz_json_bad(j, "expected ':'");
                j->p++;
            }
            if (!fz_json_value(j))
                return false;
            fz_json_ws(j);
            if (j->p < j->end && *j->p == ',') {
                j->p++;
                continue;
            }
            if (j->p < j->end && *j->p == close) {
                j->p++;
                j->depth--;
                return true;
            }
            return fz_json_bad(j, object ? "expected ',' or '}'" : "expected ',' or ']'");
        }
    }
    default:
        return fz_json_number(j);
    }
}

/* Whether s[0..len) is exactly one JSON text; *why says what is wrong. */
static bool fz_json_text(const unsigned char *s, size_t len, const char **why)
{
    struct fz_json j = {.p = s, .end = s + len};
    bool ok = fz_json_value(&j);
    fz_json_ws(&j);
    if (ok && j.p != j.end)
        ok = fz_json_bad(&j, "trailing bytes after the value");
    if (why)
        *why = j.why;
    return ok;
}

/* ---- CSV (RFC 4180) ---- */

/* Parses one record starting at *pos (fields appended to fields[] as
 * separate vectors; at most max). A record ends at CRLF, or at the end of
 * the text. Returns the number of fields, or -1 (with *why) if the text is
 * not RFC 4180. */
static int fz_csv_record(const unsigned char *s, size_t len, size_t *pos, struct fz_vec *fields, int max,
                         const char **why)
{
    size_t i = *pos;
    int n = 0;
    for (;;) {
        if (n == max) {
            *why = "too many fields";
            return -1;
        }
        struct fz_vec *f = &fields[n++];
        f->len = 0;
        if (i < len && s[i] == '"') {
            i++;
            for (;;) {
                size_t run = i;
                while (i < len && s[i] != '"')
                    i++;
                fz_add(f, s + run, i - run);
                if (i >= len) {
                    *why = "unterminated quoted field";
                    return -1;
                }
                if (i + 1 < len && s[i + 1] == '"') {
                    fz_addc(f, '"');
                    i += 2;
                    continue;
                }
                i++;
                break;
            }
        } else {
            size_t run = i;
            while (i < len && s[i] != ',' && s[i] != '\r' && s[i] != '\n') {
                if (s[i] == '"') {
                    *why = "a quote inside an unquoted field";
                    return -1;
                }
                i++;
            }
            fz_add(f, s + run, i - run);
        }
        if (i >= len) {
            *pos = i;
            return n;
        }
        if (s[i] == ',') {
            i++;
            continue;
        }
        if (s[i] == '\r' && i + 1 < len && s[i + 1] == '\n') {
            *pos = i + 2;
            return n;
        }
        *why = s[i] == '"' ? "text after a closing quote" : "a bare CR or LF outside quotes";
        return -1;
    }
}

#endif
