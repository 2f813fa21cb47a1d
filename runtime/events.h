/* fleet.on(event, fn): hooks scripts attach to what the engine does
 * (rate_limited, secondary_limit, retry, token_disabled). Each event runs
 * its handlers in a task of its own, so a handler may itself wait. */
#ifndef FLEET_EVENTS_H
#define FLEET_EVENTS_H

#include <lua.h>

struct fleet_host;
struct fleet_provider;
struct fleet_token;

/* Emits event `name` if any handler wants it, with the fields a handler
 * sees: resume_at (`until`, epoch; omitted when 0), delay (seconds;
 * omitted when < 0), status (omitted when 0), attempt, url. */
void fleet_emit(struct fleet_host *host, const char *name, const struct fleet_provider *p,
                const struct fleet_token *t, double until, double delay, long status, int attempt,
                const char *url);

/* Every token of provider p is spent or paused until wake_at: emits
 * rate_limited naming the token that frees up first. */
void fleet_emit_wait(struct fleet_host *host, const struct fleet_provider *p, double wake_at);

/* Registers fleet.core.on into the table on top of the stack (upvalue 1 is
 * the host). */
void fleet_events_register(lua_State *L);

#endif
