/* fleet.core.writer: NDJSON, JSON and CSV record writers for Lua.
 *
 *   local w = core.writer("ndjson" | "json" | "csv", path_or_nil, {
 *       fields = {"id", "owner.login", ...}, all_fields = bool, null = cjson.null})
 *   w:write(record)  w:write_many(records)  w:flush()  w:close()  w:count()
 *
 * Records are encoded straight from the Lua tables into the writer's
 * buffer (output.c), without building Lua strings: field names are
 * interned once when the writer is made and their JSON keys encoded once;
 * the keys of other tables are read where lua_next leaves them on the
 * stack, sorted in a C array the writer reuses from record to record.
 *
 * Fields: a listed field is looked up as written first, then, if absent
 * and dotted, as a path ("owner.login" -> record.owner.login). With no
 * fields (or an empty list), JSON and NDJSON records carry every key.
 * All table access is raw: metatables are not consulted.
 *
 * Misuse raises; a record that cannot be encoded (too deep, a function
 * value) and I/O failures return nil, message (a string). A record that
 * fails is not written at all; write_many stops at the first one, with
 * the records before it written. After an I/O failure every call returns
 * the same failure.
 *
 * A path is replaced all at once (atomicfile.c): records go to a temporary
 * file beside it, and w:close() renames that over the path. w:discard(),
 * an error that ends a <close> scope, the collector, a signal or a failed
 * write leave the path as it was. A "text" writer takes only
 * write_encoded, for text a caller formats itself (gitfleet fetch's
 * table).
 *
 * When the reader of stdout goes away (EPIPE: `gitfleet fetch | head -1`)
 * the run ends there, quietly: the scheduler stops, the task that wrote is
 * never resumed, and the process exits 141 as if SIGPIPE had ended it. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>

#include "atomicfile.h"
#include "background.h"
#include "host.h"
#include "lfleet.h"
#include "log.h"
#include "output.h"
#include "sched.h"

#define WRITER_META "fleet.writer"
#define MAX_DEPTH 64

/* User values of the writer userdata. */
enum { UV_FIELDS = 1, UV_FIELDSET, UV_PATHS, UV_SHAPE, UV_COUNT = UV_SHAPE };

enum format { FORMAT_NDJSON, FORMAT_JSON, FORMAT_CSV, FORMAT_TEXT };

/* An object member on the Lua stack: key at slot - 1, value at slot. */
struct entry {
    const char *key;
    size_t len;
    int slot;
    int order; /* position in lua_next order */
};

struct writer {
    struct fleet_out out;
    struct fleet_host *host;
    struct fleet_atomic file; /* a path's temporary file (or the device itself) */
    bool to_path;             /* file is in use: commit or discard it on close */
    enum format format;
    bool closed;
    bool committing; /* the file's commit runs in the background (w:close in a task) */
    bool all_fields;
    bool has_null;
    const void *null; /* opts.null: a light userdata encoded as null */
    int nfields;
    struct fleet_buf keys; /* field i's JSON key ("," "\"name\"" ":") */
    size_t *key_at;        /* nfields + 1 offsets into keys */
    bool *dotted;          /* field i is a dotted path, in UV_PATHS */
    struct entry *ents;    /* a stack of object members, all levels */
    size_t nents, cap_ents;
    /* The sorted order of the last record's top-level keys. Records of one
     * kind, made by one constructor, list the same key strings in the same
     * lua_next order: then the sort is a permutation already known. The
     * key strings are anchored in UV_SHAPE, so an equal pointer is the
     * same string. */
    const char **shape; /* keys in lua_next order */
    int *shape_order;   /* shape_order[j]: lua_next position of sorted key j */
    struct entry *shape_tmp;
    size_t nshape, nshape_kept, cap_shape;
    struct fleet_buf scratch; /* a CSV cell being flattened */
    struct fleet_buf chunk;   /* encode_many's text (kept: a raise must not leak it) */
    char *name;               /* the path, or "stdout", for messages */
    lua_Integer count;        /* records accepted */
};

/* Stack slots a call prepared: the field names and the tables they use. */
struct frame {
    int names; /* field i's name is at slot names + i */
    int fieldset;
    int paths;
};

/* Encoding state of one record. */
struct enc {
    lua_State *L;
    struct writer *w;
    const struct frame *f;
    struct fleet_buf *b;  /* the writer's buffer, or its scratch */
    const char *err;      /* why the record failed */
    const char *field;    /* the top-level field being encoded, for err */
    int listed;           /* or the index of the listed one, or -1 */
    char field_copy[128]; /* field, kept once the stack is unwound */
};

static bool encode_value(struct enc *e, int idx, int depth);

static bool fail(struct enc *e, const char *why)
{
    e->err = why;
    return false;
}

/* ---- tables ---- */

/* Whether the table at idx has exactly the keys 1..n, n its raw length
 * (> 0). Stops at the first key that says no. */
static bool is_array(lua_State *L, int idx, size_t n)
{
    size_t count = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        int isnum;
        lua_Integer k = lua_tointegerx(L, -1, &isnum);
        if (!isnum || lua_type(L, -1) != LUA_TNUMBER || k < 1 || (lua_Unsigned)k > n) {
            lua_pop(L, 1);
            return false;
        }
        count++;
    }
    return count == n;
}

static int compare_entries(const void *a, const void *b)
{
    const struct entry *x = a, *y = b;
    int c = memcmp(x->key, y->key, x->len < y->len ? x->len : y->len);
    if (c)
        return c;
    return x->len < y->len ? -1 : x->len > y->len;
}

static void sort_entries(struct entry *v, size_t n)
{
    if (n > 24) {
        qsort(v, n, sizeof *v, compare_entries);
        return;
    }
    for (size_t i = 1; i < n; i++) {
        struct entry t = v[i];
        size_t j = i;
        while (j > 0 && compare_entries(&v[j - 1], &t) > 0) {
            v[j] = v[j - 1];
            j--;
        }
        v[j] = t;
    }
}

