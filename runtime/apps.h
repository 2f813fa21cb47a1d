/* GitHub Apps: each configured app is a pool token whose secret is the
 * app's JWT (signed here, in locked memory), and each of its installations
 * a pool token whose secret is an installation token, taken from the
 * access_tokens response in C so that it never reaches Lua. Which
 * installations exist, which owner each covers and when to refresh are
 * decided in Lua (runtime/lua/fleet/apps.lua) over fleet.core.app_*. */
#ifndef FLEET_APPS_H
#define FLEET_APPS_H

#include <stddef.h>

#include <lua.h>

struct fleet_host;
struct fleet_response;
struct fleet_apps;

/* Sets up the configured apps (their JWT tokens join the pool). Returns
 * NULL with err set on failure; a host without apps gets an empty set. */
struct fleet_apps *fleet_apps_new(struct fleet_host *host, char *err, size_t errlen);
void fleet_apps_free(struct fleet_apps *apps);

/* The continuation of a request made with opts.secret_for = label: the
 * response body holds an installation token for that token. Takes it,
 * wipes the body, and pushes what Lua may know: {status=, expires_at=}
 * or nil, err. Returns the number of values pushed. */
int fleet_apps_push_taken(lua_State *L, struct fleet_host *host, const char *provider, const char *label,
                          const struct fleet_response *resp);

/* Registers fleet.core.apps, app_sign, app_add_installation, app_disable. */
void fleet_apps_register(lua_State *L);

#endif
