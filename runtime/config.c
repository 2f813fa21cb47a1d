/* Configuration: YAML (libyaml) → validated struct fleet_config.
 *
 * The file is read into memory and turned, through libyaml's event API, into
 * a small tree of nodes that keep their marks, so that every later check can
 * say file:line:column. The tree is then walked section by section.
 *
 * Two rules run through the whole file:
 * - No scalar value read from the file reaches a message: any value may be a
 *   secret. Keys (outside token entries), variable names and token_file paths
 *   are the only things quoted back.
 * - Every buffer that may have held a secret (the file, libyaml's buffers and
 *   events, tree scalars, expanded strings, token file contents) is zeroed
 *   before it is freed. */
#include "config.h"
#include "credential_helper.h"
#include "jwt.h"
#include "log.h"
#include "redact.h"
#include "strmap.h"
#include "urlpath.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#define MAX_DEPTH 32                   /* nesting; the schema needs 5 */
#define MAX_CONFIG_BYTES (1 << 20)     /* a config file is small; this is a typo guard */
#define MAX_TOKEN_FILE_BYTES (64 << 10)
#define MAX_NAME 64                    /* provider and plugin names */
#define MAX_LABEL 128
#define MAX_KEY_ECHO 64                /* longest key quoted back in a message */

/* ------------------------------------------------------------------ memory */

/* Like log.c: out of memory while handling secrets, refuse to go on. */
static void oom(void)
{
    fputs("gitfleet: error: out of memory\n", stderr);
    exit(70);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom();
    return p;
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p)
        oom();
    return p;
}

static char *xmemdup(const char *s, size_t n)
{
    char *p = xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static char *xstrdup(const char *s) { return xmemdup(s, strlen(s)); }

static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        oom();
    char *p = xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

static void zfree_n(void *p, size_t n)
{
    if (p) {
        explicit_bzero(p, n);
        free(p);
    }
}

/* Frees a string that may hold a secret. */
static void zfree(char *s)
{
    if (s)
        zfree_n(s, strlen(s));
}

/* A growing string whose old storage is zeroed on every move, because it is
 * used to expand ${VAR} in token values. */
struct sbuf {
    char *p;
    size_t len, cap;
};

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *grown = xmalloc(cap);
        if (b->len)
            memcpy(grown, b->p, b->len);
        zfree_n(b->p, b->cap);
        b->p = grown;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static char *sb_take(struct sbuf *b)
{
    char *s = b->p ? b->p : xstrdup("");
    b->p = NULL;
    b->len = b->cap = 0;
    return s;
}

/* ------------------------------------------------------------- small text */

static bool has_control(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    return false;
}

/* Messages are one line: control bytes (a path may hold a newline) become '?'. */
static void one_line(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            *s = '?';
}

static bool in_list(const char *const *list, const char *s)
{
    for (; *list; list++)
        if (strcmp(*list, s) == 0)
            return true;
    return false;
}

static void join_list(const char *const *list, char *out, size_t size)
{
    size_t used = 0;
    out[0] = '\0';
    for (const char *const *p = list; *p; p++) {
        int n = snprintf(out + used, size - used, "%s%s", p == list ? "" : ", ", *p);
        if (n < 0 || (size_t)n >= size - used)
            return;
        used += (size_t)n;
    }
}

static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), row[MAX_KEY_ECHO + 1];
    if (la > MAX_KEY_ECHO || lb > MAX_KEY_ECHO)
        return SIZE_MAX;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j], best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* The allowed key a misspelt one was probably meant to be, or NULL. */
static const char *closest(const char *const *allowed, const char *key)
{
    const char *best = NULL;
    size_t best_d = 3; /* two edits at most, and at most half the key */
    for (; *allowed; allowed++) {
        size_t d = edit_distance(key, *allowed);
        if (d < best_d && 2 * d <= strlen(key)) {
            best = *allowed;
            best_d = d;
        }
    }
    return best;
}

/* ----------------------------------------------------------------- paths */

static const char *home_dir(void)
{
    const char *home = getenv("HOME");
    if (home && *home)
        return home;
    struct passwd *pw = getpwuid(getuid());
    return pw && pw->pw_dir && *pw->pw_dir ? pw->pw_dir : NULL;
}

char *fleet_expand_home(const char *path)
{
    const char *home;
    if (path[0] == '~' && (path[1] == '\0' || path[1] == '/') && (home = home_dir()))
        return xasprintf("%s%s", home, path + 1);
    return xstrdup(path);
}

/* dir/rel, without "./" noise. */
static char *join_path(const char *dir, const char *rel)
{
    while (rel[0] == '.' && rel[1] == '/')
        for (rel += 2; *rel == '/'; rel++)
            ;
    if (strcmp(rel, ".") == 0 || *rel == '\0')
        return xstrdup(dir);
    size_t n = strlen(dir);
    return xasprintf("%s%s%s", dir, n && dir[n - 1] == '/' ? "" : "/", rel);
}

/* An XDG base directory: $VAR when absolute (the spec says to ignore a
 * relative one), else ~/fallback. NULL when no home directory is known. */
static char *xdg_dir(const char *var, const char *fallback)
{
    const char *v = getenv(var);
    if (v && v[0] == '/')
        return xstrdup(v);
    const char *home = home_dir();
    return home ? join_path(home, fallback) : NULL;
}

/* The absolute directory of the config file: relative paths in the file are
 * taken from there, so the file means the same from any working directory. */
static char *config_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash == path ? xstrdup("/")
                : slash     ? xmemdup(path, (size_t)(slash - path))
                            : xstrdup(".");
    if (dir[0] == '/')
        return dir;
    char *cwd = getcwd(NULL, 0);
    if (!cwd)
        return dir; /* fall back to the relative directory */
    char *abs = join_path(cwd, dir);
    free(cwd);
    free(dir);
    return abs;
}

char *fleet_config_find(const char *explicit_path)
{
    if (explicit_path)
        return xstrdup(explicit_path);
    const char *env = getenv("GITFLEET_CONFIG");
    if (env && *env)
        return xstrdup(env);
    struct stat st;
    if (stat("gitfleet.yaml", &st) == 0)
        return xstrdup("gitfleet.yaml");
    char *dir = xdg_dir("XDG_CONFIG_HOME", ".config");
    if (!dir)
        return NULL;
    char *path = join_path(dir, "gitfleet/config.yaml");
    free(dir);
    if (stat(path, &st) == 0)
        return path;
    free(path);
    return NULL;
}

/* --------------------------------------------------------------- errors */

struct warned_file {
    dev_t dev;
    ino_t ino;
};

struct loader {
    const char *file; /* as given: the prefix of every message */
    char *dir;        /* absolute directory of the file */
    char *err;
    size_t errlen;
    struct warned_file *warned; /* token files already warned about */
    size_t nwarned;
};

/* line == 0: an error about the whole file (it cannot be read). */
static int vfail_at(struct loader *ld, size_t line, size_t col, const char *fmt, va_list ap)
{
    if (!ld->err || ld->errlen == 0)
        return -1;
    int n = line ? snprintf(ld->err, ld->errlen, "%s:%zu:%zu: ", ld->file, line, col)
                 : snprintf(ld->err, ld->errlen, "%s: ", ld->file);
    if (n >= 0 && (size_t)n < ld->errlen)
        vsnprintf(ld->err + n, ld->errlen - (size_t)n, fmt, ap);
    one_line(ld->err);
    return -1;
}

