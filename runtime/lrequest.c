/* fleet.core.request: one API call through the pool, retries and cache,
 * as seen from Lua. The task yields until the request is finished; the
 * continuation turns the C response into Lua values. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "apps.h"
#include "headers.h"
#include "host.h"
#include "http.h"
#include "json.h"
#include "lfleet.h"
#include "pool.h"
#include "sched.h"

#define ERROR_META "fleet.error"

static int l_error_tostring(lua_State *L)
{
    lua_getfield(L, 1, "message");
    if (!lua_isstring(L, -1)) {
        lua_getfield(L, 1, "kind");
        lua_pushfstring(L, "%s error", lua_isstring(L, -1) ? lua_tostring(L, -1) : "unknown");
    }
    return 1;
}

void fleet_push_error(lua_State *L, const char *kind, const char *message)
{
    lua_createtable(L, 0, 8);
    lua_pushstring(L, kind);
    lua_setfield(L, -2, "kind");
    if (message) {
        lua_pushstring(L, message);
        lua_setfield(L, -2, "message");
    }
    luaL_setmetatable(L, ERROR_META);
}

/* fleet.core.error(tbl): gives a Lua-made error table the error metatable. */
static int l_error(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    luaL_setmetatable(L, ERROR_META);
    return 1;
}

/* Response headers as a table: lower-case names; repeated names joined by
 * ", " as HTTP allows; the status line skipped. */
static void push_headers(lua_State *L, const char *block, size_t len)
{
    lua_createtable(L, 0, 24);
    const char *p = block, *end = block + len;
    char name[128];
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = eol ? eol : end;
        const char *colon = memchr(p, ':', (size_t)(line_end - p));
        if (colon && (size_t)(colon - p) < sizeof name && colon > p) {
            size_t n = (size_t)(colon - p);
            for (size_t i = 0; i < n; i++)
                name[i] = (char)((p[i] >= 'A' && p[i] <= 'Z') ? p[i] - 'A' + 'a' : p[i]);
            const char *v = colon + 1;
            const char *ve = line_end;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            lua_pushlstring(L, name, n);
            if (lua_rawget(L, -2) == LUA_TSTRING) {
                lua_pushliteral(L, ", ");
                lua_pushlstring(L, v, (size_t)(ve - v));
                lua_concat(L, 3);
            } else {
                lua_pop(L, 1);
                lua_pushlstring(L, v, (size_t)(ve - v));
            }
            lua_pushlstring(L, name, n);
            lua_insert(L, -2);
            lua_rawset(L, -3);
        }
        p = eol ? eol + 1 : end;
    }
}

/* resp.data: the body decoded straight from the transfer's buffer (no
 * copy of the text as a Lua string), with decode.items and decode.keep
 * (json.h); or resp.decode_error. An empty body is an empty table.
 * Stack: [decode, resp]. */
static void push_decoded(lua_State *L, const struct fleet_response *resp)
{
    if (resp->body_len == 0) {
        lua_newtable(L);
        lua_setfield(L, -2, "data");
        return;
    }
    const char *items = NULL;
    int keep = 0;
    if (lua_istable(L, 1)) {
        if (lua_getfield(L, 1, "items") == LUA_TSTRING)
            items = lua_tostring(L, -1); /* stays on the stack while used */
        if (lua_getfield(L, 1, "keep") == LUA_TTABLE)
            keep = lua_gettop(L);
    }
    int ok = fleet_json_decode(L, resp->body, resp->body_len, items, keep);
    lua_setfield(L, 2, ok ? "data" : "decode_error");
    lua_settop(L, 2);
}

