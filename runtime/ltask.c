/* fleet.spawn, fleet.sleep and task handles: concurrency on the host's
 * scheduler, for scripts and plugins. */
#include <math.h>

#include <lauxlib.h>

#include "host.h"
#include "lfleet.h"
#include "sched.h"

#define TASK_HANDLE "fleet.task"
#define CONDITION "fleet.condition"

struct task_handle {
    struct fleet_task *t;
};

static struct fleet_task *current_task(lua_State *L, struct fleet_host *host, const char *what)
{
    struct fleet_task *t = fleet_sched_current(host->sched, L);
    if (!t)
        fleet_sched_not_in_task(L, what);
    return t;
}

/* fleet.spawn(fn, ...) -> handle */
static int l_spawn(lua_State *L)
{
    struct fleet_host *host = fleet_host_from(L);
    luaL_checktype(L, 1, LUA_TFUNCTION);
    int nargs = lua_gettop(L) - 1;
    struct task_handle *h = lua_newuserdatauv(L, sizeof *h, 0);
    luaL_setmetatable(L, TASK_HANDLE);
    lua_insert(L, 1); /* [handle, fn, args...] */
    struct fleet_task *parent = fleet_sched_current(host->sched, L);
    h->t = fleet_sched_spawn(host->sched, L, nargs, false);
    if (parent && parent->background) /* what background work starts is background too */
        fleet_sched_set_background(host->sched, h->t);
    return 1;
}

/* fleet.core.spawn_background(fn, ...) -> handle: a task the run does not
 * wait for, whose requests go after everyone else's (account lookups). */
static int l_spawn_background(lua_State *L)
{
    l_spawn(L);
    struct task_handle *h = lua_touserdata(L, -1);
    fleet_sched_set_background(fleet_host_from(L)->sched, h->t);
    return 1;
}

static int sleep_k(lua_State *L, int status, lua_KContext ctx)
{
    (void)L;
    (void)status;
    (void)ctx;
    return 0;
}

/* fleet.sleep(seconds): other tasks run meanwhile. */
static int l_sleep(lua_State *L)
{
    struct fleet_host *host = fleet_host_from(L);
    double s = luaL_checknumber(L, 1);
    luaL_argcheck(L, isfinite(s), 1, "must be a finite number of seconds");
    struct fleet_task *t = current_task(L, host, "fleet.sleep");
    fleet_sched_sleep_until(host->sched, t, fleet_now() + (s > 0 ? s : 0));
    return lua_yieldk(L, 0, 0, sleep_k);
}

static struct task_handle *check_handle(lua_State *L)
{
    return luaL_checkudata(L, 1, TASK_HANDLE);
}

/* Results of a finished task: raise=1 re-raises its error (wait), raise=0
 * returns true, ... or false, err (result). */
static int push_outcome(lua_State *L, struct fleet_task *t, int raise)
{
    int n = fleet_sched_push_results(L, t);
    if (n < 0) {
        if (raise)
            return lua_error(L);
        lua_pushboolean(L, 0);
        lua_insert(L, -2);
        return 2;
    }
    if (!raise) {
        lua_pushboolean(L, 1);
        lua_insert(L, -n - 1);
        return n + 1;
    }
    return n;
}

static int wait_k(lua_State *L, int status, lua_KContext raise)
{
    (void)status;
    struct task_handle *h = check_handle(L);
    return push_outcome(L, h->t, (int)raise);
}

static int wait_common(lua_State *L, int raise)
{
    struct fleet_host *host = fleet_host_from(L);
    struct task_handle *h = check_handle(L);
    if (h->t->state == TASK_DONE)
        return push_outcome(L, h->t, raise);
    struct fleet_task *self = current_task(L, host, "waiting for a task");
    if (self == h->t)
        return luaL_error(L, "a task cannot wait for itself");
    lua_settop(L, 1); /* keep the handle for the continuation */
    fleet_sched_join(host->sched, self, h->t);
    return lua_yieldk(L, 0, raise, wait_k);
}

/* handle:wait() -> the function's results; re-raises its error. */
static int l_wait(lua_State *L) { return wait_common(L, 1); }

/* handle:result() -> true, ... | false, err (never raises) */
static int l_result(lua_State *L) { return wait_common(L, 0); }

/* handle:done() -> boolean */
static int l_done(lua_State *L)
{
    lua_pushboolean(L, check_handle(L)->t->state == TASK_DONE);
    return 1;
}

static int l_handle_gc(lua_State *L)
{
    struct fleet_host *host = fleet_host_from(L);
    struct task_handle *h = luaL_checkudata(L, 1, TASK_HANDLE);
    if (h->t && host->sched)
        fleet_sched_release_handle(host->sched, h->t);
    h->t = NULL;
    return 0;
}