static int fail_at(struct loader *ld, size_t line, size_t col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail_at(struct loader *ld, size_t line, size_t col, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail_at(ld, line, col, fmt, ap);
    va_end(ap);
    return -1;
}

/* libyaml marks are 0-based; messages are 1-based. */
static int fail_mark(struct loader *ld, yaml_mark_t m, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail_mark(struct loader *ld, yaml_mark_t m, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail_at(ld, m.line + 1, m.column + 1, fmt, ap);
    va_end(ap);
    return -1;
}

/* ------------------------------------------------------------ YAML tree */

enum node_kind { NODE_SCALAR, NODE_SEQ, NODE_MAP };

struct node {
    enum node_kind kind;
    yaml_mark_t mark;
    char *text; /* scalar: the value, NUL-terminated (may hold a secret) */
    size_t len;
    bool plain;          /* scalar: unquoted, so it may be a number, a bool or null */
    struct node **kids;  /* seq: items; map: key, value, key, value, … */
    size_t nkids;
};

/* An error at a node of the file. */
static int fail(struct loader *ld, const struct node *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(struct loader *ld, const struct node *n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail_at(ld, n->mark.line + 1, n->mark.column + 1, fmt, ap);
    va_end(ap);
    return -1;
}

static void free_node(struct node *n)
{
    if (!n)
        return;
    for (size_t i = 0; i < n->nkids; i++)
        free_node(n->kids[i]);
    free(n->kids);
    zfree_n(n->text, n->len);
    free(n);
}

static size_t npairs(const struct node *map) { return map->nkids / 2; }
static const struct node *key_at(const struct node *map, size_t i) { return map->kids[2 * i]; }
static const struct node *value_at(const struct node *map, size_t i) { return map->kids[2 * i + 1]; }

static const struct node *map_get(const struct node *map, const char *key)
{
    for (size_t i = 0; i < npairs(map); i++)
        if (key_at(map, i)->text && strcmp(key_at(map, i)->text, key) == 0)
            return value_at(map, i);
    return NULL;
}

/* Byte offset of a 0-based line and character column in buf. */
static size_t offset_of(const char *buf, size_t len, size_t line, size_t col)
{
    size_t i = 0;
    for (; i < len && line > 0; i++)
        if (buf[i] == '\n')
            line--;
    for (; i < len && col > 0; i++)
        if (((unsigned char)buf[i] & 0xc0) != 0x80 && --col == 0)
            for (i++; i < len && ((unsigned char)buf[i] & 0xc0) == 0x80; i++)
                ;
    return i < len ? i : len;
}

/* libyaml reports a tab used for indentation as an odd token; say so plainly. */
static bool tab_near(const char *buf, size_t len, yaml_mark_t m)
{
    size_t at = offset_of(buf, len, m.line, m.column);
    if (at < len && buf[at] == '\t')
        return true;
    for (size_t i = offset_of(buf, len, m.line, 0); i < len && (buf[i] == ' ' || buf[i] == '\t'); i++)
        if (buf[i] == '\t')
            return true;
    return false;
}

static int yaml_error(struct loader *ld, const yaml_parser_t *p, const char *buf, size_t len)
{
    if (p->error == YAML_MEMORY_ERROR)
        oom();
    const char *problem = p->problem ? p->problem : "unreadable YAML";
    if (p->error == YAML_READER_ERROR) {
        /* Only a byte offset is known: count lines and characters up to it. */
        size_t line = 1, col = 1;
        for (size_t i = 0; i < p->problem_offset && i < len; i++) {
            if (buf[i] == '\n')
                line++, col = 1;
            else if (((unsigned char)buf[i] & 0xc0) != 0x80)
                col++;
        }
        return fail_at(ld, line, col, "invalid text: %s", problem);
    }
    const char *hint = tab_near(buf, len, p->problem_mark)
                           ? "; tabs are not allowed for indentation, use spaces"
                           : "";
    if (p->context && (p->context_mark.line != p->problem_mark.line ||
                       p->context_mark.column != p->problem_mark.column))
        return fail_mark(ld, p->problem_mark, "malformed YAML: %s (%s started at %zu:%zu)%s",
                         problem, p->context, p->context_mark.line + 1,
                         p->context_mark.column + 1, hint);
    return fail_mark(ld, p->problem_mark, "malformed YAML: %s%s", problem, hint);
}

struct reader {
    yaml_parser_t parser;
    const char *buf;
    size_t len;
};

static int next_event(struct loader *ld, struct reader *r, yaml_event_t *ev)
{
    if (!yaml_parser_parse(&r->parser, ev))
        return yaml_error(ld, &r->parser, r->buf, r->len);
    return 0;
}

static void drop_event(yaml_event_t *ev)
{
    if (ev->type == YAML_SCALAR_EVENT && ev->data.scalar.value)
        explicit_bzero(ev->data.scalar.value, ev->data.scalar.length);
    yaml_event_delete(ev);
}

static int build_node(struct loader *ld, struct reader *r, const yaml_event_t *ev, int depth,
                      struct node **out);

/* Reads the items (or key/value pairs) of a collection up to its end event. */
static int build_children(struct loader *ld, struct reader *r, struct node *n, yaml_event_type_t end,
                          int depth)
{
    for (;;) {
        yaml_event_t ev;
        if (next_event(ld, r, &ev))
            return -1;
        if (ev.type == end) {
            drop_event(&ev);
            return 0;
        }
        struct node *kid = NULL;
        int rc = build_node(ld, r, &ev, depth + 1, &kid);
        drop_event(&ev);
        if (rc)
            return -1;
        n->kids = xrealloc(n->kids, (n->nkids + 1) * sizeof *n->kids);
        n->kids[n->nkids++] = kid;
    }
}

static int build_node(struct loader *ld, struct reader *r, const yaml_event_t *ev, int depth,
                      struct node **out)
{
    const yaml_char_t *anchor = NULL, *tag = NULL;
    enum node_kind kind;
    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        anchor = ev->data.scalar.anchor, tag = ev->data.scalar.tag, kind = NODE_SCALAR;
        break;
    case YAML_SEQUENCE_START_EVENT:
        anchor = ev->data.sequence_start.anchor, tag = ev->data.sequence_start.tag, kind = NODE_SEQ;
        break;
    case YAML_MAPPING_START_EVENT:
        anchor = ev->data.mapping_start.anchor, tag = ev->data.mapping_start.tag, kind = NODE_MAP;
        break;
    case YAML_ALIAS_EVENT:
        return fail_mark(ld, ev->start_mark, "YAML aliases (*name) are not supported; repeat the value");
    default:
        return fail_mark(ld, ev->start_mark, "malformed YAML: unexpected event");
    }
    /* Anchors would let one secret or subtree appear in several places, and
     * tags would change types behind the schema's back: keep the file literal. */
    if (anchor)
        return fail_mark(ld, ev->start_mark, "YAML anchors (&name) are not supported; repeat the value");
    if (tag)
        return fail_mark(ld, ev->start_mark, "YAML tags (!name) are not supported");
    if (depth > MAX_DEPTH)
        return fail_mark(ld, ev->start_mark, "nested more than %d levels deep", MAX_DEPTH);

    struct node *n = xmalloc(sizeof *n);
    *n = (struct node){.kind = kind, .mark = ev->start_mark};
    if (kind == NODE_SCALAR) {
        n->text = xmemdup((const char *)ev->data.scalar.value, ev->data.scalar.length);
        n->len = ev->data.scalar.length;
        n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
    } else if (build_children(ld, r, n, kind == NODE_SEQ ? YAML_SEQUENCE_END_EVENT : YAML_MAPPING_END_EVENT,
                              depth)) {
        free_node(n);
        return -1;
    }
    *out = n;
    return 0;
}

/* libyaml keeps copies of the input in its buffers: zero them too. */
static void scrub_parser(yaml_parser_t *p)
{
    if (p->raw_buffer.start)
        explicit_bzero(p->raw_buffer.start, (size_t)(p->raw_buffer.end - p->raw_buffer.start));
    if (p->buffer.start)
        explicit_bzero(p->buffer.start, (size_t)(p->buffer.end - p->buffer.start));
}

/* The root node of the only document, or NULL for an empty stream. */
static int parse_yaml(struct loader *ld, const char *buf, size_t len, struct node **root)
{
    struct reader r = {.buf = buf, .len = len};
    if (!yaml_parser_initialize(&r.parser))
        oom();
    yaml_parser_set_input_string(&r.parser, (const unsigned char *)buf, len);
    *root = NULL;
    bool seen_document = false, done = false;
    int rc = 0;
    while (!done && rc == 0) {
        yaml_event_t ev;
        if (next_event(ld, &r, &ev)) {
            rc = -1;
            break;
        }
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
            done = true;
            break;
        case YAML_DOCUMENT_START_EVENT:
            if (seen_document)
                rc = fail_mark(ld, ev.start_mark, "only one YAML document is allowed");
            seen_document = true;
            break;
        case YAML_STREAM_START_EVENT:
        case YAML_DOCUMENT_END_EVENT:
            break;
        default:
            rc = build_node(ld, &r, &ev, 0, root);
        }
        drop_event(&ev);
    }
    scrub_parser(&r.parser);
    yaml_parser_delete(&r.parser);
    if (rc) {
        free_node(*root);
        *root = NULL;
    }
    return rc;
}

/* ------------------------------------------------------- scalar types */

static bool is_null(const struct node *n)
{
    if (n->kind != NODE_SCALAR || !n->plain)
        return false;
    static const char *const nulls[] = {"", "~", "null", "Null", "NULL", NULL};
    return in_list(nulls, n->text);
}

static bool plain_bool(const struct node *n, bool *out)
{
    static const char *const yes[] = {"true", "True", "TRUE", "yes", "Yes", "YES", NULL};
    static const char *const no[] = {"false", "False", "FALSE", "no", "No", "NO", NULL};
    if (n->kind != NODE_SCALAR || !n->plain)
        return false;
    bool y = in_list(yes, n->text);
    if (!y && !in_list(no, n->text))
        return false;
    if (out)
        *out = y;
    return true;
}

enum number_kind { NUM_NOT, NUM_NONFINITE, NUM_INT, NUM_FLOAT };

/* YAML core-schema numbers (decimal), with '_' between digits as YAML 1.1
 * allows (10_000_000). .inf and .nan are recognised so they can be refused. */
static enum number_kind parse_number(const char *s, double *out)
{
    static const char *const special[] = {".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF",
                                           "-.inf", "-.Inf", "-.INF", ".nan", ".NaN", ".NAN", NULL};
    if (in_list(special, s))
        return NUM_NONFINITE;
    char digits[64];
    size_t n = 0;
    bool mantissa = false, frac = false, exp = false, exp_digit = false;
    const char *p = s;
    if (*p == '+' || *p == '-')
        digits[n++] = *p++;
    for (; *p; p++) {
        if (n >= sizeof digits - 2)
            return NUM_NOT;
        if (*p >= '0' && *p <= '9') {
            *(exp ? &exp_digit : &mantissa) = true;
            digits[n++] = *p;
        } else if (*p == '_' && mantissa && !exp) {
            continue;
        } else if (*p == '.' && !frac && !exp) {
            frac = true;
            digits[n++] = *p;
        } else if ((*p == 'e' || *p == 'E') && mantissa && !exp) {
            exp = true;
            digits[n++] = *p;
            if (p[1] == '+' || p[1] == '-')
                digits[n++] = *++p;
        } else {
            return NUM_NOT;
        }
    }
    if (!mantissa || (exp && !exp_digit))
        return NUM_NOT;
    digits[n] = '\0';
    *out = strtod(digits, NULL);
    if (!isfinite(*out))
        return NUM_NONFINITE;
    return frac || exp ? NUM_FLOAT : NUM_INT;
}

/* "32MiB", "1.5 GB", "4096": a size in bytes. -1: not a size. */
static int parse_size(const char *s, double *out)
{
    static const struct {
        const char *suffix;
        double factor;
    } units[] = {{"", 1},           {"B", 1},          {"K", 1024},         {"KiB", 1024},
                 {"KB", 1e3},       {"M", 1 << 20},    {"MiB", 1 << 20},    {"MB", 1e6},
                 {"G", 1 << 30},    {"GiB", 1 << 30},  {"GB", 1e9}};
    const char *p = s;
    bool digit = false, frac = false;
    for (; (*p >= '0' && *p <= '9') || (*p == '.' && !frac); p++)
        if (*p == '.')
            frac = true;
        else
            digit = true;
    if (!digit)
        return -1;
    char number[32];
    if ((size_t)(p - s) >= sizeof number)
        return -1;
    memcpy(number, s, (size_t)(p - s));
    number[p - s] = '\0';
    while (*p == ' ')
        p++;
    for (size_t i = 0; i < sizeof units / sizeof *units; i++) {
        if (strcasecmp(p, units[i].suffix) != 0)
            continue;
        if (frac && units[i].factor == 1)
            return -1; /* a fraction of a byte */
        *out = strtod(number, NULL) * units[i].factor; /* truncated once stored */
        return 0;
    }
    return -1;
}

static const char *describe(const struct node *n)
{
    double d;
    if (n->kind == NODE_MAP)
        return "a mapping";
    if (n->kind == NODE_SEQ)
        return "a list";
    if (!n->plain)
        return "a quoted string";
    if (is_null(n))
        return "nothing";
    if (plain_bool(n, NULL))
        return "a boolean";
    if (parse_number(n->text, &d) != NUM_NOT)
        return "a number";
    return "a string";
}

/* ---------------------------------------------------- ${VAR} expansion */

static bool valid_var_name(const char *s, size_t n)
{
    if (n == 0 || (s[0] >= '0' && s[0] <= '9'))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(s[i] == '_' || (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9')))
            return false;
    return true;
}

/* Expands ${VAR}, ${VAR:-default} and $$ in a scalar. The default is taken
 * literally; it is used when VAR is unset or empty, like the shell's ":-". */
static int expand_vars(struct loader *ld, const struct node *n, const char *what, char **out)
{
    struct sbuf b = {0};
    const char *s = n->text;
    int rc = 0;
    while (*s && rc == 0) {
        const char *dollar = strchr(s, '$');
        if (!dollar) {
            sb_add(&b, s, strlen(s));
            break;
        }
        sb_add(&b, s, (size_t)(dollar - s));
        if (dollar[1] == '$') {
            sb_add(&b, "$", 1);
            s = dollar + 2;
            continue;
        }
        if (dollar[1] != '{') {
            rc = fail(ld, n, "%s: a '$' must start ${NAME} or ${NAME:-default}; write $$ for a literal $",
                      what);
            break;
        }
        const char *name = dollar + 2, *close = strchr(name, '}');
        if (!close) {
            rc = fail(ld, n, "%s: '${' without a closing '}'", what);
            break;
        }
        const char *sep = strstr(name, ":-");
        size_t name_len = (size_t)((sep && sep < close ? sep : close) - name);
        const char *def = sep && sep < close ? sep + 2 : NULL;
        if (!valid_var_name(name, name_len)) {
            rc = fail(ld, n, "%s: invalid variable name in ${...} (use letters, digits and '_'; "
                             "write $$ for a literal $)", what);
            break;
        }
        if (def && memmem(def, (size_t)(close - def), "${", 2)) {
            rc = fail(ld, n, "%s: a ${...} default cannot contain another ${...}", what);
            break;
        }
        char var[256];
        if (name_len >= sizeof var) {
            rc = fail(ld, n, "%s: variable name too long", what);
            break;
        }
        memcpy(var, name, name_len);
        var[name_len] = '\0';
        const char *value = getenv(var);
        if (def && (!value || !*value))
            sb_add(&b, def, (size_t)(close - def));
        else if (value)
            sb_add(&b, value, strlen(value));
        else
            rc = fail(ld, n, "%s: environment variable %s is not set (write ${%s:-} to make it optional)",
                      what, var, var);
        s = close + 1;
    }
    if (rc) {
        zfree_n(b.p, b.cap);
        return -1;
    }
    *out = sb_take(&b);
    return 0;
}

/* ----------------------------------------------------- typed getters */

/* A string value, ${VAR}-expanded. The caller zfree()s it. */
static int get_string(struct loader *ld, const struct node *n, const char *what, char **out)
{
    if (n->kind != NODE_SCALAR || is_null(n))
        return fail(ld, n, "%s: expected a string, found %s", what, describe(n));
    if (memchr(n->text, '\0', n->len))
        return fail(ld, n, "%s: a string must not contain a NUL character", what);
    return expand_vars(ld, n, what, out);
}

/* A path: ${VAR}, then ~, then relative to the config file's directory.
 * *out is NULL for an empty optional path. */
static int get_path(struct loader *ld, const struct node *n, const char *what, bool optional, char **out)
{
    char *s;
    *out = NULL;
    if (get_string(ld, n, what, &s))
        return -1;
    int rc = 0;
    if (!*s) {
        if (!optional)
            rc = fail(ld, n, "%s: the path is empty", what);
    } else if (s[0] == '~' && s[1] && s[1] != '/') {
        rc = fail(ld, n, "%s: ~user paths are not supported; write the full path", what);
    } else if (s[0] == '~' && !home_dir()) {
        rc = fail(ld, n, "%s: cannot expand ~: HOME is not set", what);
    } else {
        *out = s[0] == '~' ? fleet_expand_home(s) : s[0] == '/' ? xstrdup(s) : join_path(ld->dir, s);
    }
    free(s);
    return rc;
}

static int get_bool(struct loader *ld, const struct node *n, const char *what, bool *out)
{
    if (!plain_bool(n, out))
        return fail(ld, n, "%s: expected true or false (unquoted), found %s", what, describe(n));
    return 0;
}

static int get_number(struct loader *ld, const struct node *n, const char *what, bool integer, double *out)
{
    enum number_kind k = n->kind == NODE_SCALAR && n->plain ? parse_number(n->text, out) : NUM_NOT;
    if (k == NUM_NOT)
        return fail(ld, n, "%s: expected %s, found %s", what, integer ? "an integer" : "a number",
                    describe(n));
    if (k == NUM_NONFINITE)
        return fail(ld, n, "%s: expected a finite number", what);
    if (integer && k != NUM_INT)
        return fail(ld, n, "%s: expected an integer (a whole number)", what);
    return 0;
}

static int get_size(struct loader *ld, const struct node *n, const char *what, double *out)
{
    enum number_kind k = n->kind == NODE_SCALAR && n->plain ? parse_number(n->text, out) : NUM_NOT;
    if (k == NUM_INT)
        return 0;
    if (k == NUM_NOT && n->kind == NODE_SCALAR && !is_null(n)) {
        char *s;
        if (get_string(ld, n, what, &s))
            return -1;
        int rc = parse_size(s, out);
        zfree(s);
        if (rc == 0)
            return 0;
    }
    return fail(ld, n, "%s: expected a size: a whole number of bytes, or a number with K, KB, KiB, "
                       "M, MB, MiB, G, GB or GiB (e.g. 32MiB)", what);
}

/* ------------------------------------------------------------ mappings */

static void key_for_message(const struct node *key, char *out, size_t size)
{
    size_t n = key->len < MAX_KEY_ECHO ? key->len : MAX_KEY_ECHO;
    snprintf(out, size, "%.*s%s", (int)n, key->text, key->len > n ? "..." : "");
    one_line(out);
}

/* Every key is a string, none is repeated, and (when allowed is not NULL)
 * each is one of allowed. where: "in http", "at the top level", …
 * echo: whether an unknown key may be quoted (not inside token entries,
 * where a misplaced token would be a "key"). */
static int check_keys(struct loader *ld, const struct node *map, const char *where,
                      const char *const *allowed, bool echo)
{
    for (size_t i = 0; i < npairs(map); i++) {
        const struct node *key = key_at(map, i);
        char shown[MAX_KEY_ECHO + 4];
        if (key->kind != NODE_SCALAR)
            return fail(ld, key, "a key must be a string, not %s (%s)", describe(key), where);
        if (memchr(key->text, '\0', key->len))
            return fail(ld, key, "a key must not contain a NUL character (%s)", where);
        key_for_message(key, shown, sizeof shown);
        if (allowed && !in_list(allowed, key->text)) {
            char list[256];
            const char *guess = closest(allowed, key->text);
            join_list(allowed, list, sizeof list);
            if (echo)
                return fail(ld, key, "unknown key '%s' %s (allowed: %s)%s%s%s", shown, where, list,
                            guess ? "; did you mean '" : "", guess ? guess : "", guess ? "'?" : "");
            return fail(ld, key, "unknown key %s (allowed: %s)%s%s%s", where, list,
                        guess ? "; did you mean '" : "", guess ? guess : "", guess ? "'?" : "");
        }
        for (size_t j = 0; j < i; j++) {
            const struct node *prev = key_at(map, j);
            if (strcmp(prev->text, key->text) == 0)
                return fail(ld, key, "duplicate key '%s' %s (first at %zu:%zu)", shown, where,
                            prev->mark.line + 1, prev->mark.column + 1);
        }
    }
    return 0;
}

/* 1: a mapping with valid keys; 0: empty (null), nothing to do; -1: error. */
static int open_section(struct loader *ld, const struct node *n, const char *section,
                        const char *const *allowed)
{
    if (is_null(n))
        return 0;
    if (n->kind != NODE_MAP)
        return fail(ld, n, "%s: expected a mapping, found %s", section, describe(n));
    char where[128];
    snprintf(where, sizeof where, "in %s", section);
    return check_keys(ld, n, where, allowed, true) ? -1 : 1;
}

/* -------------------------------------- http, retry, cache, lua: tables */

enum field_kind { F_INT, F_COUNT, F_SECONDS, F_SIZE, F_BOOL, F_PATH, F_REQUIRED_PATH };

struct field {
    const char *key;
    enum field_kind kind;
    size_t offset;   /* in struct fleet_config */
    double min, max; /* accepted range, inclusive */
};

#define AT(member) offsetof(struct fleet_config, member)
#define KiB 1024.0
#define MiB (1024.0 * KiB)
#define GiB (1024.0 * MiB)
#define TiB (1024.0 * GiB)
#define DAY 86400.0

static const struct field http_fields[] = {
    {"max_connections", F_INT, AT(http.max_connections), 1, 100000},
    {"per_token_concurrency", F_INT, AT(http.per_token_concurrency), 1, 10000},
    {"timeout", F_SECONDS, AT(http.timeout), 0.001, DAY},
    {"connect_timeout", F_SECONDS, AT(http.connect_timeout), 0.001, DAY},
    {"max_response_size", F_SIZE, AT(http.max_response_size), KiB, 64 * GiB},
    {"ca_file", F_PATH, AT(http.ca_file), 0, 0},
    {"ca_path", F_PATH, AT(http.ca_path), 0, 0},
    {"insecure", F_BOOL, AT(http.insecure), 0, 0},
    {NULL, F_INT, 0, 0, 0},
};

static const struct field retry_fields[] = {
    {"max_attempts", F_INT, AT(retry.max_attempts), 1, 100},
    {"base_delay", F_SECONDS, AT(retry.base_delay), 0, DAY},
    {"max_delay", F_SECONDS, AT(retry.max_delay), 0, DAY},
    {"secondary_wait", F_SECONDS, AT(retry.secondary_wait), 0, DAY},
    {"reset_margin", F_SECONDS, AT(retry.reset_margin), 0, 3600},
    {"max_wait", F_SECONDS, AT(retry.max_wait), 0, 7 * DAY},
    {NULL, F_INT, 0, 0, 0},
};

static const struct field cache_fields[] = {
    {"enabled", F_BOOL, AT(cache.enabled), 0, 0},
    {"path", F_REQUIRED_PATH, AT(cache.path), 0, 0},
    {"max_size", F_SIZE, AT(cache.max_size), MiB, 64 * TiB},
    {NULL, F_INT, 0, 0, 0},
};

static const struct field lua_fields[] = {
    {"memory_limit", F_SIZE, AT(lua.memory_limit), 16 * MiB, 1 * TiB},
    {"plugin_instructions", F_COUNT, AT(lua.plugin_instructions), 1000, 1e12},
    {"script_timeout", F_SECONDS, AT(lua.script_timeout), 0, 366 * DAY},
    {NULL, F_INT, 0, 0, 0},
};

static void format_bound(enum field_kind kind, double v, char *out, size_t size)
{
    static const struct {
        double unit;
        const char *name;
    } units[] = {{TiB, "TiB"}, {GiB, "GiB"}, {MiB, "MiB"}, {KiB, "KiB"}};
    if (kind == F_SIZE)
        for (size_t i = 0; i < sizeof units / sizeof *units; i++)
            if (v >= units[i].unit && v / units[i].unit == (double)(long long)(v / units[i].unit)) {
                snprintf(out, size, "%.0f %s", v / units[i].unit, units[i].name);
                return;
            }
    snprintf(out, size, kind == F_SECONDS ? "%g" : "%.0f", v);
}

static int check_range(struct loader *ld, const struct node *n, const char *what, double v,
                       const struct field *f)
{
    if (v >= f->min && v <= f->max)
        return 0;
    char lo[32], hi[32];
    const char *unit = f->kind == F_SECONDS ? " seconds" : "";
    format_bound(f->kind, f->min, lo, sizeof lo);
    format_bound(f->kind, f->max, hi, sizeof hi);
    const char *why = v < 0 && f->min >= 0 ? "must not be negative"
                      : v <= 0 && f->min > 0 ? "must be greater than zero"
                      : v < f->min          ? "is too small"
                                             : "is too large";
    return fail(ld, n, "%s %s (allowed: %s to %s%s)", what, why, lo, hi, unit);
}

static int load_field(struct loader *ld, struct fleet_config *cfg, const char *section,
                      const struct field *f, const struct node *n)
{
    char what[96];
    snprintf(what, sizeof what, "%s.%s", section, f->key);
    char *slot = (char *)cfg + f->offset;
    double v;
    switch (f->kind) {
    case F_INT:
    case F_COUNT:
    case F_SECONDS:
        if (get_number(ld, n, what, f->kind != F_SECONDS, &v) || check_range(ld, n, what, v, f))
            return -1;
        if (f->kind == F_INT)
            *(int *)(void *)slot = (int)v;
        else if (f->kind == F_COUNT)
            *(long long *)(void *)slot = (long long)v;
        else
            *(double *)(void *)slot = v;
        return 0;
    case F_SIZE:
        if (get_size(ld, n, what, &v) || check_range(ld, n, what, v, f))
            return -1;
        *(long long *)(void *)slot = (long long)v;
        return 0;
    case F_BOOL:
        return get_bool(ld, n, what, (bool *)(void *)slot);
    case F_PATH:
    case F_REQUIRED_PATH: {
        char *path;
        if (get_path(ld, n, what, f->kind == F_PATH, &path))
            return -1;
        char **dst = (char **)(void *)slot;
        free(*dst);
        *dst = path;
        return 0;
    }
    }
    return 0;
}

static int load_fields(struct loader *ld, struct fleet_config *cfg, const struct node *n,
                       const char *section, const struct field *fields)
{
    const char *keys[16];
    size_t nkeys = 0;
    for (const struct field *f = fields; f->key; f++)
        keys[nkeys++] = f->key;
    keys[nkeys] = NULL;
    int open = open_section(ld, n, section, keys);
    if (open <= 0)
        return open;
    for (size_t i = 0; i < npairs(n); i++)
        for (const struct field *f = fields; f->key; f++)
            if (strcmp(f->key, key_at(n, i)->text) == 0 && load_field(ld, cfg, section, f, value_at(n, i)))
                return -1;
    return 0;
}

static int load_http(struct loader *ld, struct fleet_config *cfg, const struct node *n)
{
    if (load_fields(ld, cfg, n, "http", http_fields))
        return -1;
    if (cfg->http.insecure)
        fleet_log(FLEET_LOG_WARN, "http.insecure is on: TLS certificates are not verified (tests only)");
    return 0;
}

static int load_retry(struct loader *ld, struct fleet_config *cfg, const struct node *n)
{
    if (load_fields(ld, cfg, n, "retry", retry_fields))
        return -1;
    if (cfg->retry.max_delay < cfg->retry.base_delay) {
        const struct node *at = map_get(n, "max_delay");
        return fail(ld, at ? at : map_get(n, "base_delay"),
                    "retry.max_delay must not be less than retry.base_delay");
    }
    return 0;
}

static int load_cache(struct loader *ld, struct fleet_config *cfg, const struct node *n)
{
    return load_fields(ld, cfg, n, "cache", cache_fields);
}

static int load_lua(struct loader *ld, struct fleet_config *cfg, const struct node *n)
{
    return load_fields(ld, cfg, n, "lua", lua_fields);
}

/* ------------------------------------------------------ plugins, log */

static void free_plugin_paths(struct fleet_config *cfg)
{
    for (size_t i = 0; i < cfg->nplugin_paths; i++)
        free(cfg->plugin_paths[i]);
    free(cfg->plugin_paths);
    cfg->plugin_paths = NULL;
    cfg->nplugin_paths = 0;
}

static int load_plugins(struct loader *ld, struct fleet_config *cfg, const struct node *n)
{
    static const char *const keys[] = {"paths", NULL};
    int open = open_section(ld, n, "plugins", keys);
    if (open <= 0)
        return open;
    const struct node *paths = map_get(n, "paths");
    if (!paths)
        return 0;
    free_plugin_paths(cfg);
    if (is_null(paths))
        return 0;
    if (paths->kind != NODE_SEQ)
        return fail(ld, paths, "plugins.paths: expected a list of directories, found %s", describe(paths));
    for (size_t i = 0; i < paths->nkids; i++) {
        char *path;
        if (get_path(ld, paths->kids[i], "plugins.paths", true, &path))
            return -1;
        if (!path)
            continue; /* "${EXTRA_PLUGINS:-}" left unset */
        cfg->plugin_paths = xrealloc(cfg->plugin_paths, (cfg->nplugin_paths + 1) * sizeof(char *));
        cfg->plugin_paths[cfg->nplugin_paths++] = path;
    }
    return 0;
}

static int load_log(struct loader *ld, struct fleet_config *cfg, const struct node *n)
{
    static const char *const keys[] = {"level", NULL};
    static const char *const levels[] = {"error", "warn", "info", "debug"}; /* enum order */
    int open = open_section(ld, n, "log", keys);
    if (open <= 0)
        return open;
    const struct node *level = map_get(n, "level");
    char *s;
    if (!level)
        return 0;
    if (get_string(ld, level, "log.level", &s))
        return -1;
    for (int i = 0; i < 4; i++)
        if (strcasecmp(s, levels[i]) == 0) {
            cfg->log_level = i;
            free(s);
            return 0;
        }
    free(s);
    return fail(ld, level, "log.level: expected one of error, warn, info, debug");
}

/* --------------------------------------------------------- providers */

/* Why a provider or plugin name is invalid, or NULL. Names become file names
 * (providers/NAME.lua) and Lua keys, hence the small alphabet. */
static const char *name_problem(const char *s, size_t len)
{
    if (len == 0)
        return "it is empty";
    if (len > MAX_NAME)
        return "it is longer than 64 characters";
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')
            continue;
        if (c >= 'A' && c <= 'Z')
            return "uppercase letters are not allowed (use a-z, 0-9, '_' and '-')";
        if (c == ' ')
            return "spaces are not allowed (use a-z, 0-9, '_' and '-')";
        return "only a-z, 0-9, '_' and '-' are allowed";
    }
    return NULL;
}

static bool valid_label(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len > MAX_LABEL)
        return false;
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
            return false;
    return true;
}

static char *where_of(struct loader *ld, const struct node *n)
{
    return xasprintf("%s:%zu:%zu", ld->file, n->mark.line + 1, n->mark.column + 1);
}

static void clear_token(struct fleet_token_conf *t)
{
    free(t->label);
    zfree(t->secret);
    zfree(t->username);
    free(t->account);
    free(t->where);
    memset(t, 0, sizeof *t);
}

static void clear_app(struct fleet_app_conf *a)
{
    free(a->label);
    free(a->app_id);
    zfree(a->private_key);
    for (size_t i = 0; i < a->ninstallations; i++)
        free(a->installations[i]);
    free(a->installations);
    free(a->where);
    memset(a, 0, sizeof *a);
}

static void clear_provider(struct fleet_provider_conf *p)
{
    for (size_t i = 0; i < p->ntokens; i++)
        clear_token(&p->tokens[i]);
    free(p->tokens);
    for (size_t i = 0; i < p->napps; i++)
        clear_app(&p->apps[i]);
    free(p->apps);
    free(p->name);
    free(p->plugin);
    free(p->base_url);
    free(p->where);
    memset(p, 0, sizeof *p);
}

static void warn_readable(struct loader *ld, const char *path, const struct stat *st)
{
    for (size_t i = 0; i < ld->nwarned; i++)
        if (ld->warned[i].dev == st->st_dev && ld->warned[i].ino == st->st_ino)
            return; /* one warning per file, like ssh */
    ld->warned = xrealloc(ld->warned, (ld->nwarned + 1) * sizeof *ld->warned);
    ld->warned[ld->nwarned++] = (struct warned_file){st->st_dev, st->st_ino};
    char *shown = xstrdup(path);
    one_line(shown);
    fleet_log(FLEET_LOG_WARN, "token file %s is readable by others; run chmod 600 %s", shown, shown);
    free(shown);
}

/* The token in a file: one trailing newline (or CRLF) is dropped. */
static int read_token_file(struct loader *ld, const struct node *at, const char *path, char **out)
{
    /* O_NONBLOCK: opening a FIFO with no writer must not wait forever; a
     * FIFO, socket or device is refused below, before any read. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        return fail(ld, at, "cannot read token file %s: %s", path, strerror(e));
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return fail(ld, at, "token file %s is a directory", path);
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return fail(ld, at, "token file %s is not a regular file (a FIFO, socket or device never ends or may block)",
                    path);
    }
    if (S_ISREG(st.st_mode) && (st.st_mode & 077))
        warn_readable(ld, path, &st);
    size_t cap = MAX_TOKEN_FILE_BYTES + 2, len = 0;
    char *buf = xmalloc(cap);
    while (len < cap - 1) {
        ssize_t got = read(fd, buf + len, cap - 1 - len);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            int e = errno;
            close(fd);
            zfree_n(buf, cap);
            return fail(ld, at, "cannot read token file %s: %s", path, strerror(e));
        }
        if (got == 0)
            break;
        len += (size_t)got;
    }
    close(fd);
    const char *problem = NULL;
    if (len > MAX_TOKEN_FILE_BYTES)
        problem = "is larger than 64 KiB";
    if (len > 0 && buf[len - 1] == '\n')
        len -= len > 1 && buf[len - 2] == '\r' ? 2 : 1;
    buf[len] = '\0';
    if (!problem && len == 0)
        problem = "is empty";
    if (!problem && (has_control(buf) || strlen(buf) != len))
        problem = "holds more than one line or a control character";
    if (!problem)
        *out = xmemdup(buf, len);
    zfree_n(buf, cap);
    return problem ? fail(ld, at, "token file %s %s", path, problem) : 0;
}

/* The label of the n-th (1-based) entry of a provider's token list; *at is
 * where a duplicate is reported. */
static int token_label(struct loader *ld, const char *provider, const struct node *item, size_t n,
                       char **label, const struct node **at)
{
    const struct node *given = item->kind == NODE_MAP ? map_get(item, "label") : NULL;
    *at = given ? given : item;
    if (!given) {
        *label = xasprintf("%s#%zu", provider, n);
        return 0;
    }
    if (get_string(ld, given, "label", label))
        return -1;
    if (valid_label(*label))
        return 0;
    free(*label);
    *label = NULL;
    return fail(ld, given, "label: use 1 to %d printable ASCII characters without spaces", MAX_LABEL);
}

/* The well-known host of a built-in provider's default base URL, for
 * credential: git when the config gives no base_url. */
static const char *default_git_host(const char *plugin)
{
    static const char *const known[][2] = {
        {"github", "github.com"}, {"gitlab", "gitlab.com"}, {"bitbucket", "bitbucket.org"}};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(plugin, known[i][0]) == 0)
            return known[i][1];
    return NULL;
}

/* The secret from a credential helper: token_command: [argv...] or
 * credential: git. The helper runs now, once; an error names the token's
 * label and what happened, never what the helper printed. */
static int helper_secret(struct loader *ld, const struct fleet_provider_conf *pv, const struct node *item,
                         const char *label, const struct node *cmd, const struct node *cred, char **secret)
{
    double timeout = FLEET_HELPER_TIMEOUT;
    const struct node *t = map_get(item, "timeout");
    if (t && get_number(ld, t, "timeout", false, &timeout))
        return -1;
    if (timeout <= 0 || timeout > 3600)
        return fail(ld, t, "timeout: expected seconds, more than 0 and at most 3600");
    char problem[200];
    if (cred) {
        char *kind;
        if (get_string(ld, cred, "credential", &kind))
            return -1;
        bool git = strcmp(kind, "git") == 0;
        free(kind);
        if (!git)
            return fail(ld, cred, "credential: the only helper is 'git' (git credential fill)");
        char protocol[16], host[300];
        const char *known = pv->base_url ? NULL : default_git_host(pv->plugin);
        if (known)
            snprintf(protocol, sizeof protocol, "https"), snprintf(host, sizeof host, "%s", known);
        else if (!pv->base_url || fleet_helper_git_target(pv->base_url, protocol, sizeof protocol, host, sizeof host))
            return fail(ld, cred, "credential: git needs providers.%s.base_url to know the host", pv->name);
        if (fleet_helper_git(protocol, host, timeout, secret, problem, sizeof problem))
            return fail(ld, cred, "token %s: git credential fill for %s://%s %s", label, protocol, host, problem);
        return 0;
    }
    if (cmd->kind != NODE_SEQ || cmd->nkids == 0 || cmd->nkids > 64)
        return fail(ld, cmd, "token_command: expected a list of 1 to 64 arguments (no shell), found %s",
                    describe(cmd));
    char **argv = xmalloc((cmd->nkids + 1) * sizeof *argv);
    size_t n = 0;
    int rc = 0;
    for (; n < cmd->nkids && rc == 0; n++)
        rc = get_string(ld, cmd->kids[n], "token_command", &argv[n]);
    if (rc == 0 && !*argv[0])
        rc = fail(ld, cmd, "token_command: the program name is empty");
    argv[n] = NULL;
    if (rc == 0 && fleet_helper_token(argv, timeout, secret, problem, sizeof problem))
        rc = fail(ld, cmd, "token %s: token_command %s", label, problem);
    for (size_t i = 0; i < n; i++)
        zfree(argv[i]);
    free(argv);
    return rc;
}

/* The secret of a token entry, from token:, token_file:, token_command: or
 * credential:; *at: the node it came from. */
static int token_secret(struct loader *ld, const struct fleet_provider_conf *pv, const struct node *item,
                        const char *label, char **secret, const struct node **at)
{
    if (item->kind == NODE_SCALAR) {
        *at = item;
        return get_string(ld, item, "token", secret);
    }
    static const char *const sources[] = {"token", "token_file", "token_command", "credential"};
    const struct node *src[4], *first = NULL;
    for (int i = 0; i < 4; i++) {
        src[i] = map_get(item, sources[i]);
        if (!src[i])
            continue;
        if (first) {
            const struct node *second = src[i]->mark.index > first->mark.index ? src[i] : first;
            return fail(ld, second, "use one of token, token_file, token_command or credential in one entry");
        }
        first = src[i];
    }
    if (!first)
        return fail(ld, item, "a token entry needs token, token_file, token_command or credential");
    if (map_get(item, "timeout") && !src[2] && !src[3])
        return fail(ld, map_get(item, "timeout"), "timeout: only for token_command or credential");
    const struct node *tok = src[0], *file = src[1];
    *at = first;
    if (src[2] || src[3])
        return helper_secret(ld, pv, item, label, src[2], src[3], secret);
    if (tok)
        return get_string(ld, tok, "token", secret);
    char *path;
    if (get_path(ld, file, "token_file", false, &path))
        return -1;
    int rc = read_token_file(ld, file, path, secret);
    free(path);
    return rc;
}

/* Adds one entry of a tokens: list to pv; label is taken over. An entry
 * whose token expands to "" is dropped without a word. */
static int load_token(struct loader *ld, struct fleet_provider_conf *pv, const struct node *item, char *label)
{
    struct fleet_token_conf t = {.label = label};
    const struct node *user = item->kind == NODE_MAP ? map_get(item, "username") : NULL;
    const struct node *account = item->kind == NODE_MAP ? map_get(item, "account") : NULL;
    const struct node *at = item;
    int rc = -1;
    if ((user && get_string(ld, user, "username", &t.username)) ||
        (account && get_string(ld, account, "account", &t.account)) ||
        token_secret(ld, pv, item, label, &t.secret, &at))
        goto out;
    if (!*t.secret) {
        rc = 0; /* an optional token left unset */
        goto out;
    }
    if (has_control(t.secret)) {
        fail(ld, at, "token: contains a line break or a control character");
        goto out;
    }
    if (t.username && (!*t.username || strchr(t.username, ':') || has_control(t.username))) {
        fail(ld, user, "username: must be non-empty, without ':' or control characters");
        goto out;
    }
    if (t.account && (!*t.account || has_control(t.account))) {
        fail(ld, account, "account: must be non-empty, without control characters");
        goto out;
    }
    t.where = where_of(ld, item);
    pv->tokens = xrealloc(pv->tokens, (pv->ntokens + 1) * sizeof *pv->tokens);
    pv->tokens[pv->ntokens++] = t;
    return 0;
out:
    clear_token(&t);
    return rc;
}

static int load_tokens(struct loader *ld, struct fleet_provider_conf *pv, const struct node *list)
{
    static const char *const keys[] = {"label",   "token",         "token_file", "token_command",
                                       "credential", "timeout", "username",   "account", NULL};
    if (is_null(list))
        return 0;
    if (list->kind != NODE_SEQ)
        return fail(ld, list, "providers.%s.tokens: expected a list, found %s", pv->name, describe(list));
    char where[MAX_NAME + 64];
    snprintf(where, sizeof where, "in a token entry of providers.%s", pv->name);
    /* Labels of every entry, kept or skipped, so that whether a variable is
     * set never changes whether the file is valid. */
    const struct node **label_at = xmalloc(list->nkids * sizeof *label_at);
    size_t nlabels = 0;
    /* label -> 1 + its index: a list of 10,000 tokens is checked for
     * duplicate labels in one pass, not 50 million comparisons */
    struct fleet_strmap seen = {0};
    int rc = 0;
    for (size_t i = 0; i < list->nkids && rc == 0; i++) {
        const struct node *item = list->kids[i];
        char *label;
        if (item->kind == NODE_SEQ || is_null(item)) {
            rc = fail(ld, item, "providers.%s.tokens: each entry is a token string or a mapping "
                                "(label, token, token_file, token_command, credential, username, "
                                "account), found %s",
                      pv->name, describe(item));
            break;
        }
        if ((item->kind == NODE_MAP && check_keys(ld, item, where, keys, false)) ||
            token_label(ld, pv->name, item, i + 1, &label, &label_at[nlabels])) {
            rc = -1;
            break;
        }
        size_t first = (size_t)(uintptr_t)fleet_strmap_get(&seen, label, strlen(label));
        if (first)
            rc = fail(ld, label_at[nlabels],
                      "duplicate token label in providers.%s (also used at %zu:%zu)", pv->name,
                      label_at[first - 1]->mark.line + 1, label_at[first - 1]->mark.column + 1);
        if (rc) {
            free(label);
            break;
        }
        fleet_strmap_put(&seen, label, strlen(label), (void *)(uintptr_t)(++nlabels));
        rc = load_token(ld, pv, item, label);
    }
    free(label_at);
    fleet_strmap_free(&seen);
    return rc;
}

/* The private key of an app entry, from private_key: or private_key_file:,
 * checked to be an RSA key OpenSSL can sign with. */
static int app_private_key(struct loader *ld, const struct node *item, const char *label, char **pem)
{
    const struct node *inline_key = map_get(item, "private_key"), *file = map_get(item, "private_key_file");
    if (!inline_key == !file)
        return fail(ld, item, "app %s: give one of private_key or private_key_file", label);
    char problem[300];
    if (inline_key) {
        if (get_string(ld, inline_key, "private_key", pem))
            return -1;
    } else {
        char *path;
        if (get_path(ld, file, "private_key_file", false, &path))
            return -1;
        struct stat st;
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 077))
            warn_readable(ld, path, &st);
        int rc = fleet_jwt_read_key_file(path, pem, problem, sizeof problem);
        free(path);
        if (rc)
            return fail(ld, file, "app %s: private_key_file %s", label, problem);
    }
    if (fleet_jwt_check_key(*pem, problem, sizeof problem))
        return fail(ld, inline_key ? inline_key : file, "app %s: the private key %s", label, problem);
    return 0;
}