static bool reserve_entry(struct writer *w)
{
    if (w->nents < w->cap_ents)
        return true;
    size_t cap = w->cap_ents ? 2 * w->cap_ents : 64;
    struct entry *p = realloc(w->ents, cap * sizeof *p);
    if (!p)
        return false;
    w->ents = p;
    w->cap_ents = cap;
    return true;
}

static bool reserve_shape(struct writer *w, size_t n)
{
    if (n <= w->cap_shape)
        return true;
    size_t cap = n < 64 ? 64 : 2 * n;
    const char **keys = realloc(w->shape, cap * sizeof *keys);
    if (keys)
        w->shape = keys;
    int *order = realloc(w->shape_order, cap * sizeof *order);
    if (order)
        w->shape_order = order;
    struct entry *tmp = realloc(w->shape_tmp, cap * sizeof *tmp);
    if (tmp)
        w->shape_tmp = tmp;
    if (!keys || !order || !tmp)
        return false;
    w->cap_shape = cap;
    return true;
}

/* Drops the members from base whose key is in the table at skipset. */
static void skip_listed(lua_State *L, struct writer *w, size_t base, int skipset)
{
    size_t keep = base;
    for (size_t i = base; i < w->nents; i++) {
        lua_pushvalue(L, w->ents[i].slot - 1);
        bool listed = lua_rawget(L, skipset) != LUA_TNIL;
        lua_pop(L, 1);
        if (!listed)
            w->ents[keep++] = w->ents[i];
    }
    w->nents = keep;
}

/* The top-level members from base, which have string keys only: those not
 * in skipset (if not 0), sorted. By the remembered permutation when they
 * are the last record's keys in the same order; else by comparison, and
 * remembered. The writer is at stack index 1. */
static void order_top_members(lua_State *L, struct writer *w, size_t base, int skipset)
{
    struct entry *v = w->ents + base;
    size_t n = w->nents - base;
    bool same = n == w->nshape;
    for (size_t i = 0; same && i < n; i++)
        same = v[i].key == w->shape[i];
    if (same) {
        memcpy(w->shape_tmp, v, n * sizeof *v);
        for (size_t j = 0; j < w->nshape_kept; j++)
            v[j] = w->shape_tmp[w->shape_order[j]];
        w->nents = base + w->nshape_kept;
        return;
    }
    w->nshape = 0;
    bool remember = reserve_shape(w, n) && lua_checkstack(L, 3);
    if (remember) {
        lua_createtable(L, (int)n, 0);
        for (size_t i = 0; i < n; i++) {
            w->shape[i] = v[i].key;
            lua_pushvalue(L, v[i].slot - 1);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        lua_setiuservalue(L, 1, UV_SHAPE);
    }
    if (skipset)
        skip_listed(L, w, base, skipset);
    size_t kept = w->nents - base;
    sort_entries(v, kept);
    if (remember) {
        for (size_t j = 0; j < kept; j++)
            w->shape_order[j] = v[j].order;
        w->nshape = n;
        w->nshape_kept = kept;
    }
}

/* Leaves the members of the table at idx on the stack and their entries
 * from w->ents[base], sorted by key: string keys, and numbers converted as
 * tostring does; other keys are skipped, as are keys in the table at
 * skipset (if not 0). *nonempty: the table had any key at all. top: the
 * table is a record, whose key order is worth remembering. */
static bool collect_members(struct enc *e, int idx, int skipset, size_t base, bool *nonempty, bool top,
                            bool *numeric_keys)
{
    lua_State *L = e->L;
    struct writer *w = e->w;
    bool numeric = false;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        /* [... k v] */
        *nonempty = true;
        int kt = lua_type(L, -2);
        if (kt != LUA_TSTRING && kt != LUA_TNUMBER) {
            lua_pop(L, 1);
            continue;
        }
        if (!lua_checkstack(L, 4))
            return fail(e, "too many keys for the Lua stack");
        if (!reserve_entry(w))
            return fail(e, "out of memory");
        struct entry *en = &w->ents[w->nents++];
        en->slot = lua_gettop(L);
        en->order = (int)(w->nents - 1 - base);
        en->key = kt == LUA_TSTRING ? lua_tolstring(L, -2, &en->len) : NULL;
        numeric |= kt == LUA_TNUMBER;
        lua_pushvalue(L, -2); /* [... k v k]: lua_next goes on from the copy */
    }
    *numeric_keys = numeric;
    if (top && !numeric) {
        order_top_members(L, w, base, skipset);
        return true;
    }
    /* Number keys are converted now rather than above, where lua_next still
     * needed them as numbers, and only for objects: arrays never get here. */
    for (size_t i = base; numeric && i < w->nents; i++)
        if (!w->ents[i].key)
            w->ents[i].key = lua_tolstring(L, w->ents[i].slot - 1, &w->ents[i].len);
    if (skipset)
        skip_listed(L, w, base, skipset);
    if (w->nents > base) /* an empty table may come before w->ents exists */
        sort_entries(w->ents + base, w->nents - base);
    return true;
}

/* Emits the members collected from base as "key":value pairs, each
 * preceded by a comma unless it is the first of the object. With number
 * keys, 1 and "1" can meet: the second is dropped. */
static bool emit_members(struct enc *e, size_t base, int depth, bool first, bool top, bool dedupe)
{
    struct writer *w = e->w;
    for (size_t i = base; i < w->nents; i++) {
        struct entry en = w->ents[i]; /* a copy: nested tables grow ents */
        if (dedupe && i > base && compare_entries(&w->ents[i - 1], &en) == 0)
            continue;
        if (!first)
            fleet_buf_putc(e->b, ',');
        first = false;
        fleet_json_string(e->b, en.key, en.len);
        fleet_buf_putc(e->b, ':');
        if (top) {
            e->field = en.key;
            e->listed = -1;
        }
        if (!encode_value(e, en.slot, depth))
            return false;
    }
    return true;
}

static bool encode_array(struct enc *e, int idx, size_t n, int depth)
{
    lua_State *L = e->L;
    fleet_buf_putc(e->b, '[');
    for (size_t i = 1; i <= n; i++) {
        if (i > 1)
            fleet_buf_putc(e->b, ',');
        lua_rawgeti(L, idx, (lua_Integer)i);
        if (!encode_value(e, lua_gettop(L), depth))
            return false;
        lua_pop(L, 1);
    }
    fleet_buf_putc(e->b, ']');
    return true;
}

