/* fleet.core.redis, redis_script, redis_eval: Redis commands for Lua (the
 * work queue is written on them), on the shared: connection. A call
 * suspends its task until the reply comes; the loop keeps running the
 * others. The reply is turned into Lua values when it arrives (hiredis
 * frees it after the callback) and kept in the registry until the task
 * resumes. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "host.h"
#include "lfleet.h"
#include "log.h"
#include "lstate.h"
#include "pool_shared.h"
#include "redis.h"
#include "sched.h"

#define SCRIPT_META "fleet.redis_script"
#define MAX_ARGS 4096

struct redis_wait {
    struct fleet_host *host;
    struct fleet_task *task;
    int result_ref; /* registry: {ok=bool, value=...} */
};

struct lua_script {
    struct fleet_redis_script s;
    char *source;
};

static struct fleet_redis *connection(lua_State *L, struct fleet_host *host)
{
    if (!host->shared)
        luaL_error(L, "Redis is not configured: add a shared: section with url (see docs/scale-out.md)");
    return fleet_shared_redis(host->shared);
}

/* Pushes a reply as Lua values: strings, integers, arrays (a nil inside
 * an array is false); an error reply is {err=message}. */
static void push_reply(lua_State *L, const redisReply *r, int depth)
{
    luaL_checkstack(L, 4, "Redis reply too deep");
    switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
        lua_pushlstring(L, r->str, r->len);
        break;
    case REDIS_REPLY_INTEGER:
        lua_pushinteger(L, (lua_Integer)r->integer);
        break;
    case REDIS_REPLY_ARRAY:
        if (depth > 32)
            luaL_error(L, "Redis reply nested too deeply");
        lua_createtable(L, (int)r->elements, 0);
        for (size_t i = 0; i < r->elements; i++) {
            if (r->element[i]->type == REDIS_REPLY_NIL)
                lua_pushboolean(L, 0);
            else
                push_reply(L, r->element[i], depth + 1);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        break;
    case REDIS_REPLY_ERROR:
        lua_createtable(L, 0, 1);
        lua_pushlstring(L, r->str, r->len);
        lua_setfield(L, -2, "err");
        break;
    default:
        lua_pushnil(L);
    }
}

struct build_args {
    const redisReply *reply;
    int ref;
};

static int build_result(lua_State *L)
{
    struct build_args *a = lua_touserdata(L, 1);
    lua_createtable(L, 0, 2);
    if (a->reply) {
        push_reply(L, a->reply, 0);
        lua_setfield(L, -2, "value");
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "ok");
    }
    a->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

static void on_reply(struct fleet_redis *r, redisReply *reply, void *data)
{
    struct redis_wait *w = data;
    (void)r;
    if (!w->host->sched) {
        free(w); /* the run is over: nobody waits any more */
        return;
    }
    struct build_args a = {reply, LUA_NOREF};
    lua_State *L = w->host->L;
    if (fleet_lstate_protect(L, build_result, &a) != LUA_OK)
        lua_pop(L, 1); /* out of memory: the task sees a lost reply */
    w->result_ref = a.ref;
    fleet_sched_wake(w->host->sched, w->task);
}

/* nil, {kind="network", message=...}: the two results of a call that
 * could not reach Redis. */
static int push_failure(lua_State *L, const char *fmt, const char *a, const char *b)
{
    const char *msg = lua_pushfstring(L, fmt, a, b);
    lua_pushnil(L);
    fleet_push_error(L, "network", msg);
    lua_remove(L, -3);
    return 2;
}

