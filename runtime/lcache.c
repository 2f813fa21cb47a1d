/* fleet.core.cache_stats and fleet.core.cache_clear: what `gitfleet cache`
 * needs. Both work on the run's cache when it has one, else on the
 * configured file, opened for the call (so they need no request first). */
#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>

#include <lauxlib.h>

#include "cache.h"
#include "host.h"
#include "lfleet.h"

static void set_int(lua_State *L, const char *k, long long v)
{
    lua_pushinteger(L, (lua_Integer)v);
    lua_setfield(L, -2, k);
}

/* The cache to work on. *opened: the caller closes it. NULL with *absent:
 * there is no file yet (nothing is created to answer a question); NULL
 * otherwise: no path configured, or the file cannot be used (the reason
 * was logged as a warning). */
static struct fleet_cache *cache_for(struct fleet_host *host, bool *opened, bool *absent)
{
    *opened = false;
    *absent = false;
    if (host->cache)
        return host->cache;
    const char *path = host->cfg.cache.path;
    if (!path)
        return NULL;
    struct stat st;
    if (stat(path, &st) != 0 && errno == ENOENT) {
        *absent = true;
        return NULL;
    }
    struct fleet_cache *c = fleet_cache_open(path, host->cfg.cache.max_size);
    *opened = c != NULL;
    return c;
}

/* fleet.core.cache_stats() -> {path=, exists=, entries=, bytes=, file_size=,
 * max_size=, dropped=, enabled=} | nil, err */
static int l_cache_stats(lua_State *L)
{
    struct fleet_host *host = fleet_host_from(L);
    bool opened, absent;
    struct fleet_cache *c = cache_for(host, &opened, &absent);
    struct fleet_cache_stats s = {0};
    if (c && fleet_cache_stats(c, &s) != 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "cannot read cache file %s: %s", host->cfg.cache.path, fleet_cache_error(c));
        if (opened)
            fleet_cache_close(c);
        return 2;
    }
    if (!c && !absent) {
        lua_pushnil(L);
        if (host->cfg.cache.path)
            lua_pushfstring(L, "cannot use cache file %s", host->cfg.cache.path);
        else
            lua_pushstring(L, "no cache path is configured (no home folder)");
        return 2;
    }
    lua_createtable(L, 0, 9);
    const char *path = c ? s.path : host->cfg.cache.path;
    lua_pushstring(L, path);
    lua_setfield(L, -2, "path");
    lua_pushboolean(L, c != NULL);
    lua_setfield(L, -2, "exists");
    set_int(L, "entries", s.entries);
    set_int(L, "bytes", s.bytes);
    set_int(L, "file_size", s.file_size);
    set_int(L, "dropped", s.dropped);
    set_int(L, "max_size", c ? s.max_size : host->cfg.cache.max_size);
    lua_pushboolean(L, host->cfg.cache.enabled && !host->no_cache);
    lua_setfield(L, -2, "enabled");
    if (opened)
        fleet_cache_close(c);
    return 1;
}

/* fleet.core.cache_clear() -> true | nil, err */
static int l_cache_clear(lua_State *L)
{
    struct fleet_host *host = fleet_host_from(L);
    bool opened, absent;
    struct fleet_cache *c = cache_for(host, &opened, &absent);
    if (!c) {
        if (absent) {
            lua_pushboolean(L, 1); /* no file: nothing to clear */
            return 1;
        }
        lua_pushnil(L);
        if (host->cfg.cache.path)
            lua_pushfstring(L, "cannot use cache file %s", host->cfg.cache.path);
        else
            lua_pushstring(L, "no cache path is configured (no home folder)");
        return 2;
    }
    int rc = fleet_cache_clear(c);
    if (rc != 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "cannot clear cache file %s: %s", host->cfg.cache.path, fleet_cache_error(c));
    } else {
        lua_pushboolean(L, 1);
    }
    if (opened)
        fleet_cache_close(c);
    return rc != 0 ? 2 : 1;
}

/* fleet.core.memo_get(key, max_age) -> value | nil */
static int l_memo_get(lua_State *L)
{
    const char *key = luaL_checkstring(L, 1);
    double max_age = luaL_checknumber(L, 2);
    char value[256];
    if (fleet_cache_memo_get(fleet_host_cache(fleet_host_from(L)), key, max_age, value, sizeof value))
        lua_pushstring(L, value);
    else
        lua_pushnil(L);
    return 1;
}

/* fleet.core.memo_set(key, value) */
static int l_memo_set(lua_State *L)
{
    const char *key = luaL_checkstring(L, 1);
    size_t len;
    const char *value = luaL_checklstring(L, 2, &len);
    luaL_argcheck(L, len < 256, 2, "a memo holds at most 255 bytes");
    fleet_cache_memo_set(fleet_host_cache(fleet_host_from(L)), key, value);
    return 0;
}

void fleet_cache_register(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"cache_stats", l_cache_stats},
        {"cache_clear", l_cache_clear},
        {"memo_get", l_memo_get},
        {"memo_set", l_memo_set},
        {NULL, NULL},
    };
    lua_pushvalue(L, lua_upvalueindex(1));
    luaL_setfuncs(L, funcs, 1);
}
