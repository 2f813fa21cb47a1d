/* JSON text to Lua values (see json.h).
 *
 * One recursive-descent parser serves both for building values and for
 * checking the parts a keep set leaves out: `build` says which, so skipped
 * text is validated exactly as strictly as built text, but allocates
 * nothing. */
#include "json.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "lfleet.h"

enum {
    MAX_DEPTH = 1000,   /* nesting, as lua-cjson allows */
    MAX_KEEP_DEPTH = 8, /* nesting of keep tables */
};

/* The fields of an object to build. `all`: build the fields not listed
 * too (a page object around its items). A field's `sub` applies to its
 * value: the fields to build when it is an object, or of each element when
 * it is an array; NULL builds the whole value. */
struct keep_field {
    const char *name;
    size_t len;
    const struct keep *sub;
};

struct keep {
    bool all;
    int n;
    struct keep_field f[];
};

struct dec {
    lua_State *L;
    const char *start, *p, *end;
    const char *err;
    int depth;
};

static bool fail(struct dec *d, const char *why)
{
    if (!d->err)
        d->err = why;
    return false;
}

static void skip_space(struct dec *d)
{
    while (d->p < d->end && (*d->p == ' ' || *d->p == '\n' || *d->p == '\r' || *d->p == '\t'))
        d->p++;
}

static bool parse_value(struct dec *d, const struct keep *keep, bool build);

/* ---- strings ---- */

static int hex4(const char *p)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= c - '0';
        else if (c >= 'a' && c <= 'f')
            v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            v |= c - 'A' + 10;
        else
            return -1;
    }
    return v;
}