static int request_k(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    struct fleet_host *host = fleet_host_from(L);
    struct fleet_request *r = (struct fleet_request *)ctx;
    struct fleet_task *t = fleet_sched_current(host->sched, L);
    t->waiting_on = NULL;
    const struct fleet_response *resp = fleet_http_response(r);
    /* opts.secret_for: the body is an App installation's token, which goes
     * to C and never to Lua (the provider's name is still at index 1). */
    if (lua_gettop(L) >= 4 && lua_istable(L, 4) && lua_getfield(L, 4, "secret_for") == LUA_TSTRING) {
        int n = fleet_apps_push_taken(L, host, lua_tostring(L, 1), lua_tostring(L, -1), resp);
        fleet_http_unref(host, r);
        return n;
    }
    /* opts.decode, if asked for, is still at stack index 4 (the options). */
    int decode = 0;
    if (lua_gettop(L) >= 4 && lua_istable(L, 4)) {
        int type = lua_getfield(L, 4, "decode");
        if (type == LUA_TTABLE || (type == LUA_TBOOLEAN && lua_toboolean(L, -1))) {
            lua_replace(L, 1);
            decode = 1;
        }
    }
    lua_settop(L, decode);
    if (resp->err_kind == ERR_NONE) {
        lua_createtable(L, 0, 8); /* [decode?, resp] */
        lua_pushinteger(L, resp->status);
        lua_setfield(L, -2, "status");
        lua_pushstring(L, resp->url);
        lua_setfield(L, -2, "url");
        push_headers(L, resp->headers ? resp->headers : "", resp->headers_len);
        lua_getfield(L, -1, "content-type");
        const char *ctype = lua_tostring(L, -1);
        bool json = !ctype || strstr(ctype, "json");
        lua_pop(L, 1);
        lua_setfield(L, -2, "headers");
        if (decode && json) {
            push_decoded(L, resp);
        } else {
            lua_pushlstring(L, resp->body ? resp->body : "", resp->body_len);
            lua_setfield(L, -2, "body");
        }
        if (resp->token) {
            lua_pushstring(L, resp->token);
            lua_setfield(L, -2, "token");
        }
        lua_pushboolean(L, resp->from_cache);
        lua_setfield(L, -2, "cached");
        lua_pushinteger(L, resp->attempts);
        lua_setfield(L, -2, "attempts");
        fleet_http_unref(host, r);
        return 1;
    }
    lua_pushnil(L);
    fleet_push_error(L, fleet_err_kind_name(resp->err_kind), resp->err_message);
    if (resp->status > 0) {
        lua_pushinteger(L, resp->status);
        lua_setfield(L, -2, "status");
        push_headers(L, resp->headers ? resp->headers : "", resp->headers_len);
        lua_setfield(L, -2, "headers");
        if (resp->body_len > 0) {
            /* Enough of the body for the server's message, no more. */
            lua_pushlstring(L, resp->body, resp->body_len < 65536 ? resp->body_len : 65536);
            lua_setfield(L, -2, "body");
        }
    }
    lua_pushstring(L, resp->url);
    lua_setfield(L, -2, "url");
    if (resp->reset > 0) {
        lua_pushnumber(L, resp->reset);
        lua_setfield(L, -2, "reset");
    }
    if (resp->retry_after >= 0) {
        lua_pushnumber(L, resp->retry_after);
        lua_setfield(L, -2, "retry_after");
    }
    fleet_http_unref(host, r);
    return 2;
}

enum { MAX_HEADERS = 32, MAX_HEADER_BYTES = 65536 };

/* An HTTP method as providers' APIs use them: 1 to 32 letters (RFC 9110
 * allows more of the token characters; no API needs them). */
static bool is_method(const char *m, size_t len)
{
    if (len == 0 || len > 32)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((m[i] >= 'A' && m[i] <= 'Z') || (m[i] >= 'a' && m[i] <= 'z')))
            return false;
    return true;
}

/* fleet.core.request(provider, method, url [, opts]) -> response | nil, err
 * opts: headers = {name = value}, body = string, token = label,
 *       resource = name, free = bool, cache = bool (GET only, default true),
 *       decode = true | {items =, keep =}: a JSON body becomes resp.data
 *       (json.h) instead of resp.body */