/* The table at idx, which sits at nesting level depth. */
static bool encode_table(struct enc *e, int idx, int depth)
{
    lua_State *L = e->L;
    struct writer *w = e->w;
    if (depth > MAX_DEPTH)
        return fail(e, "nesting too deep (more than 64 levels)");
    if (!lua_checkstack(L, 8))
        return fail(e, "nesting too deep for the Lua stack");
    size_t n = lua_rawlen(L, idx);
    if (n > 0 && is_array(L, idx, n))
        return encode_array(e, idx, n, depth);
    int top = lua_gettop(L);
    size_t base = w->nents;
    bool nonempty = false, numeric = false;
    if (!collect_members(e, idx, 0, base, &nonempty, false, &numeric))
        return false;
    if (!nonempty) {
        fleet_buf_literal(e->b, "[]"); /* {} in Lua: an empty list (topics) */
    } else {
        fleet_buf_putc(e->b, '{');
        if (!emit_members(e, base, depth, true, false, numeric))
            return false;
        fleet_buf_putc(e->b, '}');
    }
    w->nents = base;
    lua_settop(L, top);
    return true;
}

static bool is_null(const struct writer *w, lua_State *L, int idx)
{
    const void *p = lua_touserdata(L, idx);
    return p == NULL || (w->has_null && p == w->null);
}

/* The value at idx, inside a table at nesting level depth. */
static bool encode_value(struct enc *e, int idx, int depth)
{
    lua_State *L = e->L;
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        fleet_buf_literal(e->b, "null");
        return true;
    case LUA_TBOOLEAN:
        if (lua_toboolean(L, idx))
            fleet_buf_literal(e->b, "true");
        else
            fleet_buf_literal(e->b, "false");
        return true;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx))
            fleet_json_integer(e->b, (long long)lua_tointeger(L, idx));
        else
            fleet_json_float(e->b, (double)lua_tonumber(L, idx));
        return true;
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        fleet_json_string(e->b, s, len);
        return true;
    }
    case LUA_TTABLE:
        return encode_table(e, idx, depth + 1);
    case LUA_TLIGHTUSERDATA:
        if (is_null(e->w, L, idx)) {
            fleet_buf_literal(e->b, "null");
            return true;
        }
        return fail(e, "cannot encode a light userdata other than opts.null");
    case LUA_TFUNCTION:
        return fail(e, "cannot encode a function");
    case LUA_TTHREAD:
        return fail(e, "cannot encode a thread");
    default:
        return fail(e, "cannot encode a userdata");
    }
}

/* ---- records ---- */

/* Pushes record[field i]: the key as written first, then, if that is
 * absent and the name has dots, the nested path ("owner.login"). */
static void push_field(lua_State *L, const struct writer *w, const struct frame *f, int rec, int i)
{
    lua_pushvalue(L, f->names + i);
    if (lua_rawget(L, rec) != LUA_TNIL || !w->dotted[i])
        return;
    lua_pop(L, 1);
    lua_rawgeti(L, f->paths, i + 1);
    int segments = lua_gettop(L);
    lua_Integer n = (lua_Integer)lua_rawlen(L, segments);
    lua_pushvalue(L, rec);
    /* [segments value] */
    for (lua_Integer k = 1; k <= n; k++) {
        if (lua_type(L, -1) != LUA_TTABLE) {
            lua_pop(L, 1);
            lua_pushnil(L);
            break;
        }
        lua_rawgeti(L, segments, k);
        lua_rawget(L, -2);
        lua_remove(L, -2);
    }
    lua_remove(L, segments);
}

static bool json_record(struct enc *e, int rec)
{
    lua_State *L = e->L;
    struct writer *w = e->w;
    fleet_buf_putc(e->b, '{');
    for (int i = 0; i < w->nfields; i++) {
        push_field(L, w, e->f, rec, i);
        fleet_buf_add(e->b, w->keys.data + w->key_at[i], w->key_at[i + 1] - w->key_at[i]);
        e->listed = i;
        if (!encode_value(e, lua_gettop(L), 1))
            return false;
        lua_pop(L, 1);
    }
    if (w->nfields == 0 || w->all_fields) {
        bool nonempty = false, numeric = false;
        if (!collect_members(e, rec, w->nfields ? e->f->fieldset : 0, 0, &nonempty, true, &numeric) ||
            !emit_members(e, 0, 1, w->nfields == 0, true, numeric))
            return false;
    }
    fleet_buf_putc(e->b, '}');
    return true;
}

/* A table in a CSV cell, into e->b: a list joined with ";" (strings as they
 * are, nested tables as JSON), any other table as its JSON text. */
static bool flatten_table(struct enc *e, int idx)
{
    lua_State *L = e->L;
    size_t n = lua_rawlen(L, idx);
    if (!lua_checkstack(L, 8))
        return fail(e, "nesting too deep for the Lua stack");
    if (n == 0) {
        lua_pushnil(L);
        if (!lua_next(L, idx))
            return true; /* an empty list: an empty cell */
        lua_pop(L, 2);
    }
    if (n == 0 || !is_array(L, idx, n))
        return encode_table(e, idx, 2);
    for (size_t i = 1; i <= n; i++) {
        if (i > 1)
            fleet_buf_putc(e->b, ';');
        int t = lua_rawgeti(L, idx, (lua_Integer)i);
        if (t == LUA_TSTRING) {
            size_t len;
            const char *s = lua_tolstring(L, -1, &len);
            fleet_buf_add(e->b, s, len);
        } else if (t == LUA_TNUMBER && !lua_isinteger(L, -1)) {
            fleet_number_text(e->b, (double)lua_tonumber(L, -1)); /* NaN: empty */
        } else if (!(t == LUA_TLIGHTUSERDATA && is_null(e->w, L, -1)) && !encode_value(e, lua_gettop(L), 2)) {
            return false;
        }
        lua_pop(L, 1);
    }
    return true;
}