/* installations: auto (the default), or a list of installation ids and
 * account logins. */
static int app_installations(struct loader *ld, const struct node *n, struct fleet_app_conf *a)
{
    a->installations_auto = true;
    if (!n || is_null(n))
        return 0;
    if (n->kind == NODE_SCALAR && strcmp(n->text, "auto") == 0)
        return 0;
    if (n->kind != NODE_SEQ || n->nkids == 0 || n->nkids > FLEET_APP_MAX_INSTALLATIONS)
        return fail(ld, n, "installations: expected auto or a list of 1 to %d installation ids or account logins",
                    FLEET_APP_MAX_INSTALLATIONS);
    a->installations_auto = false;
    a->installations = xmalloc(n->nkids * sizeof *a->installations);
    for (size_t i = 0; i < n->nkids; i++) {
        char *v;
        if (get_string(ld, n->kids[i], "installations", &v))
            return -1;
        a->installations[a->ninstallations++] = v;
        if (!*v || has_control(v) || strlen(v) > MAX_LABEL)
            return fail(ld, n->kids[i], "installations: an id or login of 1 to %d characters", MAX_LABEL);
    }
    return 0;
}

/* providers.NAME.apps: GitHub Apps whose installation tokens join the pool. */
static int load_apps(struct loader *ld, struct fleet_provider_conf *pv, const struct node *list)
{
    static const char *const keys[] = {"label", "app_id", "private_key", "private_key_file", "installations", NULL};
    if (is_null(list))
        return 0;
    if (list->kind != NODE_SEQ)
        return fail(ld, list, "providers.%s.apps: expected a list, found %s", pv->name, describe(list));
    char where[MAX_NAME + 64];
    snprintf(where, sizeof where, "in an app entry of providers.%s", pv->name);
    pv->apps = xmalloc(list->nkids * sizeof *pv->apps);
    for (size_t i = 0; i < list->nkids; i++) {
        const struct node *item = list->kids[i];
        if (item->kind != NODE_MAP)
            return fail(ld, item, "providers.%s.apps: each entry is a mapping (label, app_id, private_key_file "
                                  "or private_key, installations)", pv->name);
        if (check_keys(ld, item, where, keys, false))
            return -1;
        struct fleet_app_conf *a = &pv->apps[pv->napps++];
        memset(a, 0, sizeof *a);
        a->where = where_of(ld, item);
        const struct node *label = map_get(item, "label"), *id = map_get(item, "app_id");
        if (!label || get_string(ld, label, "label", &a->label) || !valid_label(a->label))
            return fail(ld, label ? label : item, "app label: use 1 to %d printable ASCII characters without spaces",
                        MAX_LABEL);
        for (size_t j = 0; j < pv->ntokens; j++)
            if (strcmp(pv->tokens[j].label, a->label) == 0)
                return fail(ld, label, "app label %s is also a token label in providers.%s", a->label, pv->name);
        for (size_t j = 0; j + 1 < pv->napps; j++)
            if (strcmp(pv->apps[j].label, a->label) == 0)
                return fail(ld, label, "duplicate app label in providers.%s", pv->name);
        if (!id || get_string(ld, id, "app_id", &a->app_id))
            return fail(ld, id ? id : item, "app %s: app_id is required (the App ID on the app's settings page)",
                        a->label);
        if (!*a->app_id || strspn(a->app_id, "0123456789") != strlen(a->app_id) || strlen(a->app_id) > 20)
            return fail(ld, id, "app %s: app_id must be a number", a->label);
        if (app_private_key(ld, item, a->label, &a->private_key) ||
            app_installations(ld, map_get(item, "installations"), a))
            return -1;
    }
    return 0;
}

