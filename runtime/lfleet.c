/* fleet.core: the table of C primitives, each area registered by its own
 * file (see lfleet.h). */
#include "lfleet.h"

#include "events.h"
#include "host.h"
#include "json.h"

struct fleet_host *fleet_host_from(lua_State *L) { return lua_touserdata(L, lua_upvalueindex(1)); }

int luaopen_fleet_core(lua_State *L)
{
    lua_newtable(L);
    fleet_task_register(L);
    fleet_request_register(L);
    fleet_tokens_register(L);
    fleet_hostinfo_register(L);
    fleet_events_register(L);
    fleet_output_register(L);
    fleet_cache_register(L);
    fleet_redis_register(L);
    fleet_files_register(L);
    fleet_apps_register(L);
    fleet_json_register(L);
    return 1;
}