static bool csv_cell(struct enc *e, int idx)
{
    lua_State *L = e->L;
    struct writer *w = e->w;
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        return true;
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        fleet_csv_field(e->b, s, len);
        return true;
    }
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx))
            fleet_json_integer(e->b, (long long)lua_tointeger(L, idx));
        else
            fleet_number_text(e->b, (double)lua_tonumber(L, idx)); /* NaN: empty */
        return true;
    case LUA_TLIGHTUSERDATA:
        if (is_null(w, L, idx))
            return true;
        break;
    case LUA_TTABLE: {
        struct fleet_buf *row = e->b;
        fleet_buf_reset(&w->scratch);
        e->b = &w->scratch;
        bool ok = flatten_table(e, idx);
        e->b = row;
        if (!ok)
            return false;
        if (w->scratch.failed)
            return fail(e, "out of memory");
        fleet_csv_field(row, w->scratch.data, w->scratch.len);
        return true;
    }
    default:
        break;
    }
    return encode_value(e, idx, 1); /* booleans as true/false; the rest fail */
}

static bool csv_record(struct enc *e, int rec)
{
    lua_State *L = e->L;
    struct writer *w = e->w;
    size_t start = e->b->len;
    for (int i = 0; i < w->nfields; i++) {
        if (i > 0)
            fleet_buf_putc(e->b, ',');
        push_field(L, w, e->f, rec, i);
        e->listed = i;
        if (!csv_cell(e, lua_gettop(L)))
            return false;
        lua_pop(L, 1);
    }
    if (e->b->len == start)
        fleet_buf_literal(e->b, "\"\""); /* a blank line would be no row at all */
    fleet_buf_literal(e->b, "\r\n");
    return true;
}

enum outcome { WRITTEN, NOT_ENCODED, IO_FAILED };

/* Encodes the record at rec onto b; `separator`: a JSON element follows
 * another. False with e->err (and e->field) set if it cannot be encoded. */
static bool encode_record(struct enc *e, int rec, struct fleet_buf *b, bool separator)
{
    lua_State *L = e->L;
    struct writer *w = e->w;
    int top = lua_gettop(L);
    w->nents = 0; /* an error raised in the last record may have left some */
    e->b = b;
    e->err = NULL;
    e->field = NULL;
    e->listed = -1;
    bool ok;
    if (w->format == FORMAT_CSV) {
        ok = csv_record(e, rec);
    } else {
        if (w->format == FORMAT_JSON && separator)
            fleet_buf_literal(e->b, ",\n");
        ok = json_record(e, rec);
        if (w->format == FORMAT_NDJSON)
            fleet_buf_putc(e->b, '\n');
    }
    if (!ok && e->listed >= 0)
        e->field = lua_tostring(L, e->f->names + e->listed);
    if (!ok && e->field) {
        /* The name may be a number key converted on the stack. */
        snprintf(e->field_copy, sizeof e->field_copy, "%s", e->field);
        e->field = e->field_copy;
    }
    lua_settop(L, top);
    w->nents = 0;
    return ok;
}

/* Commits what was begun, n records: 0, ENOMEM (nothing written, the
 * output still good) or the output's error. */
static int commit_records(struct writer *w, lua_Integer n)
{
    int err = fleet_out_commit(&w->out);
    if (err)
        return err == ENOMEM && !w->out.err ? ENOMEM : err;
    w->count += n;
    return 0;
}

/* Encodes the record at rec and commits it. */
static enum outcome write_record(struct enc *e, int rec)
{
    struct writer *w = e->w;
    fleet_out_begin(&w->out);
    bool ok = encode_record(e, rec, &w->out.buf, w->count > 0);
    if (!ok) {
        fleet_out_abort(&w->out);
        return NOT_ENCODED;
    }
    int err = commit_records(w, 1);
    if (err == ENOMEM) {
        e->err = "out of memory";
        e->field = NULL;
        return NOT_ENCODED;
    }
    return err ? IO_FAILED : WRITTEN;
}

/* ---- the Lua side ---- */

static struct writer *check_writer(lua_State *L) { return luaL_checkudata(L, 1, WRITER_META); }

static struct writer *check_open_writer(lua_State *L)
{
    struct writer *w = check_writer(L);
    if (w->closed)
        luaL_argerror(L, 1, "the writer is closed");
    return w;
}

static int push_io_failure(lua_State *L, const struct writer *w)
{
    lua_pushnil(L);
    lua_pushfstring(L, "cannot write to %s: %s", w->name, strerror(w->out.err));
    return 2;
}

static bool reader_gone(const struct writer *w)
{
    return w->out.err == EPIPE && !w->to_path; /* stdout (out.fd is -1 once closed) */
}

/* An I/O failure: nil, err, except that a closed stdout ends the run
 * (see the top of the file). Outside a task, or where Lua cannot yield,
 * the caller gets nil, err and the run stops at the next yield. */
static int io_failure(lua_State *L, const struct writer *w)
{
    struct fleet_sched *sched = w->host ? w->host->sched : NULL;
    if (!reader_gone(w) || !sched)
        return push_io_failure(L, w);
    fleet_sched_abandon(sched, SIGPIPE);
    struct fleet_task *t = fleet_sched_current(sched, L);
    if (!t || !lua_isyieldable(L))
        return push_io_failure(L, w);
    t->state = TASK_WAITING; /* for good: nothing wakes it */
    return lua_yield(L, 0);
}

static void check_records_format(lua_State *L, const struct writer *w)
{
    if (w->format == FORMAT_TEXT)
        luaL_argerror(L, 1, "a text writer takes write_encoded only");
}