static int load_provider(struct loader *ld, struct fleet_config *cfg, const struct node *key,
                         const struct node *value)
{
    static const char *const keys[] = {"plugin", "base_url", "tokens", "apps", NULL};
    char shown[MAX_KEY_ECHO + 4];
    const char *problem = name_problem(key->text, key->len);
    key_for_message(key, shown, sizeof shown);
    if (problem)
        return fail(ld, key, "invalid provider name '%s': %s", shown, problem);
    /* Appended first, filled in place: on error cfg stays freeable. */
    cfg->providers = xrealloc(cfg->providers, (cfg->nproviders + 1) * sizeof *cfg->providers);
    struct fleet_provider_conf *pv = &cfg->providers[cfg->nproviders++];
    *pv = (struct fleet_provider_conf){.name = xstrdup(key->text), .where = where_of(ld, key)};
    char where[MAX_NAME + 32];
    snprintf(where, sizeof where, "providers.%s", pv->name);
    if (!is_null(value) && open_section(ld, value, where, keys) < 0)
        return -1;
    const struct node *plugin = value->kind == NODE_MAP ? map_get(value, "plugin") : NULL;
    const struct node *base_url = value->kind == NODE_MAP ? map_get(value, "base_url") : NULL;
    const struct node *tokens = value->kind == NODE_MAP ? map_get(value, "tokens") : NULL;
    if (plugin) {
        if (get_string(ld, plugin, "plugin", &pv->plugin))
            return -1;
        if ((problem = name_problem(pv->plugin, strlen(pv->plugin))))
            return fail(ld, plugin, "plugin: invalid plugin name: %s", problem);
    } else {
        pv->plugin = xstrdup(pv->name);
    }
    if (base_url) {
        if (get_string(ld, base_url, "base_url", &pv->base_url))
            return -1;
        if (!*pv->base_url) {
            free(pv->base_url); /* "${GHE_URL:-}": the plugin's default */
            pv->base_url = NULL;
        } else if ((problem = fleet_base_url_problem(pv->base_url))) {
            return fail(ld, base_url, "base_url: %s", problem);
        } else {
            /* One form for plugins to append paths to. */
            for (size_t n = strlen(pv->base_url); n > 0 && pv->base_url[n - 1] == '/'; n--)
                pv->base_url[n - 1] = '\0';
        }
    }
    if (tokens && load_tokens(ld, pv, tokens))
        return -1;
    const struct node *apps = value->kind == NODE_MAP ? map_get(value, "apps") : NULL;
    return apps ? load_apps(ld, pv, apps) : 0;
}

