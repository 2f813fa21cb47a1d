/* What Lua may know of the token pool: labels, accounts, budgets and
 * states — never a secret. */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>

#include "cache.h"
#include "host.h"
#include "lfleet.h"
#include "pool.h"
#include "skew.h"

static struct fleet_provider *check_provider(lua_State *L, int arg)
{
    struct fleet_host *host = fleet_host_from(L);
    const char *name = luaL_checkstring(L, arg);
    struct fleet_provider *p = fleet_host_provider(host, name);
    if (!p)
        luaL_argerror(L, arg, lua_pushfstring(L, "no provider named '%s'", name));
    return p;
}

static void set_number_or_nil(lua_State *L, const char *k, double v, int known)
{
    if (!known)
        return;
    lua_pushnumber(L, v);
    lua_setfield(L, -2, k);
}

static void set_integer_or_nil(lua_State *L, const char *k, long v)
{
    if (v < 0)
        return;
    lua_pushinteger(L, v);
    lua_setfield(L, -2, k);
}

/* row.kind: "token", "app" (a GitHub App's JWT) or "installation" (with
 * row.expires_at, when its current token expires). */
static void push_kind(lua_State *L, const struct fleet_token *t)
{
    static const char *const kinds[] = {"token", "app", "installation"};
    lua_pushstring(L, kinds[t->kind]);
    lua_setfield(L, -2, "kind");
    set_number_or_nil(L, "expires_at", t->expires_at, t->expires_at > 0);
}

static void push_row(lua_State *L, struct fleet_host *host, struct fleet_token *t, struct fleet_budget *b,
                     double now)
{
    lua_createtable(L, 0, 10);
    lua_pushstring(L, t->label);
    lua_setfield(L, -2, "token");
    lua_pushstring(L, t->provider->name);
    lua_setfield(L, -2, "provider");
    if (t->account) {
        lua_pushstring(L, t->account);
        lua_setfield(L, -2, "account");
    }
    if (b) {
        set_integer_or_nil(L, "limit", b->limit);
        set_integer_or_nil(L, "remaining", b->remaining);
        set_integer_or_nil(L, "used", b->used);
        set_number_or_nil(L, "reset", b->reset, b->reset > 0);
        lua_pushstring(L, b->resource);
        lua_setfield(L, -2, "resource");
    }
    lua_pushstring(L, fleet_pool_state(host->pool, t, now));
    lua_setfield(L, -2, "state");
    push_kind(L, t);
    set_number_or_nil(L, "paused_until", t->paused_until, t->paused_until > now);
    lua_pushboolean(L, t->secret == NULL);
    lua_setfield(L, -2, "anonymous");
}

/* fleet.core.budgets([provider]) -> rows, one per token and known resource */
static int l_budgets(lua_State *L)
{
    struct fleet_host *host = fleet_host_from(L);
    struct fleet_provider *only = lua_isnoneornil(L, 1) ? NULL : check_provider(L, 1);
    double now = fleet_now();
    lua_newtable(L);
    lua_Integer n = 0;
    for (int i = 0; i < fleet_pool_count(host->pool); i++) {
        struct fleet_token *t = fleet_pool_at(host->pool, i);
        if (only && t->provider != only)
            continue;
        if (t->nbudgets == 0) {
            push_row(L, host, t, NULL, now);
            lua_rawseti(L, -2, ++n);
        }
        for (int j = 0; j < t->nbudgets; j++) {
            push_row(L, host, t, t->budgets[j].budget, now);
            lua_rawseti(L, -2, ++n);
        }
    }
    return 1;
}

/* fleet.core.tokens(provider) -> { {label=, account=, anonymous=, disabled=}, ... } */
static int l_tokens(lua_State *L)
{
    struct fleet_host *host = fleet_host_from(L);
    struct fleet_provider *p = check_provider(L, 1);
    lua_newtable(L);
    lua_Integer n = 0;
    for (int i = 0; i < fleet_pool_count(host->pool); i++) {
        struct fleet_token *t = fleet_pool_at(host->pool, i);
        if (t->provider != p)
            continue;
        lua_createtable(L, 0, 5);
        lua_pushstring(L, t->label);
        lua_setfield(L, -2, "label");
        if (t->account) {
            lua_pushstring(L, t->account);
            lua_setfield(L, -2, "account");
        }
        lua_pushboolean(L, t->account_lookup);
        lua_setfield(L, -2, "account_lookup");
        lua_pushboolean(L, t->secret == NULL);
        lua_setfield(L, -2, "anonymous");
        lua_pushboolean(L, t->disabled);
        lua_setfield(L, -2, "disabled");
        push_kind(L, t);
        lua_rawseti(L, -2, ++n);
    }
    return 1;
}

static struct fleet_token *check_token(lua_State *L, struct fleet_provider *p, int arg)
{
    const char *label = luaL_checkstring(L, arg);
    struct fleet_token *t = fleet_pool_find(fleet_host_from(L)->pool, p, label);
    if (!t)
        luaL_argerror(L, arg, lua_pushfstring(L, "provider %s has no token labelled '%s'", p->name, label));
    return t;
}