static void add_utf8(luaL_Buffer *b, unsigned cp)
{
    char out[4];
    int n;
    if (cp < 0x80) {
        out[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        out[0] = (char)(0xF0 | cp >> 18);
        out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
        out[2] = (char)(0x80 | (cp >> 6 & 0x3F));
        out[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    luaL_addlstring(b, out, (size_t)n);
}

/* A string with escapes, from its first backslash at d->p; the text
 * before it is s[0..n). */
static bool parse_escaped(struct dec *d, const char *s, size_t n, bool build)
{
    luaL_Buffer b;
    if (build) {
        luaL_buffinit(d->L, &b);
        luaL_addlstring(&b, s, n);
    }
    while (d->p < d->end) {
        const char *run = d->p;
        while (d->p < d->end && *d->p != '"' && *d->p != '\\')
            d->p++;
        if (build)
            luaL_addlstring(&b, run, (size_t)(d->p - run));
        if (d->p >= d->end)
            break;
        if (*d->p == '"') {
            d->p++;
            if (build)
                luaL_pushresult(&b);
            return true;
        }
        if (d->end - d->p < 2)
            break;
        char c = d->p[1];
        d->p += 2;
        char plain = 0;
        switch (c) {
        case '"': plain = '"'; break;
        case '\\': plain = '\\'; break;
        case '/': plain = '/'; break;
        case 'b': plain = '\b'; break;
        case 'f': plain = '\f'; break;
        case 'n': plain = '\n'; break;
        case 'r': plain = '\r'; break;
        case 't': plain = '\t'; break;
        case 'u': {
            int cp = d->end - d->p >= 4 ? hex4(d->p) : -1;
            if (cp < 0)
                return fail(d, "bad \\u escape");
            d->p += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                /* A high surrogate: with its low half it is one code point;
                 * alone it is no character and becomes U+FFFD. */
                int lo = d->end - d->p >= 6 && d->p[0] == '\\' && d->p[1] == 'u' ? hex4(d->p + 2) : -1;
                if (lo >= 0xDC00 && lo <= 0xDFFF) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    d->p += 6;
                } else {
                    cp = 0xFFFD;
                }
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                cp = 0xFFFD;
            }
            if (build)
                add_utf8(&b, (unsigned)cp);
            continue;
        }
        default:
            return fail(d, "bad escape in a string");
        }
        if (build)
            luaL_addchar(&b, plain);
    }
    return fail(d, "unterminated string");
}

/* At the opening quote. Raw control characters are let through: a
 * provider's slip should not cost a whole page. */
static bool parse_string(struct dec *d, bool build)
{
    const char *s = ++d->p;
    while (d->p < d->end && *d->p != '"' && *d->p != '\\')
        d->p++;
    if (d->p >= d->end)
        return fail(d, "unterminated string");
    if (*d->p == '"') {
        if (build)
            lua_pushlstring(d->L, s, (size_t)(d->p - s));
        d->p++;
        return true;
    }
    return parse_escaped(d, s, (size_t)(d->p - s), build);
}

/* ---- numbers ---- */

static bool digits(struct dec *d)
{
    const char *s = d->p;
    while (d->p < d->end && *d->p >= '0' && *d->p <= '9')
        d->p++;
    return d->p > s;
}

static bool parse_number(struct dec *d, bool build)
{
    const char *s = d->p;
    bool integral = true;
    if (d->p < d->end && *d->p == '-')
        d->p++;
    if (d->p < d->end && *d->p == '0')
        d->p++;
    else if (!digits(d))
        return fail(d, "bad number");
    if (d->p < d->end && *d->p == '.') {
        d->p++;
        integral = false;
        if (!digits(d))
            return fail(d, "bad number");
    }
    if (d->p < d->end && (*d->p == 'e' || *d->p == 'E')) {
        d->p++;
        integral = false;
        if (d->p < d->end && (*d->p == '+' || *d->p == '-'))
            d->p++;
        if (!digits(d))
            return fail(d, "bad number");
    }
    if (!build)
        return true;
    size_t n = (size_t)(d->p - s);
    if (integral && n <= 18) {
        /* At most 18 digits always fit in a 64-bit integer. */
        const char *q = s;
        bool negative = *q == '-';
        long long v = 0;
        for (q += negative; q < d->p; q++)
            v = v * 10 + (*q - '0');
        lua_pushinteger(d->L, negative ? -v : v);
        return true;
    }
    char buf[512];
    if (n >= sizeof buf)
        return fail(d, "number too long");
    memcpy(buf, s, n);
    buf[n] = 0;
    lua_pushnumber(d->L, strtod(buf, NULL));
    return true;
}

/* ---- objects and arrays ---- */

static const struct keep_field *find_field(const struct keep *k, const char *name, size_t len)
{
    for (int i = 0; i < k->n; i++)
        if (k->f[i].len == len && memcmp(k->f[i].name, name, len) == 0)
            return &k->f[i];
    return NULL;
}

/* The key. A plain one is read in place, without making a Lua string
 * (only kept keys become one); one with escapes ("a\/b", "\u00e9") is
 * decoded onto the stack when building (*pushed), and *name points into
 * that string. */
static bool read_key(struct dec *d, bool build, const char **name, size_t *len, bool *pushed)
{
    if (d->p >= d->end || *d->p != '"')
        return fail(d, "expected a string key");
    const char *s = d->p + 1;
    const char *q = s;
    while (q < d->end && *q != '"' && *q != '\\')
        q++;
    *pushed = false;
    if (q < d->end && *q == '"') {
        *name = s;
        *len = (size_t)(q - s);
        d->p = q + 1;
        return true;
    }
    if (!parse_string(d, build))
        return false;
    if (build) {
        *name = lua_tolstring(d->L, -1, len);
        *pushed = true;
    }
    return true;
}

static bool parse_object(struct dec *d, const struct keep *keep, bool build)
{
    lua_State *L = d->L;
    d->p++; /* { */
    if (build) {
        luaL_checkstack(L, 4, "JSON nested too deep");
        lua_createtable(L, 0, keep && !keep->all ? keep->n : 8);
    }
    skip_space(d);
    if (d->p < d->end && *d->p == '}') {
        d->p++;
        return true;
    }
    for (;;) {
        const char *name = NULL;
        size_t len = 0;
        bool pushed;
        skip_space(d);
        if (!read_key(d, build, &name, &len, &pushed))
            return false;
        skip_space(d);
        if (d->p >= d->end || *d->p != ':')
            return fail(d, "expected ':'");
        d->p++;
        skip_space(d);
        const struct keep_field *f = keep && name ? find_field(keep, name, len) : NULL;
        bool build_it = build && (!keep || f || keep->all);
        if (pushed && !build_it)
            lua_pop(L, 1);
        else if (build_it && !pushed)
            lua_pushlstring(L, name, len);
        if (!parse_value(d, f ? f->sub : NULL, build_it))
            return false;
        if (build_it)
            lua_rawset(L, -3);
        skip_space(d);
        if (d->p < d->end && *d->p == ',') {
            d->p++;
            continue;
        }
        if (d->p < d->end && *d->p == '}') {
            d->p++;
            return true;
        }
        return fail(d, "expected ',' or '}'");
    }
}

static bool parse_array(struct dec *d, const struct keep *keep, bool build)
{
    lua_State *L = d->L;
    d->p++; /* [ */
    if (build) {
        luaL_checkstack(L, 4, "JSON nested too deep");
        lua_createtable(L, 4, 0);
    }
    skip_space(d);
    if (d->p < d->end && *d->p == ']') {
        d->p++;
        return true;
    }
    for (lua_Integer i = 1;; i++) {
        skip_space(d);
        if (!parse_value(d, keep, build))
            return false;
        if (build)
            lua_rawseti(L, -2, i);
        skip_space(d);
        if (d->p < d->end && *d->p == ',') {
            d->p++;
            continue;
        }
        if (d->p < d->end && *d->p == ']') {
            d->p++;
            return true;
        }
        return fail(d, "expected ',' or ']'");
    }
}

static bool literal(struct dec *d, const char *word, size_t n)
{
    if ((size_t)(d->end - d->p) < n || memcmp(d->p, word, n) != 0)
        return fail(d, "unexpected character");
    d->p += n;
    return true;
}

static bool parse_value(struct dec *d, const struct keep *keep, bool build)
{
    if (d->p >= d->end)
        return fail(d, "unexpected end of text");
    bool ok;
    switch (*d->p) {
    case '{':
    case '[':
        if (++d->depth > MAX_DEPTH)
            return fail(d, "nested too deep");
        ok = *d->p == '{' ? parse_object(d, keep, build) : parse_array(d, keep, build);
        d->depth--;
        return ok;
    case '"':
        /* A kept key whose value is a string is built; keep sets for
         * strings mean nothing. */
        return parse_string(d, build);
    case 't':
        if (!literal(d, "true", 4))
            return false;
        if (build)
            lua_pushboolean(d->L, 1);
        return true;
    case 'f':
        if (!literal(d, "false", 5))
            return false;
        if (build)
            lua_pushboolean(d->L, 0);
        return true;
    case 'n':
        if (!literal(d, "null", 4))
            return false;
        if (build)
            lua_pushlightuserdata(d->L, NULL); /* lua-cjson's null */
        return true;
    default:
        if (*d->p == '-' || (*d->p >= '0' && *d->p <= '9'))
            return parse_number(d, build);
        return fail(d, "unexpected character");
    }
}

/* ---- keep sets from Lua tables ---- */

/* Builds the keep set of the table at idx; the allocations are userdata
 * stored in the holder table at `holder`, so they live as long as the
 * decode and are collected after (also after an error). */
static const struct keep *build_keep(lua_State *L, int idx, int holder, int depth)
{
    if (depth > MAX_KEEP_DEPTH)
        luaL_error(L, "keep tables nested too deep");
    idx = lua_absindex(L, idx);
    int n = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        n++;
        lua_pop(L, 1);
    }
    struct keep *k = lua_newuserdatauv(L, sizeof *k + (size_t)n * sizeof k->f[0], 0);
    lua_rawseti(L, holder, (lua_Integer)lua_rawlen(L, holder) + 1);
    k->all = false;
    k->n = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "keep tables are keyed by field names");
        struct keep_field *f = &k->f[k->n++];
        /* The name stays valid: the keep table holds the key string. */
        f->name = lua_tolstring(L, -2, &f->len);
        f->sub = lua_istable(L, -1) ? build_keep(L, -1, holder, depth + 1) : NULL;
        lua_pop(L, 1);
    }
    return k;
}

