/* What scripts may know of the host: configuration (without secrets),
 * providers, counters, logging, and the command-line options. */
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>

#include "host.h"
#include "pool_shared.h"
#include "redis.h"
#include "lfleet.h"
#include "log.h"

static void set_str(lua_State *L, const char *k, const char *v)
{
    if (!v)
        return;
    lua_pushstring(L, v);
    lua_setfield(L, -2, k);
}

static void set_num(lua_State *L, const char *k, double v)
{
    lua_pushnumber(L, v);
    lua_setfield(L, -2, k);
}

static void set_int(lua_State *L, const char *k, long long v)
{
    lua_pushinteger(L, (lua_Integer)v);
    lua_setfield(L, -2, k);
}

static void set_bool(lua_State *L, const char *k, int v)
{
    lua_pushboolean(L, v);
    lua_setfield(L, -2, k);
}

/* provider.apps: {label=, app_id=, installations = "auto" | {ids or logins}} — never the key */
static void push_apps(lua_State *L, const struct fleet_provider_conf *p)
{
    lua_createtable(L, (int)p->napps, 0);
    for (size_t j = 0; j < p->napps; j++) {
        const struct fleet_app_conf *a = &p->apps[j];
        lua_createtable(L, 0, 3);
        set_str(L, "label", a->label);
        set_str(L, "app_id", a->app_id);
        if (a->installations_auto) {
            lua_pushliteral(L, "auto");
        } else {
            lua_createtable(L, (int)a->ninstallations, 0);
            for (size_t k = 0; k < a->ninstallations; k++) {
                lua_pushstring(L, a->installations[k]);
                lua_rawseti(L, -2, (lua_Integer)k + 1);
            }
        }
        lua_setfield(L, -2, "installations");
        lua_rawseti(L, -2, (lua_Integer)j + 1);
    }
    lua_setfield(L, -2, "apps");
}