static int l_request(lua_State *L)
{
    struct fleet_host *host = fleet_host_from(L);
    const char *pname = luaL_checkstring(L, 1);
    size_t method_len, url_len;
    const char *method = luaL_checklstring(L, 2, &method_len);
    const char *url = luaL_checklstring(L, 3, &url_len);
    /* libcurl takes C strings: a NUL would cut what is sent short of what
     * was checked, and a method is put on the request line as it is. */
    luaL_argcheck(L, is_method(method, method_len), 2, "not an HTTP method (letters, at most 32)");
    luaL_argcheck(L, strlen(url) == url_len, 3, "a URL holds no NUL byte");
    struct fleet_provider *p = fleet_host_provider(host, pname);
    if (!p)
        return luaL_argerror(L, 1, lua_pushfstring(L, "no provider named '%s'", pname));
    struct fleet_task *t = fleet_sched_current(host->sched, L);
    if (!t)
        return fleet_sched_not_in_task(L, "a request");

    struct fleet_request_spec spec = {
        .provider = p,
        .method = method,
        .url = url,
        .cacheable = strcmp(method, "GET") == 0,
    };
    const char *headers[MAX_HEADERS + 1] = {0};
    int nh = 0;
    lua_settop(L, 4);
    lua_newtable(L); /* [5]: keeps the header strings alive until submission */
    if (!lua_isnoneornil(L, 4)) {
        luaL_checktype(L, 4, LUA_TTABLE);
        if (lua_getfield(L, 4, "headers") == LUA_TTABLE) {
            lua_pushnil(L);
            while (lua_next(L, 6)) {
                if (nh == MAX_HEADERS)
                    return luaL_error(L, "too many headers (at most %d)", MAX_HEADERS);
                if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
                    return luaL_error(L, "opts.headers must map header names to strings");
                size_t klen, vlen;
                const char *k = lua_tolstring(L, -2, &klen);
                const char *v = lua_tolstring(L, -1, &vlen);
                if (strpbrk(k, ":\r\n") || strpbrk(v, "\r\n") || strlen(k) != klen || strlen(v) != vlen)
                    return luaL_error(L, "header '%s' contains a forbidden character", k);
                /* libcurl would fail it as out of memory, which reads as a
                 * network failure and is retried; no server takes one. */
                if (klen + vlen > MAX_HEADER_BYTES)
                    return luaL_error(L, "header '%s' is longer than %d bytes", k, MAX_HEADER_BYTES);
                headers[nh++] = lua_pushfstring(L, "%s: %s", k, v);
                lua_rawseti(L, 5, nh);
                lua_pop(L, 1);
            }
        }
        lua_pop(L, 1);
        if (lua_getfield(L, 4, "body") != LUA_TNIL)
            spec.body = luaL_checklstring(L, -1, &spec.body_len);
        lua_pop(L, 1);
        if (lua_getfield(L, 4, "token") != LUA_TNIL) {
            const char *label = luaL_checkstring(L, -1);
            spec.pinned = fleet_pool_find(host->pool, p, label);
            if (!spec.pinned)
                return luaL_error(L, "provider %s has no token labelled '%s'", pname, label);
        }
        lua_pop(L, 1);
        if (lua_getfield(L, 4, "resource") != LUA_TNIL)
            spec.resource = luaL_checkstring(L, -1);
        lua_pop(L, 1);
        if (lua_getfield(L, 4, "free") != LUA_TNIL)
            spec.free_budget = lua_toboolean(L, -1);
        lua_pop(L, 1);
        if (lua_getfield(L, 4, "cache") != LUA_TNIL)
            spec.cacheable = spec.cacheable && lua_toboolean(L, -1);
        lua_pop(L, 1);
        if (lua_getfield(L, 4, "secret_for") != LUA_TNIL)
            spec.cacheable = false; /* a secret is never stored */
        lua_pop(L, 1);
    }
    spec.headers = headers;
    if (fleet_sched_stopping(host->sched)) {
        lua_pushnil(L);
        fleet_push_error(L, "interrupted", "the run was interrupted; no new requests are started");
        return 2;
    }
    const char *err = NULL;
    struct fleet_request *r = fleet_http_submit(host, t, &spec, &err);
    if (!r)
        return luaL_error(L, "%s", err);
    return lua_yieldk(L, 0, (lua_KContext)r, request_k);
}

static void add_link(const char *rel, size_t rellen, const char *url, size_t urllen, void *ud)
{
    lua_State *L = ud;
    lua_pushlstring(L, rel, rellen);
    lua_pushlstring(L, url, urllen);
    lua_rawset(L, -3);
}

/* fleet.core.parse_link(header) -> {next = url, last = url, ...} */
static int l_parse_link(lua_State *L)
{
    size_t len;
    const char *v = luaL_optlstring(L, 1, "", &len);
    lua_newtable(L);
    fleet_parse_link(v, len, add_link, L);
    return 1;
}

/* fleet.core.http_waiting() -> requests waiting for a token, a slot or
 * their time: a worker takes more work only while none waits, and leaves
 * the rest of the queue to others. */
static int l_http_waiting(lua_State *L)
{
    lua_pushinteger(L, fleet_http_pending(fleet_host_from(L)));
    return 1;
}

void fleet_request_register(lua_State *L)
{
    static const luaL_Reg meta[] = {{"__tostring", l_error_tostring}, {NULL, NULL}};
    static const luaL_Reg funcs[] = {
        {"request", l_request}, {"parse_link", l_parse_link}, {"error", l_error}, {"http_waiting", l_http_waiting},
        {NULL, NULL},
    };
    luaL_newmetatable(L, ERROR_META);
    luaL_setfuncs(L, meta, 0);
    lua_pop(L, 1);
    lua_pushvalue(L, lua_upvalueindex(1));
    luaL_setfuncs(L, funcs, 1);
}
