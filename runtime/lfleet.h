/* fleet.core: the C primitives the Lua side of the fleet module is built
 * on. Each fleet_<area>_register adds one area's functions to the table on
 * top of the stack; upvalue 1 of the calling closure is the host. */
#ifndef FLEET_LFLEET_H
#define FLEET_LFLEET_H

#include <lua.h>

struct fleet_host;

int luaopen_fleet_core(lua_State *L);

void fleet_task_register(lua_State *L);   /* ltask.c: spawn, sleep, handles */
void fleet_request_register(lua_State *L); /* lrequest.c: request, parse_link */
void fleet_tokens_register(lua_State *L); /* ltokens.c: rate limits, accounts */
void fleet_hostinfo_register(lua_State *L); /* lhostinfo.c: config, providers, stats, log */
void fleet_output_register(lua_State *L); /* loutput.c: writers */
void fleet_cache_register(lua_State *L);  /* lcache.c: cache stats and clear */
void fleet_files_register(lua_State *L);  /* lfiles.c: mkdir */
void fleet_redis_register(lua_State *L);  /* lredis.c: Redis commands and scripts (shared:) */
/* lredis.c: the commands Lua's fleet.core.redis_at_exit functions return,
 * collected once the run is over (the Lua state still open), then sent
 * (on a connection of their own, the loop's closed). */
void fleet_redis_prepare_at_exit(struct fleet_host *host);
void fleet_redis_run_at_exit(struct fleet_host *host);
void fleet_apps_register(lua_State *L);   /* apps.c: GitHub Apps' JWTs and installation tokens */

/* Pushes a structured error {kind=, message=, ...} with its metatable. */
void fleet_push_error(lua_State *L, const char *kind, const char *message);

#endif