static void free_providers(struct fleet_config *cfg)
{
    for (size_t i = 0; i < cfg->nproviders; i++)
        clear_provider(&cfg->providers[i]);
    free(cfg->providers);
    cfg->providers = NULL;
    cfg->nproviders = 0;
}

static int load_providers(struct loader *ld, struct fleet_config *cfg, const struct node *n)
{
    free_providers(cfg); /* the file's list replaces any earlier one */
    if (is_null(n))
        return 0;
    if (n->kind != NODE_MAP)
        return fail(ld, n, "providers: expected a mapping of instance names to providers, found %s",
                    describe(n));
    if (check_keys(ld, n, "in providers", NULL, true))
        return -1;
    for (size_t i = 0; i < npairs(n); i++)
        if (load_provider(ld, cfg, key_at(n, i), value_at(n, i)))
            return -1;
    return 0;
}

/* ------------------------------------------------------------ shared */

/* redis://HOST[:PORT][/DB] or unix:///PATH[?db=N] into cfg->shared; NULL
 * or what is wrong. A password in the URL is refused like a token in a
 * base_url: it belongs in password or password_file. */
static const char *parse_redis_url(struct fleet_shared_conf *sc, const char *url)
{
    for (const char *p = url; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            return "a URL must not contain spaces or control characters";
    char *end;
    if (strncmp(url, "unix://", 7) == 0) {
        const char *path = url + 7;
        size_t len = strcspn(path, "?");
        if (len == 0 || path[0] != '/')
            return "a unix socket URL is unix:///absolute/path[?db=N]";
        sc->socket = xmemdup(path, len);
        if (path[len]) {
            if (strncmp(path + len, "?db=", 4) != 0)
                return "the only option of a unix socket URL is ?db=N";
            long db = strtol(path + len + 4, &end, 10);
            if (end == path + len + 4 || *end || db < 0 || db > 1000000)
                return "db must be a number from 0";
            sc->db = (int)db;
        }
        return NULL;
    }
    if (strncmp(url, "redis://", 8) != 0)
        return "expected redis://HOST[:PORT][/DB] or unix:///PATH (rediss:// is not supported)";
    const char *h = url + 8;
    size_t authority = strcspn(h, "/?#");
    if (memchr(h, '@', authority))
        return "a password in the URL is not allowed; use password: \"${VAR}\" or password_file";
    size_t hlen = strcspn(h, ":/?#");
    if (hlen == 0)
        return "the URL has no host";
    sc->host = xmemdup(h, hlen);
    const char *rest = h + hlen;
    if (*rest == ':') {
        long port = strtol(rest + 1, &end, 10);
        if (end == rest + 1 || port < 1 || port > 65535)
            return "the port must be a number from 1 to 65535";
        sc->port = (int)port;
        rest = end;
    }
    if (*rest == '/' && rest[1]) {
        long db = strtol(rest + 1, &end, 10);
        if (end == rest + 1 || *end || db < 0 || db > 1000000)
            return "the path of a redis:// URL is the database number";
        sc->db = (int)db;
    } else if (*rest && strcmp(rest, "/") != 0) {
        return "expected redis://HOST[:PORT][/DB]";
    }
    return NULL;
}

static const struct field shared_fields[] = {
    {"lease", F_SECONDS, AT(shared.lease), 1, DAY},
    {"block", F_INT, AT(shared.block), 1, 10000},
    {"connect_timeout", F_SECONDS, AT(shared.connect_timeout), 0.001, 3600},
    {"max_attempts", F_INT, AT(shared.max_attempts), 1, 100},
    {NULL, F_INT, 0, 0, 0},
};

static int load_shared(struct loader *ld, struct fleet_config *cfg, const struct node *n)
{
    static const char *const keys[] = {"url", "password", "password_file", "prefix", "lease", "block",
                                       "connect_timeout", "max_attempts", NULL};
    struct fleet_shared_conf *sc = &cfg->shared;
    int open = open_section(ld, n, "shared", keys);
    if (open <= 0)
        return open;
    const struct node *url = map_get(n, "url"), *pw = map_get(n, "password"), *pwf = map_get(n, "password_file");
    const struct node *prefix = map_get(n, "prefix");
    if (!url)
        return fail(ld, n, "shared: url is required (redis://HOST[:PORT][/DB] or unix:///PATH)");
    if (get_string(ld, url, "shared.url", &sc->url))
        return -1;
    const char *problem = parse_redis_url(sc, sc->url);
    if (problem)
        return fail(ld, url, "shared.url: %s", problem);
    if (pw && pwf) {
        const struct node *second = pw->mark.index > pwf->mark.index ? pw : pwf;
        return fail(ld, second, "shared: use either password or password_file, not both");
    }
    if (pw && get_string(ld, pw, "shared.password", &sc->password))
        return -1;
    if (pwf) {
        char *path;
        if (get_path(ld, pwf, "shared.password_file", false, &path))
            return -1;
        int rc = read_token_file(ld, pwf, path, &sc->password);
        free(path);
        if (rc)
            return -1;
    }
    if (sc->password && !*sc->password) {
        zfree(sc->password); /* ${VAR:-} left unset: no password */
        sc->password = NULL;
    }
    if (sc->password)
        fleet_log_add_secret(sc->password, strlen(sc->password));
    if (prefix) {
        free(sc->prefix);
        sc->prefix = NULL;
        if (get_string(ld, prefix, "shared.prefix", &sc->prefix))
            return -1;
        if (!*sc->prefix || strlen(sc->prefix) > 64 || has_control(sc->prefix) || strchr(sc->prefix, ' '))
            return fail(ld, prefix, "shared.prefix: use 1 to 64 printable characters without spaces");
    }
    for (size_t i = 0; i < npairs(n); i++)
        for (const struct field *f = shared_fields; f->key; f++)
            if (strcmp(f->key, key_at(n, i)->text) == 0 && load_field(ld, cfg, "shared", f, value_at(n, i)))
                return -1;
    sc->where = where_of(ld, n);
    sc->enabled = true;
    return 0;
}

static void free_shared(struct fleet_shared_conf *sc)
{
    free(sc->url);
    free(sc->host);
    free(sc->socket);
    zfree(sc->password);
    free(sc->prefix);
    free(sc->where);
    memset(sc, 0, sizeof *sc);
}

/* ------------------------------------------------------------ the file */

static const struct section {
    const char *key;
    int (*load)(struct loader *, struct fleet_config *, const struct node *);
} sections[] = {
    {"providers", load_providers}, {"http", load_http}, {"retry", load_retry}, {"cache", load_cache},
    {"lua", load_lua},             {"plugins", load_plugins}, {"log", load_log},
    {"shared", load_shared},
};

#define NSECTIONS (sizeof sections / sizeof *sections)

static int load_root(struct loader *ld, struct fleet_config *cfg, const struct node *root)
{
    const char *keys[NSECTIONS + 1];
    for (size_t i = 0; i < NSECTIONS; i++)
        keys[i] = sections[i].key;
    keys[NSECTIONS] = NULL;
    if (!root || is_null(root))
        return 0; /* empty, or only comments: the defaults */
    if (root->kind != NODE_MAP)
        return fail(ld, root, "the top level must be a mapping of sections (%s), found %s",
                    "providers, http, retry, cache, lua, plugins, log, shared", describe(root));
    if (check_keys(ld, root, "at the top level", keys, true))
        return -1;
    for (size_t i = 0; i < npairs(root); i++)
        for (size_t s = 0; s < NSECTIONS; s++)
            if (strcmp(sections[s].key, key_at(root, i)->text) == 0 &&
                sections[s].load(ld, cfg, value_at(root, i)))
                return -1;
    return 0;
}

/* The whole file in memory, in a buffer of CONFIG_BUF bytes that the caller
 * zeroes before freeing (the file may hold secrets). */
#define CONFIG_BUF (MAX_CONFIG_BYTES + 1)

static int read_config(struct loader *ld, const char *path, char **out, size_t *outlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        return fail_at(ld, 0, 0, "cannot read the configuration: %s", strerror(e));
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return fail_at(ld, 0, 0, "cannot read the configuration: %s", strerror(EISDIR));
    }
    size_t cap = CONFIG_BUF, len = 0;
    char *buf = xmalloc(cap);
    while (len < cap) {
        ssize_t got = read(fd, buf + len, cap - len);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            int e = errno;
            close(fd);
            zfree_n(buf, cap);
            return fail_at(ld, 0, 0, "cannot read the configuration: %s", strerror(e));
        }
        if (got == 0)
            break;
        len += (size_t)got;
    }
    close(fd);
    if (len == cap) {
        zfree_n(buf, cap);
        return fail_at(ld, 0, 0, "the configuration is larger than 1 MiB; is this the right file?");
    }
    *out = buf;
    *outlen = len;
    return 0;
}