static int reply_k(lua_State *L, int status, lua_KContext ctx)
{
    struct redis_wait *w = (struct redis_wait *)ctx;
    struct fleet_redis *r = fleet_shared_redis(w->host->shared);
    (void)status;
    int ref = w->result_ref;
    free(w);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
    int result = lua_gettop(L);
    bool ok = lua_type(L, result) == LUA_TTABLE && lua_getfield(L, result, "ok") == LUA_TBOOLEAN;
    if (!ok)
        return push_failure(L, "lost the connection to Redis at %s before the reply", fleet_redis_name(r), "");
    lua_getfield(L, result, "value");
    if (lua_type(L, -1) == LUA_TTABLE && lua_getfield(L, -1, "err") == LUA_TSTRING) {
        lua_pushnil(L);
        fleet_push_error(L, "redis", lua_tostring(L, -2));
        return 2;
    }
    if (lua_type(L, -1) == LUA_TNIL && lua_type(L, -2) == LUA_TTABLE)
        lua_pop(L, 1); /* the "err" lookup of an array */
    return 1;
}

/* Collects string arguments from index `from` on; returns their count. */
static int collect(lua_State *L, int from, const char **argv, size_t *lens, int max)
{
    int n = 0;
    for (int i = from; i <= lua_gettop(L); i++) {
        if (n >= max)
            luaL_error(L, "too many arguments for one Redis command (at most %d)", max);
        if (lua_type(L, i) != LUA_TSTRING && lua_type(L, i) != LUA_TNUMBER)
            luaL_argerror(L, i, "expected a string or a number");
        argv[n] = lua_tolstring(L, i, &lens[n]);
        n++;
    }
    return n;
}

static int wait_reply(lua_State *L, struct fleet_host *host, struct redis_wait *w, int rc)
{
    if (rc != 0) {
        free(w);
        struct fleet_redis *r = fleet_shared_redis(host->shared);
        return push_failure(L, "Redis at %s is unreachable: %s", fleet_redis_name(r), fleet_redis_waiting(r));
    }
    w->task->state = TASK_WAITING;
    return lua_yieldk(L, 0, (lua_KContext)w, reply_k);
}

static struct redis_wait *new_wait(lua_State *L, struct fleet_host *host, const char *what)
{
    struct fleet_task *t = fleet_sched_current(host->sched, L);
    if (!t)
        fleet_sched_not_in_task(L, what);
    struct redis_wait *w = calloc(1, sizeof *w);
    if (!w)
        luaL_error(L, "out of memory");
    w->host = host;
    w->task = t;
    w->result_ref = LUA_NOREF;
    return w;
}

static int send_command(lua_State *L, bool blocking)
{
    struct fleet_host *host = fleet_host_from(L);
    struct fleet_redis *r = connection(L, host);
    luaL_checkstring(L, 1);
    const char *argv[64];
    size_t lens[64];
    int argc = collect(L, 1, argv, lens, 64);
    if (blocking)
        fleet_shared_idle(host->shared);
    struct redis_wait *w = new_wait(L, host, blocking ? "fleet.core.redis_blocking" : "fleet.core.redis");
    int rc = blocking ? fleet_redis_command_blocking(r, on_reply, w, argc, argv, lens)
                      : fleet_redis_command(r, on_reply, w, argc, argv, lens);
    return wait_reply(L, host, w, rc);
}

/* fleet.core.redis(cmd, ...) -> reply | nil, err */
static int l_redis(lua_State *L)
{
    return send_command(L, false);
}

/* fleet.core.redis_blocking(cmd, ...) -> reply | nil, err: a command
 * that waits on the server (XREAD ... BLOCK ms); this process's budget
 * units go back first, as it sends nothing else until the reply. */
static int l_redis_blocking(lua_State *L)
{
    return send_command(L, true);
}

static int script_gc(lua_State *L)
{
    struct lua_script *s = luaL_checkudata(L, 1, SCRIPT_META);
    free(s->source);
    s->source = NULL;
    return 0;
}

/* fleet.core.redis_script(source) -> handle, run by redis_eval with
 * EVALSHA (sent as EVAL the first time, and again after NOSCRIPT). */