static int l_handle_tostring(lua_State *L)
{
    struct task_handle *h = check_handle(L);
    lua_pushfstring(L, "fleet.task %d (%s)", (int)h->t->id, h->t->state == TASK_DONE ? "done" : "running");
    return 1;
}

/* fleet.core.condition() -> cond: tasks wait on it with cond:wait() until
 * another task calls cond:signal(), which wakes them all. The tasks
 * waiting are kept in the userdata's user value, a list that signal
 * replaces with an empty one. */
static int l_condition(lua_State *L)
{
    lua_newuserdatauv(L, 1, 1);
    luaL_setmetatable(L, CONDITION);
    lua_newtable(L);
    lua_setiuservalue(L, -2, 1);
    return 1;
}

/* After a wait with a timeout: a task still in the condition's list was
 * woken by its timer, not by signal; it leaves the list so that a later
 * signal cannot wake it while it waits for something else. */
static int condition_wait_k(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    struct fleet_task *t = (struct fleet_task *)ctx;
    lua_getiuservalue(L, 1, 1);
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        bool mine = lua_touserdata(L, -1) == t;
        lua_pop(L, 1);
        if (mine) {
            lua_rawgeti(L, -1, n); /* the last entry takes this one's place */
            lua_rawseti(L, -2, i);
            lua_pushnil(L);
            lua_rawseti(L, -2, n);
            lua_pushboolean(L, 0);
            return 1;
        }
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* cond:wait([timeout]) -> true when signalled, false when the timeout
 * (seconds) passed first. */
static int condition_wait(lua_State *L)
{
    struct fleet_host *host = fleet_host_from(L);
    luaL_checkudata(L, 1, CONDITION);
    double timeout = luaL_optnumber(L, 2, -1);
    struct fleet_task *t = current_task(L, host, "waiting on a condition");
    lua_getiuservalue(L, 1, 1);
    lua_pushlightuserdata(L, t);
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
    lua_settop(L, 1);
    if (timeout >= 0 && isfinite(timeout))
        fleet_sched_sleep_until(host->sched, t, fleet_now() + timeout);
    else
        t->state = TASK_WAITING;
    return lua_yieldk(L, 0, (lua_KContext)t, condition_wait_k);
}

static int condition_signal(lua_State *L)
{
    struct fleet_host *host = fleet_host_from(L);
    luaL_checkudata(L, 1, CONDITION);
    lua_getiuservalue(L, 1, 1);
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        fleet_sched_wake(host->sched, lua_touserdata(L, -1));
        lua_pop(L, 1);
    }
    lua_newtable(L);
    lua_setiuservalue(L, 1, 1);
    return 0;
}

/* fleet.in_task() -> boolean: whether waiting primitives may be called. */
static int l_in_task(lua_State *L)
{
    lua_pushboolean(L, fleet_sched_current(fleet_host_from(L)->sched, L) != NULL);
    return 1;
}

/* fleet.core.idle() -> seconds the event loop has waited with no task
 * ready to run, since it started: how much of a while a process spent
 * waiting rather than working. */
static int l_idle(lua_State *L)
{
    lua_pushnumber(L, fleet_sched_idle(fleet_host_from(L)->sched));
    return 1;
}

static int l_now(lua_State *L)
{
    lua_pushnumber(L, fleet_now());
    return 1;
}

void fleet_task_register(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"wait", l_wait}, {"result", l_result}, {"done", l_done}, {NULL, NULL},
    };
    static const luaL_Reg meta[] = {
        {"__gc", l_handle_gc}, {"__tostring", l_handle_tostring}, {NULL, NULL},
    };
    static const luaL_Reg funcs[] = {
        {"spawn", l_spawn},     {"spawn_background", l_spawn_background},
        {"sleep", l_sleep},     {"in_task", l_in_task}, {"now", l_now}, {"idle", l_idle},
        {"condition", l_condition}, {NULL, NULL},
    };
    static const luaL_Reg condition_methods[] = {
        {"wait", condition_wait}, {"signal", condition_signal}, {NULL, NULL},
    };
    luaL_newmetatable(L, CONDITION);
    lua_newtable(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    luaL_setfuncs(L, condition_methods, 1);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    luaL_newmetatable(L, TASK_HANDLE);
    lua_pushvalue(L, lua_upvalueindex(1));
    luaL_setfuncs(L, meta, 1);
    lua_newtable(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    luaL_setfuncs(L, methods, 1);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    lua_pushvalue(L, lua_upvalueindex(1));
    luaL_setfuncs(L, funcs, 1);
}
