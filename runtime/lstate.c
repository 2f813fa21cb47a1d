/* The Lua state.
 *
 * Built-in modules ("fleet", "fleet.*") are compiled into the binary and
 * found through package.preload, so they come before anything on disk. After
 * them come the configured plugin folders, then Lua's usual paths (so system
 * libraries installed from Debian stay usable in scripts). */
#include "lstate.h"

#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "embedded.h"
#include "host.h"
#include "log.h"

int luaopen_cjson(lua_State *L);
int luaopen_fleet_core(lua_State *L);

/* Lua's allocator with a budget: an allocation that would pass
 * lua.memory_limit fails, which Lua turns into a "not enough memory" error
 * instead of letting a runaway script eat the machine. */
static void *budget_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct fleet_host *host = ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        free(ptr);
        host->lua_mem_used -= old;
        return NULL;
    }
    if (nsize > old && host->lua_mem_used - old + nsize > host->lua_mem_limit)
        return NULL;
    void *grown = realloc(ptr, nsize);
    if (grown)
        host->lua_mem_used = host->lua_mem_used - old + nsize;
    return grown;
}

static int panic(lua_State *L)
{
    const char *msg = lua_tostring(L, -1);
    fleet_log(FLEET_LOG_ERROR, "unprotected Lua error: %s", msg ? msg : "(not a string)");
    abort();
}

int fleet_lstate_traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (!msg) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            msg = lua_tostring(L, -1);
        else
            msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

int fleet_lstate_pcall(lua_State *L, int nargs, int nresults)
{
    int base = lua_gettop(L) - nargs;
    lua_pushcfunction(L, fleet_lstate_traceback);
    lua_insert(L, base);
    int status = lua_pcall(L, nargs, nresults, base);
    lua_remove(L, base);
    return status;
}

static const struct fleet_embedded *find_builtin(const char *name)
{
    for (const struct fleet_embedded *e = fleet_embedded; e->name; e++)
        if (strcmp(e->name, name) == 0)
            return e;
    return NULL;
}

int fleet_lstate_load_builtin(lua_State *L, const char *name)
{
    const struct fleet_embedded *e = find_builtin(name);
    if (!e) {
        lua_pushfstring(L, "no built-in module '%s'", name);
        return LUA_ERRFILE;
    }
    return luaL_loadbufferx(L, e->source, e->len, e->chunkname, "t");
}

/* package.preload loader for built-in Lua modules: upvalue 1 is the name. */
static int preload_builtin(lua_State *L)
{
    const char *name = lua_tostring(L, lua_upvalueindex(1));
    if (fleet_lstate_load_builtin(L, name) != LUA_OK)
        return lua_error(L);
    lua_pushstring(L, name);
    lua_call(L, 1, 1);
    return 1;
}

struct protect_call {
    lua_CFunction fn;
    void *ud;
};

static int protected_trampoline(lua_State *L)
{
    struct protect_call *pc = lua_touserdata(L, 1);
    lua_settop(L, 0);
    lua_pushlightuserdata(L, pc->ud);
    return pc->fn(L);
}

int fleet_lstate_protect(lua_State *L, lua_CFunction fn, void *ud)
{
    struct protect_call pc = {fn, ud};
    lua_pushcfunction(L, protected_trampoline);
    lua_pushlightuserdata(L, &pc);
    return fleet_lstate_pcall(L, 1, 0);
}

const char *fleet_lstate_status_text(struct fleet_host *host, int status)
{
    static char text[128];
    switch (status) {
    case LUA_ERRMEM:
        snprintf(text, sizeof text, "out of memory: the Lua state reached lua.memory_limit (%zu MiB)",
                 host->lua_mem_limit >> 20);
        return text;
    case LUA_ERRSYNTAX:
        return "syntax error";
    default:
        return "error";
    }
}

/* package.path: configured plugin folders first, then Lua's defaults. */
static void set_search_path(lua_State *L, struct fleet_host *host)
{
    luaL_Buffer b;
    lua_getglobal(L, "package");
    luaL_buffinit(L, &b);
    for (size_t i = 0; i < host->cfg.nplugin_paths; i++) {
        luaL_addstring(&b, host->cfg.plugin_paths[i]);
        luaL_addstring(&b, "/?.lua;");
    }
    lua_getfield(L, -2, "path");
    luaL_addvalue(&b);
    luaL_pushresult(&b);
    lua_setfield(L, -2, "path");
    lua_pop(L, 1);
}

lua_State *fleet_lstate_new(struct fleet_host *host)
{
    host->lua_mem_limit = (size_t)host->cfg.lua.memory_limit;
    lua_State *L = lua_newstate(budget_alloc, host);
    if (!L)
        return NULL;
    lua_atpanic(L, panic);
    /* New threads copy the main thread's extra space, which the scheduler
     * uses to tell its tasks from other coroutines: it must start empty. */
    *(void **)lua_getextraspace(L) = NULL;
    luaL_openlibs(L);
    lua_gc(L, LUA_GCGEN, 0, 0);

    /* [] */
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_cjson);
    lua_setfield(L, -2, "cjson");
    lua_pushlightuserdata(L, host);
    lua_pushcclosure(L, luaopen_fleet_core, 1);
    lua_setfield(L, -2, "fleet.core");
    for (const struct fleet_embedded *e = fleet_embedded; e->name; e++) {
        if (strncmp(e->name, "commands.", 9) == 0)
            continue; /* commands are run by name, not required */
        lua_pushstring(L, e->name);
        lua_pushcclosure(L, preload_builtin, 1);
        lua_setfield(L, -2, e->name);
    }
    lua_pop(L, 1);
    set_search_path(L, host);
    return L;
}