static int l_redis_script(lua_State *L)
{
    size_t len;
    const char *src = luaL_checklstring(L, 1, &len);
    struct lua_script *s = lua_newuserdatauv(L, sizeof *s, 0);
    memset(s, 0, sizeof *s);
    if (luaL_newmetatable(L, SCRIPT_META)) {
        lua_pushcfunction(L, script_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    if (!(s->source = malloc(len + 1)))
        return luaL_error(L, "out of memory");
    memcpy(s->source, src, len + 1);
    s->s.name = "lua";
    s->s.source = s->source;
    return 1;
}

/* fleet.core.redis_eval(handle, numkeys, key..., arg...) -> reply | nil, err */
static int l_redis_eval(lua_State *L)
{
    struct fleet_host *host = fleet_host_from(L);
    struct fleet_redis *r = connection(L, host);
    struct lua_script *s = luaL_checkudata(L, 1, SCRIPT_META);
    luaL_checkinteger(L, 2);
    static const char *argv[MAX_ARGS];
    static size_t lens[MAX_ARGS];
    int argc = collect(L, 2, argv, lens, MAX_ARGS);
    struct redis_wait *w = new_wait(L, host, "fleet.core.redis_eval");
    /* The script object must outlive the call: the task's stack holds it. */
    return wait_reply(L, host, w, fleet_redis_eval(r, &s->s, on_reply, w, argc, argv, lens));
}

/* fleet.core.redis_info() -> {url=, up=, waiting=, round_trips=} or nil */
static int l_redis_info(lua_State *L)
{
    struct fleet_host *host = fleet_host_from(L);
    if (!host->shared)
        return 0;
    struct fleet_redis *r = fleet_shared_redis(host->shared);
    lua_createtable(L, 0, 7);
    lua_pushstring(L, fleet_redis_name(r));
    lua_setfield(L, -2, "name");
    lua_pushboolean(L, fleet_redis_up(r));
    lua_setfield(L, -2, "up");
    lua_pushstring(L, fleet_redis_waiting(r));
    lua_setfield(L, -2, "waiting");
    lua_pushstring(L, host->cfg.shared.prefix);
    lua_setfield(L, -2, "prefix");
    lua_pushnumber(L, host->cfg.shared.lease);
    lua_setfield(L, -2, "lease");
    lua_pushinteger(L, host->cfg.shared.max_attempts);
    lua_setfield(L, -2, "max_attempts");
    lua_pushstring(L, fleet_shared_worker(host->shared));
    lua_setfield(L, -2, "worker");
    return 1;
}

/* Commands to send when this process ends: the work queue's give-back of
 * the items it still holds, so that other workers take them at once
 * rather than after shared.lease. Lua registers a function per name
 * (fleet.core.redis_at_exit); the functions are called once, when the run
 * is over and before the Lua state closes, and what they return is sent
 * after the loop's connection is closed (fleet_redis_run_at_exit). So
 * keeping the list of held items current costs the queue nothing but a
 * table update. */
#define AT_EXIT_KEY "fleet.redis_at_exit"

struct at_exit {
    char *what;
    int argc;
    char **argv;
    size_t *lens;
    struct at_exit *next;
};
static struct at_exit *at_exit_list;

static void at_exit_free(struct at_exit *e)
{
    for (int i = 0; e->argv && i < e->argc; i++)
        free(e->argv[i]);
    free(e->argv);
    free(e->lens);
    free(e->what);
    free(e);
}

/* fleet.core.redis_at_exit(name, fn | nil): fn() is called when the run is
 * over and returns nothing, or what, source, numkeys, key..., arg...: a
 * script to run (EVAL) then, whose integer reply counts `what` for the
 * log line. Replaces the function registered under name. */
static int l_redis_at_exit(lua_State *L)
{
    luaL_checkstring(L, 1);
    if (!lua_isnoneornil(L, 2))
        luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_settop(L, 2);
    if (lua_getfield(L, LUA_REGISTRYINDEX, AT_EXIT_KEY) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, LUA_REGISTRYINDEX, AT_EXIT_KEY);
    }
    lua_insert(L, 1); /* [table, name, fn] */
    lua_rawset(L, 1);
    return 0;
}

/* Calls the function at index 1 and turns what it returns into an entry
 * of at_exit_list (run protected: out of memory raises). */
static int collect_one(lua_State *L)
{
    lua_call(L, 0, LUA_MULTRET);
    int n = lua_gettop(L);
    luaL_checkstack(L, LUA_MINSTACK, "at the end of the run"); /* luaL_tolstring's room, past the results */
    if (n == 0 || lua_isnil(L, 1))
        return 0;
    luaL_checkstring(L, 1);
    luaL_checkstring(L, 2);
    luaL_checkinteger(L, 3);
    int argc = n; /* "EVAL", source, numkeys, keys and args: `what` makes way for EVAL */
    struct at_exit *e = calloc(1, sizeof *e);
    if (!e)
        return luaL_error(L, "out of memory");
    e->next = at_exit_list; /* owned by the list from here on, even if half built */
    at_exit_list = e;
    if (!(e->argv = calloc((size_t)argc, sizeof *e->argv)) || !(e->lens = calloc((size_t)argc, sizeof *e->lens)))
        return luaL_error(L, "out of memory");
    e->argc = argc;
    if (!(e->what = strdup(lua_tostring(L, 1))) || !(e->argv[0] = strdup("EVAL")))
        return luaL_error(L, "out of memory");
    e->lens[0] = 4;
    for (int i = 1; i < argc; i++) {
        size_t len;
        const char *v = luaL_tolstring(L, i + 1, &len);
        if (!(e->argv[i] = malloc(len + 1)))
            return luaL_error(L, "out of memory");
        memcpy(e->argv[i], v, len + 1);
        e->lens[i] = len;
        lua_pop(L, 1);
    }
    return 0;
}

void fleet_redis_prepare_at_exit(struct fleet_host *host)
{
    lua_State *L = host->L;
    if (!L || lua_getfield(L, LUA_REGISTRYINDEX, AT_EXIT_KEY) != LUA_TTABLE) {
        if (L)
            lua_pop(L, 1);
        return;
    }
    lua_pushnil(L);
    while (lua_next(L, -2)) { /* [table, name, fn] */
        lua_pushcfunction(L, collect_one);
        lua_insert(L, -2);
        if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
            fleet_log(FLEET_LOG_WARN, "at the end of the run: %s", lua_tostring(L, -1));
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
}

void fleet_redis_run_at_exit(struct fleet_host *host)
{
    while (at_exit_list) {
        struct at_exit *e = at_exit_list;
        at_exit_list = e->next;
        char why[256] = "";
        bool redis = host->cfg.shared.enabled;
        redisReply *reply = redis ? fleet_redis_call_once(&host->cfg.shared, 2.0, e->argc, (const char **)e->argv,
                                                          e->lens, why, sizeof why)
                                  : NULL;
        if (reply && reply->type == REDIS_REPLY_INTEGER && reply->integer > 0)
            fleet_log(FLEET_LOG_INFO, "%lld %s", reply->integer, e->what);
        else if (reply && reply->type == REDIS_REPLY_ERROR)
            fleet_log(FLEET_LOG_WARN, "%s: not done: %.200s", e->what, reply->str);
        else if (!reply && redis)
            fleet_log(FLEET_LOG_WARN, "%s: not done: %s", e->what, why);
        freeReplyObject(reply);
        at_exit_free(e);
    }
}

void fleet_redis_register(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"redis", l_redis}, {"redis_blocking", l_redis_blocking},
        {"redis_script", l_redis_script},
        {"redis_eval", l_redis_eval},
        {"redis_info", l_redis_info},
        {"redis_at_exit", l_redis_at_exit},
        {NULL, NULL},
    };
    lua_pushvalue(L, lua_upvalueindex(1));
    luaL_setfuncs(L, fns, 1);
}