/* fleet.core.begin_account_lookup(provider, label) -> true if the caller
 * should look the account up (it was unknown and nobody is on it). */
static int l_begin_account_lookup(lua_State *L)
{
    struct fleet_provider *p = check_provider(L, 1);
    struct fleet_token *t = check_token(L, p, 2);
    int start = !t->account_lookup && t->secret != NULL;
    t->account_lookup = true;
    lua_pushboolean(L, start);
    return 1;
}

/* fleet.core.set_account(provider, label, account) */
static int l_set_account(lua_State *L)
{
    struct fleet_host *host = fleet_host_from(L);
    struct fleet_provider *p = check_provider(L, 1);
    struct fleet_token *t = check_token(L, p, 2);
    const char *account = luaL_checkstring(L, 3);
    fleet_pool_set_account(host->pool, t, account);
    return 0;
}

/* The memo key under which a token's account is kept across runs: the
 * provider's origin and the credential's salted hash, never the secret.
 * Returns false when there is no cache or the token is anonymous. */
static bool account_memo_key(struct fleet_host *host, struct fleet_token *t, char *key, size_t len)
{
    struct fleet_cache *c = fleet_host_cache(host);
    if (!c || !t->secret)
        return false;
    if (!t->cache_id[0])
        fleet_cache_credential(c, t->secret, t->secret_len, t->cache_id);
    if (!t->cache_id[0])
        return false;
    snprintf(key, len, "%s account-of %s", t->provider->origin, t->cache_id);
    return true;
}

/* fleet.core.recall_account(provider, label, max_age) -> account | nil:
 * the account a lookup found for this credential in an earlier run. */
static int l_recall_account(lua_State *L)
{
    struct fleet_host *host = fleet_host_from(L);
    struct fleet_provider *p = check_provider(L, 1);
    struct fleet_token *t = check_token(L, p, 2);
    double max_age = luaL_checknumber(L, 3);
    char key[400], account[256];
    if (account_memo_key(host, t, key, sizeof key) &&
        fleet_cache_memo_get(fleet_host_cache(host), key, max_age, account, sizeof account) && account[0])
        lua_pushstring(L, account);
    else
        lua_pushnil(L);
    return 1;
}

/* fleet.core.remember_account(provider, label, account): keeps what a
 * lookup found, so that the next run need not ask. */
static int l_remember_account(lua_State *L)
{
    struct fleet_host *host = fleet_host_from(L);
    struct fleet_provider *p = check_provider(L, 1);
    struct fleet_token *t = check_token(L, p, 2);
    size_t len;
    const char *account = luaL_checklstring(L, 3, &len);
    char key[400];
    if (len > 0 && len < 256 && account_memo_key(host, t, key, sizeof key))
        fleet_cache_memo_set(fleet_host_cache(host), key, account);
    return 0;
}

/* fleet.core.observe_budget(provider, label, {resource=, limit=, remaining=,
 * used=, reset=}): figures a rate-limit endpoint reported. */
static int l_observe_budget(lua_State *L)
{
    struct fleet_host *host = fleet_host_from(L);
    struct fleet_provider *p = check_provider(L, 1);
    struct fleet_token *t = check_token(L, p, 2);
    luaL_checktype(L, 3, LUA_TTABLE);
    struct fleet_budget_obs obs = {0};
    const char *resource = p->default_resource ? p->default_resource : "core";
    if (lua_getfield(L, 3, "resource") == LUA_TSTRING)
        resource = lua_tostring(L, -1);
    lua_pop(L, 1);
    strncpy(obs.resource, resource, sizeof obs.resource - 1);
    if (lua_getfield(L, 3, "limit") == LUA_TNUMBER)
        obs.has_limit = true, obs.limit = (long)lua_tointeger(L, -1);
    if (lua_getfield(L, 3, "remaining") == LUA_TNUMBER)
        obs.has_remaining = true, obs.remaining = (long)lua_tointeger(L, -1);
    if (lua_getfield(L, 3, "used") == LUA_TNUMBER)
        obs.has_used = true, obs.used = (long)lua_tointeger(L, -1);
    if (lua_getfield(L, 3, "reset") == LUA_TNUMBER)
        obs.has_reset = true, obs.reset = lua_tonumber(L, -1) + fleet_skew_offset(host->skew, p->origin);
    lua_pop(L, 4);
    fleet_pool_observe(host->pool, t, resource, &obs, false, fleet_now());
    return 0;
}

void fleet_tokens_register(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"budgets", l_budgets},
        {"tokens", l_tokens},
        {"begin_account_lookup", l_begin_account_lookup},
        {"set_account", l_set_account},
        {"recall_account", l_recall_account},
        {"remember_account", l_remember_account},
        {"observe_budget", l_observe_budget},
        {NULL, NULL},
    };
    lua_pushvalue(L, lua_upvalueindex(1));
    luaL_setfuncs(L, funcs, 1);
}
