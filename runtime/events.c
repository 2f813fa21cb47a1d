/* Event hooks. Handlers live in a registry table keyed by event name; the
 * engine emits only when a handler exists, so unhooked events cost a bit
 * test. */
#include "events.h"

#include <string.h>

#include <lauxlib.h>

#include "host.h"
#include "lstate.h"
#include "pool.h"
#include "sched.h"

static const char *const event_names[] = {"rate_limited", "secondary_limit", "retry", "token_disabled", NULL};
static unsigned event_mask; /* bit i: event_names[i] has a handler */

static int event_index(const char *name)
{
    for (int i = 0; event_names[i]; i++)
        if (strcmp(event_names[i], name) == 0)
            return i;
    return -1;
}

/* The task body of one emitted event: calls each handler with the info. */
static int run_handlers(lua_State *L)
{
    /* [name, info] */
    lua_getfield(L, LUA_REGISTRYINDEX, "fleet.handlers");
    lua_pushvalue(L, 1);
    lua_rawget(L, -2); /* [name, info, handlers, list] */
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, 4, i);
        lua_pushvalue(L, 2);
        lua_call(L, 1, 0);
    }
    return 0;
}

struct emission {
    struct fleet_host *host;
    const char *name;
    const struct fleet_provider *p;
    const struct fleet_token *t;
    double until, delay;
    long status;
    int attempt;
    const char *url;
};

static int emit_protected(lua_State *L)
{
    struct emission *e = lua_touserdata(L, 1);
    lua_pushcfunction(L, run_handlers);
    lua_pushstring(L, e->name);
    lua_createtable(L, 0, 8);
    lua_pushstring(L, e->name);
    lua_setfield(L, -2, "event");
    lua_pushstring(L, e->p->name);
    lua_setfield(L, -2, "provider");
    if (e->t) {
        lua_pushstring(L, e->t->label);
        lua_setfield(L, -2, "token");
    }
    if (e->until > 0) {
        lua_pushnumber(L, e->until);
        lua_setfield(L, -2, "resume_at");
    }
    if (e->delay >= 0) {
        lua_pushnumber(L, e->delay);
        lua_setfield(L, -2, "delay");
    }
    if (e->status > 0) {
        lua_pushinteger(L, e->status);
        lua_setfield(L, -2, "status");
    }
    if (e->attempt > 0) {
        lua_pushinteger(L, e->attempt);
        lua_setfield(L, -2, "attempt");
    }
    if (e->url) {
        lua_pushstring(L, e->url);
        lua_setfield(L, -2, "url");
    }
    fleet_sched_spawn(e->host->sched, L, 2, false);
    /* Nobody holds a handle: a failing handler is reported by itself. */
    return 0;
}

void fleet_emit(struct fleet_host *host, const char *name, const struct fleet_provider *p,
                const struct fleet_token *t, double until, double delay, long status, int attempt, const char *url)
{
    int i = event_index(name);
    if (i < 0 || !(event_mask & (1u << i)))
        return;
    struct emission e = {host, name, p, t, until, delay, status, attempt, url};
    if (fleet_lstate_protect(host->L, emit_protected, &e) != LUA_OK)
        lua_pop(host->L, 1); /* out of memory: the hook is skipped */
}

void fleet_emit_wait(struct fleet_host *host, const struct fleet_provider *p, double wake_at)
{
    if (!(event_mask & 1u))
        return;
    fleet_emit(host, "rate_limited", p, fleet_pool_first_free(host->pool, p), wake_at, wake_at - fleet_now(), 0,
               0, NULL);
}

/* fleet.on(event, fn) */
static int l_on(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    int i = event_index(name);
    if (i < 0)
        return luaL_argerror(L, 1, "unknown event (rate_limited, secondary_limit, retry, token_disabled)");
    if (lua_getfield(L, LUA_REGISTRYINDEX, "fleet.handlers") != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, LUA_REGISTRYINDEX, "fleet.handlers");
    }
    if (lua_getfield(L, -1, name) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, -3, name);
    }
    lua_pushvalue(L, 2);
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
    event_mask |= 1u << i;
    return 0;
}

void fleet_events_register(lua_State *L)
{
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushcclosure(L, l_on, 1);
    lua_setfield(L, -2, "on");
}