int fleet_json_decode(lua_State *L, const char *text, size_t len, const char *items, int keep)
{
    if (keep)
        keep = lua_absindex(L, keep);
    int base = lua_gettop(L);
    lua_newtable(L); /* [base + 1]: holds the keep sets */
    const struct keep *item_keep = keep ? build_keep(L, keep, base + 1, 0) : NULL;
    const struct keep *top = item_keep;
    if (items && item_keep) {
        /* The page object: everything, its items field with the keep set. */
        struct keep *page = lua_newuserdatauv(L, sizeof *page + sizeof page->f[0], 0);
        lua_rawseti(L, base + 1, (lua_Integer)lua_rawlen(L, base + 1) + 1);
        page->all = true;
        page->n = 1;
        page->f[0] = (struct keep_field){items, strlen(items), item_keep};
        top = page;
    }
    struct dec d = {L, text, text, text + len, NULL, 0};
    skip_space(&d);
    /* A page that turns out to be an array (or an error object) is decoded
     * with the keep set that fits it. */
    if (items && d.p < d.end && *d.p == '[')
        top = item_keep;
    else if (!items && d.p < d.end && *d.p == '{')
        top = NULL;
    bool ok = parse_value(&d, top, true);
    if (ok) {
        skip_space(&d);
        if (d.p != d.end)
            ok = fail(&d, "unexpected text after the value");
    }
    if (!ok) {
        lua_settop(L, base);
        lua_pushfstring(L, "offset %d: %s", (int)(d.p - d.start), d.err ? d.err : "invalid JSON");
        return 0;
    }
    lua_replace(L, base + 1); /* the value where the holder was */
    return 1;
}

/* core.decode(text [, items [, keep]]) -> value | nil, err */
static int l_decode(lua_State *L)
{
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    const char *items = luaL_optstring(L, 2, NULL);
    if (!lua_isnoneornil(L, 3))
        luaL_checktype(L, 3, LUA_TTABLE);
    lua_settop(L, 3);
    if (fleet_json_decode(L, text, len, items, lua_istable(L, 3) ? 3 : 0))
        return 1;
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
}

void fleet_json_register(lua_State *L)
{
    lua_pushcfunction(L, l_decode);
    lua_setfield(L, -2, "decode");
}
