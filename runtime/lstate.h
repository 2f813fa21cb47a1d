/* The Lua state: allocator with a memory budget, standard libraries, the
 * built-in modules compiled into the binary, the module search path, and
 * protected calls with tracebacks. */
#ifndef FLEET_LSTATE_H
#define FLEET_LSTATE_H

#include <lua.h>

struct fleet_host;

/* Creates the state with every built-in module preloaded; NULL on failure. */
lua_State *fleet_lstate_new(struct fleet_host *host);

/* Message handler for lua_pcall: turns the error into a string (using
 * __tostring for error tables) and appends a traceback. */
int fleet_lstate_traceback(lua_State *L);

/* lua_pcall with fleet_lstate_traceback as message handler. On error the
 * message (with traceback) is left on the stack. */
int fleet_lstate_pcall(lua_State *L, int nargs, int nresults);

/* Pushes the compiled-in chunk NAME ("fleet", "commands.fetch") as a
 * function. Returns LUA_OK, or an error status with the message pushed. */
int fleet_lstate_load_builtin(lua_State *L, const char *name);

/* Calls fn(L, ud) in protected mode, so that a memory error while building
 * values does not abort the process. Returns the lua_pcall status; on error
 * the message is left on the stack. */
int fleet_lstate_protect(lua_State *L, lua_CFunction fn, void *ud);

/* Describes a non-OK status of the Lua state for a message, reporting the
 * memory budget for LUA_ERRMEM. Returns a static string. */
const char *fleet_lstate_status_text(struct fleet_host *host, int status);

#endif