int fleet_config_load(struct fleet_config *cfg, const char *path, char *err, size_t errlen)
{
    struct loader ld = {.file = path, .err = err, .errlen = errlen};
    char *buf = NULL;
    size_t len = 0;
    struct node *root = NULL;
    if (err && errlen)
        err[0] = '\0';
    free(cfg->path);
    cfg->path = xstrdup(path);
    if (read_config(&ld, path, &buf, &len))
        return -1;
    ld.dir = config_dir(path);
    int rc = parse_yaml(&ld, buf, len, &root);
    zfree_n(buf, CONFIG_BUF);
    if (rc == 0)
        rc = load_root(&ld, cfg, root);
    free_node(root);
    free(ld.dir);
    free(ld.warned);
    return rc;
}

/* ------------------------------------------------- defaults and free */

void fleet_config_defaults(struct fleet_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->http = (struct fleet_http_conf){
        .max_connections = 64,
        .per_token_concurrency = 8,
        .timeout = 30,
        .connect_timeout = 10,
        .max_response_size = 32LL << 20,
    };
    cfg->retry = (struct fleet_retry_conf){
        .max_attempts = 6,
        .base_delay = 0.5,
        .max_delay = 60,
        .secondary_wait = 60,
        .reset_margin = 1,
        .max_wait = 3600,
    };
    char *cache_dir = xdg_dir("XDG_CACHE_HOME", ".cache");
    cfg->cache.path = cache_dir ? join_path(cache_dir, "gitfleet/http.sqlite") : NULL;
    cfg->cache.enabled = cfg->cache.path != NULL; /* no home directory: no cache */
    cfg->cache.max_size = 256LL << 20;
    free(cache_dir);
    cfg->lua.memory_limit = 1LL << 30;
    cfg->lua.plugin_instructions = 10000000;
    cfg->log_level = FLEET_LOG_INFO;
    fleet_config_shared_defaults(&cfg->shared);
}

void fleet_config_shared_defaults(struct fleet_shared_conf *sc)
{
    free_shared(sc);
    sc->port = 6379;
    sc->prefix = xstrdup("gitfleet");
    sc->lease = 30;
    sc->block = 8;
    sc->connect_timeout = 5;
    sc->max_attempts = 3;
}

void fleet_config_free(struct fleet_config *cfg)
{
    free_providers(cfg);
    free_plugin_paths(cfg);
    free(cfg->path);
    free(cfg->http.ca_file);
    free(cfg->http.ca_path);
    free(cfg->cache.path);
    free_shared(&cfg->shared);
    memset(cfg, 0, sizeof *cfg);
}