/* nil, "record N: field 'x': why" (N only from write_many). */
static int push_encode_failure(lua_State *L, const struct enc *e, lua_Integer record)
{
    lua_pushnil(L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    if (record > 0) {
        lua_pushfstring(L, "record %I: ", record);
        luaL_addvalue(&b);
    }
    if (e->field) {
        lua_pushfstring(L, "field '%s': ", e->field);
        luaL_addvalue(&b);
    }
    luaL_addstring(&b, e->err);
    luaL_pushresult(&b);
    return 2;
}

/* Pushes the field names and the tables the encoders read. */
static void push_frame(lua_State *L, const struct writer *w, struct frame *f)
{
    luaL_checkstack(L, w->nfields + 16, "too many fields");
    lua_getiuservalue(L, 1, UV_FIELDSET);
    f->fieldset = lua_gettop(L);
    lua_getiuservalue(L, 1, UV_PATHS);
    f->paths = lua_gettop(L);
    lua_getiuservalue(L, 1, UV_FIELDS);
    int names = lua_gettop(L);
    f->names = names + 1;
    for (int i = 1; i <= w->nfields; i++)
        lua_rawgeti(L, names, i);
}

/* w:write(record) -> true | nil, err */
static int l_write(lua_State *L)
{
    struct writer *w = check_open_writer(L);
    check_records_format(L, w);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    if (w->out.err)
        return io_failure(L, w);
    struct frame f;
    push_frame(L, w, &f);
    struct enc e = {.L = L, .w = w, .f = &f};
    switch (write_record(&e, 2)) {
    case WRITTEN:
        lua_pushboolean(L, 1);
        return 1;
    case NOT_ENCODED:
        return push_encode_failure(L, &e, 0);
    default:
        return io_failure(L, w);
    }
}

/* w:write_many(records) -> true | nil, err. Stops at the first record
 * that fails; those before it are written. */
static int l_write_many(lua_State *L)
{
    struct writer *w = check_open_writer(L);
    check_records_format(L, w);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    lua_Integer n = (lua_Integer)lua_rawlen(L, 2);
    for (lua_Integer i = 1; i <= n; i++) {
        if (lua_rawgeti(L, 2, i) != LUA_TTABLE)
            return luaL_argerror(
                L, 2, lua_pushfstring(L, "record %I is a %s, not a table", i, luaL_typename(L, -1)));
        lua_pop(L, 1);
    }
    if (w->out.err)
        return io_failure(L, w);
    struct frame f;
    push_frame(L, w, &f);
    struct enc e = {.L = L, .w = w, .f = &f};
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, 2, i);
        enum outcome o = write_record(&e, lua_gettop(L));
        lua_pop(L, 1);
        if (o == NOT_ENCODED)
            return push_encode_failure(L, &e, i);
        if (o == IO_FAILED)
            return io_failure(L, w);
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* w:encode_many(records) -> text, n | nil, err: the records as this
 * writer would write them, without writing — so a caller can put chunks
 * in an order of its own (gitfleet fetch writes owners in input order).
 * JSON elements are joined by ",\n"; write_encoded adds the separator
 * before a chunk. */
static int l_encode_many(lua_State *L)
{
    struct writer *w = check_open_writer(L);
    check_records_format(L, w);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    lua_Integer n = (lua_Integer)lua_rawlen(L, 2);
    struct frame f;
    push_frame(L, w, &f);
    struct enc e = {.L = L, .w = w, .f = &f};
    struct fleet_buf *b = &w->chunk;
    fleet_buf_reset(b);
    for (lua_Integer i = 1; i <= n; i++) {
        if (lua_rawgeti(L, 2, i) != LUA_TTABLE)
            return luaL_argerror(
                L, 2, lua_pushfstring(L, "record %I is a %s, not a table", i, luaL_typename(L, -1)));
        bool ok = encode_record(&e, lua_gettop(L), b, i > 1);
        lua_pop(L, 1);
        if (!ok || b->failed) {
            if (!e.err)
                e.err = "out of memory";
            return push_encode_failure(L, &e, i);
        }
    }
    lua_pushlstring(L, b->data ? b->data : "", b->len);
    lua_pushinteger(L, n);
    return 2;
}

/* w:write_encoded(text, n) -> true | nil, err: a chunk from encode_many
 * holding n records. */
static int l_write_encoded(lua_State *L)
{
    struct writer *w = check_open_writer(L);
    size_t len;
    const char *text = luaL_checklstring(L, 2, &len);
    lua_Integer n = luaL_checkinteger(L, 3);
    luaL_argcheck(L, n >= 0, 3, "must not be negative");
    if (w->out.err)
        return io_failure(L, w);
    if (n == 0 && w->format != FORMAT_TEXT) {
        lua_pushboolean(L, 1);
        return 1;
    }
    fleet_out_begin(&w->out);
    if (w->format == FORMAT_JSON && w->count > 0)
        fleet_buf_literal(&w->out.buf, ",\n");
    fleet_buf_add(&w->out.buf, text, len);
    int err = commit_records(w, n);
    if (err == ENOMEM) {
        lua_pushnil(L);
        lua_pushliteral(L, "out of memory");
        return 2;
    }
    if (err)
        return io_failure(L, w);
    lua_pushboolean(L, 1);
    return 1;
}

/* w:flush() -> true | nil, err. A path's file is still the temporary one:
 * flushing sends the records to it, not to the path. */
static int l_flush(lua_State *L)
{
    struct writer *w = check_open_writer(L);
    if (fleet_out_flush(&w->out))
        return io_failure(L, w);
    lua_pushboolean(L, 1);
    return 1;
}

/* w:count() -> records written */
static int l_count(lua_State *L)
{
    lua_pushinteger(L, check_writer(L)->count);
    return 1;
}

/* Whether a path's temporary file is still waiting for commit or discard. */
static bool file_pending(const struct writer *w) { return w->to_path && w->file.fd >= 0; }

/* Ends the JSON array and closes the stream: all of close_writer but the
 * file's commit or removal. 0 or errno. */
static int end_stream(struct writer *w, bool keep)
{
    if (!w->closed) {
        w->closed = true;
        if (w->format == FORMAT_JSON && !w->out.err && (keep || !w->to_path || w->file.direct)) {
            fleet_out_begin(&w->out);
            fleet_buf_literal(&w->out.buf, "]\n");
            fleet_out_commit(&w->out);
        }
        if (w->to_path && !w->file.direct && !keep)
            w->out.committed = 0; /* nothing more to send to a file removed anyway */
    }
    return fleet_out_close(&w->out);
}

/* Ends the JSON array and closes; keep: rename a path's temporary file
 * over it, else remove it (stdout and devices are only flushed: what went
 * out cannot be taken back). 0 or errno; the same every time. While the
 * commit runs in the background, the commit decides: nothing here. */
static int close_writer(struct writer *w, bool keep)
{
    if (w->committing)
        return 0;
    int err = end_stream(w, keep);
    if (file_pending(w)) {
        if ((keep || w->file.direct) && !err)
            err = w->out.err = fleet_atomic_commit(&w->file);
        else
            fleet_atomic_discard(&w->file);
    }
    return err;
}

/* A path's commit (fsync, rename, fsync of the folder) waited for off the
 * event loop: on a slow disk it takes long, and every other request of the
 * run would wait with it. Each waiting commit holds its file open: beyond
 * COMMITS_AT_ONCE a close commits on the loop, as outside a task, so that
 * a burst of closes (thousands of tasks, each with a writer) cannot run
 * out of file descriptors while the thread catches up. */
#define COMMITS_AT_ONCE 16

struct commit_wait {
    struct fleet_host *host;
    struct fleet_task *task;
    struct writer *w;
    int writer_ref; /* keeps the writer alive until the commit is over */
    int result;
};

static int commit_in_background(void *arg)
{
    struct commit_wait *c = arg;
    return fleet_atomic_commit(&c->w->file);
}

static void commit_over(void *arg, int result)
{
    struct commit_wait *c = arg;
    c->result = result;
    c->w->committing = false;
    if (c->task->state == TASK_WAITING) {
        fleet_sched_wake(c->host->sched, c->task);
        return;
    }
    luaL_unref(c->host->L, LUA_REGISTRYINDEX, c->writer_ref); /* the run was abandoned */
    free(c);
}

static int close_k(lua_State *L, int status, lua_KContext ctx)
{
    struct commit_wait *c = (struct commit_wait *)ctx;
    struct writer *w = c->w;
    int result = c->result;
    (void)status;
    luaL_unref(L, LUA_REGISTRYINDEX, c->writer_ref);
    free(c);
    if (result) {
        w->out.err = result;
        return io_failure(L, w);
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* Starts the commit of w's file in the background for the current task,
 * which then yields with the result; NULL (nothing started) where that
 * cannot be done. */
static struct commit_wait *commit_later(lua_State *L, struct writer *w)
{
    struct fleet_sched *sched = w->host ? w->host->sched : NULL;
    struct fleet_task *t = sched ? fleet_sched_current(sched, L) : NULL;
    if (!t || !lua_isyieldable(L))
        return NULL;
    struct fleet_background *bg = fleet_host_background(w->host);
    if (!bg || fleet_background_outstanding(bg) >= COMMITS_AT_ONCE)
        return NULL;
    struct commit_wait *c = malloc(sizeof *c);
    if (!c)
        return NULL;
    lua_pushvalue(L, 1);
    *c = (struct commit_wait){.host = w->host, .task = t, .w = w, .writer_ref = luaL_ref(L, LUA_REGISTRYINDEX)};
    w->committing = true;
    if (!fleet_background_submit(bg, commit_in_background, commit_over, c)) {
        w->committing = false;
        luaL_unref(L, LUA_REGISTRYINDEX, c->writer_ref);
        free(c);
        return NULL;
    }
    t->state = TASK_WAITING;
    return c;
}

/* w:close() -> true | nil, err: the records are in the path now. After
 * SIGINT or SIGTERM the path is left as it was instead. In a task, the
 * file's commit runs off the event loop while the task waits. */
static int l_close(lua_State *L)
{
    struct writer *w = check_writer(L);
    if (w->committing)
        return luaL_error(L, "%s is being closed by another task", w->name);
    bool interrupted = fleet_signal_received && file_pending(w) && !w->file.direct;
    if (interrupted) {
        close_writer(w, false);
        lua_pushnil(L);
        lua_pushfstring(L, "the run was interrupted; %s was left as it was", w->name);
        return 2;
    }
    if (file_pending(w) && !w->file.direct && !w->closed) {
        if (end_stream(w, true)) {
            fleet_atomic_discard(&w->file);
            return io_failure(L, w);
        }
        struct commit_wait *c = commit_later(L, w);
        if (c)
            return lua_yieldk(L, 0, (lua_KContext)c, close_k);
    }
    if (close_writer(w, true))
        return io_failure(L, w);
    lua_pushboolean(L, 1);
    return 1;
}

/* One fleet.core.sync_written: the files, and the task that waits while a
 * thread of its own syncs them. */
struct sync_wait {
    struct fleet_host *host;
    struct fleet_task *task;
    int list_ref; /* keeps the writers alive until the sync is over */
    struct fleet_atomic **files;
    size_t n, failed;
    int result;
};

static int sync_in_background(void *arg)
{
    struct sync_wait *c = arg;
    return fleet_atomic_sync(c->files, c->n, &c->failed);
}

static void sync_over(void *arg, int result)
{
    struct sync_wait *c = arg;
    c->result = result;
    if (c->task->state == TASK_WAITING) {
        fleet_sched_wake(c->host->sched, c->task);
        return;
    }
    luaL_unref(c->host->L, LUA_REGISTRYINDEX, c->list_ref); /* the run was abandoned */
    free(c->files);
    free(c);
}

/* true, or nil and "cannot sync NAME: reason" naming the first that
 * failed. Stack: [list]. */
static int sync_result(lua_State *L, struct sync_wait *c)
{
    int result = c->result;
    if (result) {
        lua_rawgeti(L, 1, (lua_Integer)c->failed + 1);
        struct writer *w = lua_touserdata(L, -1);
        lua_pushnil(L);
        lua_pushfstring(L, "cannot sync %s: %s", w && w->name ? w->name : "a file", strerror(result));
    }
    luaL_unref(L, LUA_REGISTRYINDEX, c->list_ref);
    free(c->files);
    free(c);
    if (result)
        return 2;
    lua_pushboolean(L, 1);
    return 1;
}

static int sync_k(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    return sync_result(L, (struct sync_wait *)ctx);
}

/* fleet.core.sync_written(writers) -> true | nil, err: the files of these
 * closed writers (opened with sync_later) are on disk under their names:
 * one fsync each and one of each folder, together, which costs far less
 * than each file synced alone as it closed. In a task, the task waits
 * while a thread of its own syncs. */
static int l_sync_written(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_Integer n = luaL_len(L, 1);
    luaL_argcheck(L, n >= 0 && n <= 1000000, 1, "too many writers");
    struct sync_wait *c = calloc(1, sizeof *c);
    struct fleet_atomic **files = calloc((size_t)n + 1, sizeof *files);
    if (!c || !files) {
        free(c);
        free(files);
        return luaL_error(L, "not enough memory");
    }
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, 1, i);
        struct writer *w = luaL_testudata(L, -1, WRITER_META);
        lua_pop(L, 1);
        if (!w || w->committing || file_pending(w)) {
            free(c);
            free(files);
            return luaL_argerror(L, 1, "expected closed writers");
        }
        files[i - 1] = &w->file;
    }
    lua_pushvalue(L, 1);
    *c = (struct sync_wait){.host = fleet_host_from(L), .files = files, .n = (size_t)n,
                            .list_ref = luaL_ref(L, LUA_REGISTRYINDEX)};
    struct fleet_sched *sched = c->host ? c->host->sched : NULL;
    struct fleet_task *t = sched ? fleet_sched_current(sched, L) : NULL;
    struct fleet_background *bg = t && lua_isyieldable(L) ? fleet_host_background(c->host) : NULL;
    if (bg && n > 0) {
        c->task = t;
        if (fleet_background_submit(bg, sync_in_background, sync_over, c)) {
            t->state = TASK_WAITING;
            return lua_yieldk(L, 0, (lua_KContext)c, sync_k);
        }
    }
    c->result = fleet_atomic_sync(files, c->n, &c->failed);
    return sync_result(L, c);
}

/* w:discard() -> true: closes, leaving a path as it was. */
static int l_discard(lua_State *L)
{
    struct writer *w = check_writer(L);
    if (w->committing)
        return luaL_error(L, "%s is being closed by another task", w->name);
    close_writer(w, false);
    lua_pushboolean(L, 1);
    return 1;
}

/* __close (with the error that ends the scope, if any) and __gc (without):
 * only a scope left normally replaces a path. Nobody is there to see an
 * error but the log; a closed stdout is no error (see the top). */
static int l_close_quietly(lua_State *L)
{
    struct writer *w = check_writer(L);
    bool scope_ended_well = lua_gettop(L) >= 2 && lua_isnil(L, 2) && !fleet_signal_received;
    bool was_open = !w->closed && w->out.fd >= 0;
    bool left_as_it_was = file_pending(w) && !w->file.direct && !scope_ended_well;
    if (close_writer(w, scope_ended_well) && was_open) {
        if (reader_gone(w) && w->host && w->host->sched)
            fleet_sched_abandon(w->host->sched, SIGPIPE);
        else if (!reader_gone(w))
            fleet_log(FLEET_LOG_WARN, "cannot write to %s: %s", w->name ? w->name : "output",
                      strerror(w->out.err));
    } else if (left_as_it_was && !fleet_signal_received) {
        fleet_log(FLEET_LOG_WARN, "%s was left as it was: its writer was never closed", w->name);
    }
    return 0;
}

static int l_gc(lua_State *L)
{
    l_close_quietly(L);
    struct writer *w = check_writer(L);
    if (w->to_path && !file_pending(w))
        fleet_atomic_discard(&w->file); /* a committed file never synced: its descriptor */
    fleet_buf_free(&w->keys);
    fleet_buf_free(&w->scratch);
    fleet_buf_free(&w->chunk);
    free(w->key_at);
    free(w->dotted);
    free(w->ents);
    free(w->shape);
    free(w->shape_order);
    free(w->shape_tmp);
    w->shape = NULL;
    w->shape_order = NULL;
    w->shape_tmp = NULL;
    free(w->name);
    w->key_at = NULL;
    w->dotted = NULL;
    w->ents = NULL;
    w->name = NULL;
    return 0;
}

static int l_tostring(lua_State *L)
{
    struct writer *w = check_writer(L);
    static const char *const names[] = {"ndjson", "json", "csv", "text"};
    lua_pushfstring(L, "fleet.writer (%s, %s%s)", names[w->format], w->name ? w->name : "?",
                    w->closed ? ", closed" : "");
    return 1;
}

static void *checked(lua_State *L, void *p)
{
    if (!p)
        luaL_error(L, "not enough memory");
    return p;
}

/* opts.fields -> the user values and the pre-encoded keys. Stack:
 * [format path opts writer] */
static void read_fields(lua_State *L, struct writer *w)
{
    lua_newtable(L); /* fieldset */
    lua_newtable(L); /* paths */
    /* [format path opts writer fieldset paths] */
    int fieldset = 5, paths = 6;
    if (lua_getfield(L, 3, "fields") == LUA_TNIL) {
        lua_newtable(L);
        lua_replace(L, -2);
    } else if (!lua_istable(L, -1)) {
        luaL_argerror(L, 3, "fields must be an array of strings");
    }
    int fields = 7;
    lua_Integer n = (lua_Integer)lua_rawlen(L, fields);
    if (n > 100000)
        luaL_argerror(L, 3, "too many fields");
    w->nfields = (int)n;
    w->key_at = checked(L, calloc((size_t)n + 1, sizeof *w->key_at));
    w->dotted = checked(L, calloc((size_t)n + 1, sizeof *w->dotted));
    for (lua_Integer i = 1; i <= n; i++) {
        if (lua_rawgeti(L, fields, i) != LUA_TSTRING || lua_rawlen(L, -1) == 0)
            luaL_argerror(L, 3, lua_pushfstring(L, "fields[%I] must be a non-empty string", i));
        size_t len;
        const char *name = lua_tolstring(L, -1, &len);
        lua_pushvalue(L, -1);
        if (lua_rawget(L, fieldset) != LUA_TNIL)
            luaL_argerror(L, 3, lua_pushfstring(L, "field '%s' is listed twice", name));
        lua_pop(L, 1);
        lua_pushvalue(L, -1);
        lua_pushboolean(L, 1);
        lua_rawset(L, fieldset);
        if (i > 1)
            fleet_buf_putc(&w->keys, ',');
        fleet_json_string(&w->keys, name, len);
        fleet_buf_putc(&w->keys, ':');
        w->key_at[i] = w->keys.len;
        /* "a.b.c" -> {"a", "b", "c"}; a name with an empty part is only
         * ever a key as written. */
        const char *dot = memchr(name, '.', len);
        bool path = dot && name[0] != '.' && name[len - 1] != '.' && !strstr(name, "..");
        if (path) {
            w->dotted[i - 1] = true;
            lua_newtable(L);
            lua_Integer k = 0;
            const char *p = name, *end = name + len;
            while (p < end) {
                const char *q = memchr(p, '.', (size_t)(end - p));
                if (!q)
                    q = end;
                lua_pushlstring(L, p, (size_t)(q - p));
                lua_rawseti(L, -2, ++k);
                p = q + 1;
            }
            lua_rawseti(L, paths, i);
        }
        lua_pop(L, 1);
    }
    if (w->keys.failed)
        luaL_error(L, "not enough memory");
    lua_setiuservalue(L, 4, UV_FIELDS);
    lua_setiuservalue(L, 4, UV_PATHS);
    lua_setiuservalue(L, 4, UV_FIELDSET);
}

/* core.writer(format, path_or_nil, opts) -> writer | nil, err */
static int l_writer(lua_State *L)
{
    static const char *const formats[] = {"ndjson", "json", "csv", "text", NULL};
    enum format format = (enum format)luaL_checkoption(L, 1, NULL, formats);
    size_t path_len = 0;
    const char *path = luaL_optlstring(L, 2, NULL, &path_len);
    luaL_argcheck(L, !path || strlen(path) == path_len, 2, "a path holds no NUL byte");
    if (!lua_isnoneornil(L, 3))
        luaL_checktype(L, 3, LUA_TTABLE);
    lua_settop(L, 3);
    if (lua_isnil(L, 3)) {
        lua_newtable(L);
        lua_replace(L, 3);
    }

    struct writer *w = lua_newuserdatauv(L, sizeof *w, UV_COUNT);
    memset(w, 0, sizeof *w);
    w->out.fd = -1;
    w->out.closed = true;
    w->file.fd = -1;
    w->host = fleet_host_from(L);
    w->closed = true; /* until the file is open: __gc has nothing to flush */
    w->format = format;
    luaL_setmetatable(L, WRITER_META);
    /* [format path opts writer] */

    read_fields(L, w);
    lua_getfield(L, 3, "all_fields");
    w->all_fields = lua_toboolean(L, -1);
    lua_getfield(L, 3, "sync_later");
    bool sync_later = lua_toboolean(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, 3, "null");
    if (lua_type(L, -1) == LUA_TLIGHTUSERDATA) {
        w->has_null = true;
        w->null = lua_touserdata(L, -1);
    } else if (!lua_isnil(L, -1)) {
        luaL_argerror(L, 3, "null must be a light userdata (cjson.null)");
    }
    lua_pop(L, 2);
    if (format == FORMAT_CSV && w->nfields == 0)
        luaL_argerror(L, 3, "csv needs fields, the columns");
    if (format == FORMAT_CSV && w->all_fields)
        luaL_argerror(L, 3, "all_fields is for json and ndjson; csv has fixed columns");

    bool to_stdout = !path || strcmp(path, "-") == 0;
    w->name = checked(L, strdup(to_stdout ? "stdout" : path));
    int fd = STDOUT_FILENO;
    if (!to_stdout) {
        int err = fleet_atomic_open(&w->file, path);
        if (err) {
            lua_pushnil(L);
            lua_pushfstring(L, "cannot write to %s: %s", path, strerror(err));
            return 2;
        }
        w->to_path = true;
        w->file.sync_later = sync_later; /* the caller syncs: fleet.core.sync_written */
        fd = w->file.fd;
    }
    fleet_out_init(&w->out, fd, false); /* a path's descriptor is w->file's */
    w->closed = false;

    /* The start of the file is a record of its own: a CSV header, or the
     * JSON array's "[", so that a writer closed at once still leaves a
     * valid file. */
    fleet_out_begin(&w->out);
    if (format == FORMAT_JSON) {
        fleet_buf_putc(&w->out.buf, '[');
    } else if (format == FORMAT_CSV) {
        lua_getiuservalue(L, 4, UV_FIELDS);
        for (int i = 1; i <= w->nfields; i++) {
            size_t len;
            lua_rawgeti(L, -1, i);
            const char *name = lua_tolstring(L, -1, &len);
            if (i > 1)
                fleet_buf_putc(&w->out.buf, ',');
            fleet_csv_field(&w->out.buf, name, len);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
        fleet_buf_literal(&w->out.buf, "\r\n");
    }
    if (fleet_out_commit(&w->out) == ENOMEM)
        return luaL_error(L, "not enough memory");
    lua_settop(L, 4);
    return 1;
}

void fleet_output_register(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"write", l_write}, {"write_many", l_write_many}, {"encode_many", l_encode_many},
        {"write_encoded", l_write_encoded}, {"flush", l_flush},
        {"close", l_close}, {"discard", l_discard}, {"count", l_count}, {NULL, NULL},
    };
    static const luaL_Reg meta[] = {
        {"__gc", l_gc},
        {"__close", l_close_quietly},
        {"__tostring", l_tostring},
        {NULL, NULL},
    };
    static const luaL_Reg funcs[] = {{"writer", l_writer}, {"sync_written", l_sync_written}, {NULL, NULL}};
    if (luaL_newmetatable(L, WRITER_META)) {
        luaL_setfuncs(L, meta, 0);
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    lua_pushvalue(L, lua_upvalueindex(1));
    luaL_setfuncs(L, funcs, 1);
}