/* fleet.core.config() -> the loaded configuration, tokens by label only. */
static int l_config(lua_State *L)
{
    struct fleet_host *host = fleet_host_from(L);
    const struct fleet_config *c = &host->cfg;
    lua_createtable(L, 0, 8);
    set_str(L, "path", c->path);
    lua_createtable(L, (int)c->nproviders, 0);
    for (size_t i = 0; i < c->nproviders; i++) {
        const struct fleet_provider_conf *p = &c->providers[i];
        lua_createtable(L, 0, 5);
        set_str(L, "name", p->name);
        set_str(L, "plugin", p->plugin ? p->plugin : p->name);
        set_str(L, "base_url", p->base_url);
        lua_createtable(L, (int)p->ntokens, 0);
        for (size_t j = 0; j < p->ntokens; j++) {
            lua_createtable(L, 0, 4);
            set_str(L, "label", p->tokens[j].label);
            set_str(L, "account", p->tokens[j].account);
            set_str(L, "username", p->tokens[j].username);
            set_str(L, "where", p->tokens[j].where);
            lua_rawseti(L, -2, (lua_Integer)j + 1);
        }
        lua_setfield(L, -2, "tokens");
        push_apps(L, p);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "providers");

    lua_createtable(L, 0, 8);
    set_int(L, "max_connections", c->http.max_connections);
    set_int(L, "per_token_concurrency", c->http.per_token_concurrency);
    set_num(L, "timeout", c->http.timeout);
    set_num(L, "connect_timeout", c->http.connect_timeout);
    set_int(L, "max_response_size", c->http.max_response_size);
    set_str(L, "ca_file", c->http.ca_file);
    set_str(L, "ca_path", c->http.ca_path);
    set_bool(L, "insecure", c->http.insecure);
    lua_setfield(L, -2, "http");

    lua_createtable(L, 0, 6);
    set_int(L, "max_attempts", c->retry.max_attempts);
    set_num(L, "base_delay", c->retry.base_delay);
    set_num(L, "max_delay", c->retry.max_delay);
    set_num(L, "secondary_wait", c->retry.secondary_wait);
    set_num(L, "reset_margin", c->retry.reset_margin);
    set_num(L, "max_wait", c->retry.max_wait);
    lua_setfield(L, -2, "retry");

    lua_createtable(L, 0, 3);
    set_bool(L, "enabled", c->cache.enabled);
    set_str(L, "path", c->cache.path);
    set_int(L, "max_size", c->cache.max_size);
    lua_setfield(L, -2, "cache");

    lua_createtable(L, 0, 2);
    set_int(L, "memory_limit", c->lua.memory_limit);
    set_int(L, "plugin_instructions", c->lua.plugin_instructions);
    lua_setfield(L, -2, "lua");

    lua_createtable(L, (int)c->nplugin_paths, 0);
    for (size_t i = 0; i < c->nplugin_paths; i++) {
        lua_pushstring(L, c->plugin_paths[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "plugin_paths");
    static const char *const levels[] = {"error", "warn", "info", "debug"};
    set_str(L, "log_level", levels[c->log_level]);
    return 1;
}

/* fleet.core.providers() -> { {name=, plugin=, file=, base_url=, tokens=n,
 * configured=bool, plugin_table=tbl}, ... } in configuration order */
static int l_providers(lua_State *L)
{
    struct fleet_host *host = fleet_host_from(L);
    lua_createtable(L, (int)host->nproviders, 0);
    for (size_t i = 0; i < host->nproviders; i++) {
        const struct fleet_provider *p = &host->providers[i];
        lua_createtable(L, 0, 8);
        set_str(L, "name", p->name);
        set_str(L, "plugin", p->plugin);
        set_str(L, "file", p->plugin_file);
        set_str(L, "base_url", p->base_url);
        set_int(L, "tokens", p->ntokens);
        set_bool(L, "configured", i < host->cfg.nproviders);
        lua_rawgeti(L, LUA_REGISTRYINDEX, p->table_ref);
        lua_setfield(L, -2, "plugin_table");
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

/* With shared:, the Redis round trips (every command sent, budget updates
 * and queue alike) and their ratio to HTTP requests. */
static void push_shared_stats(lua_State *L, struct fleet_host *host)
{
    if (!host->shared)
        return;
    long trips = fleet_redis_round_trips(fleet_shared_redis(host->shared));
    set_int(L, "redis_round_trips", trips);
    set_int(L, "shared_syncs", host->stats.shared_syncs);
    set_num(L, "redis_per_request", host->stats.requests ? (double)trips / (double)host->stats.requests : 0);
}

/* fleet.core.stats() -> counters */
static int l_stats(lua_State *L)
{
    const struct fleet_stats *s = &fleet_host_from(L)->stats;
    lua_createtable(L, 0, 14);
    set_int(L, "requests", s->requests);
    set_int(L, "ok", s->responses_ok);
    set_int(L, "not_modified", s->not_modified);
    set_int(L, "primary_limited", s->primary_limited);
    set_int(L, "secondary_limited", s->secondary_limited);
    set_int(L, "unauthorized", s->unauthorized);
    set_int(L, "server_errors", s->server_errors);
    set_int(L, "network_errors", s->network_errors);
    set_int(L, "client_errors", s->client_errors);
    set_int(L, "retries", s->retries);
    set_int(L, "merged", s->merged);
    set_num(L, "waited", s->waited);
    set_int(L, "bytes", s->bytes);
    push_shared_stats(L, fleet_host_from(L));
    return 1;
}

/* fleet.core.log(level, message): level is "error", "warn", "info" or "debug". */
static int l_log(lua_State *L)
{
    static const char *const levels[] = {"error", "warn", "info", "debug", NULL};
    int level = luaL_checkoption(L, 1, NULL, levels);
    size_t len;
    const char *msg = luaL_checklstring(L, 2, &len);
    fleet_log(level, "%.*s", (int)len, msg);
    return 0;
}

/* fleet.core.options() -> {verbosity=, quiet=, progress=, no_cache=} */
static int l_options(lua_State *L)
{
    struct fleet_host *host = fleet_host_from(L);
    lua_createtable(L, 0, 4);
    set_int(L, "verbosity", host->verbosity);
    set_bool(L, "quiet", host->quiet);
    set_bool(L, "progress", host->progress);
    set_bool(L, "no_cache", host->no_cache);
    return 1;
}

/* fleet.core.isatty(fd) -> boolean */
static int l_isatty(lua_State *L)
{
    lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
    return 1;
}

/* fleet.core.set_exit_code(n): the process exit code unless a later
 * failure raises it (codes only go up: 0 < 1 < 2). */
static int l_set_exit_code(lua_State *L)
{
    struct fleet_host *host = fleet_host_from(L);
    lua_Integer code = luaL_checkinteger(L, 1);
    luaL_argcheck(L, code >= 0 && code <= 255, 1, "must be 0..255");
    if (code > host->exit_code)
        host->exit_code = (int)code;
    return 0;
}

/* fleet.core.progress(text | nil): the progress line (see log.h). */
static int l_progress(lua_State *L)
{
    fleet_log_progress(luaL_optstring(L, 1, NULL));
    return 0;
}

/* fleet.core.log_line(text): one line on stderr, above the progress line. */
static int l_log_line(lua_State *L)
{
    size_t len;
    const char *line = luaL_checklstring(L, 1, &len);
    fleet_log_line(line, len);
    return 0;
}

void fleet_hostinfo_register(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"config", l_config}, {"providers", l_providers}, {"stats", l_stats},
        {"log", l_log},       {"options", l_options},     {"isatty", l_isatty},
        {"set_exit_code", l_set_exit_code}, {"progress", l_progress}, {"log_line", l_log_line},
        {NULL, NULL},
    };
    lua_pushvalue(L, lua_upvalueindex(1));
    luaL_setfuncs(L, funcs, 1);
}
