/* struct fleet_host: the one object that owns everything a run needs —
 * configuration, Lua state, providers, token pool, scheduler, transport and
 * cache — created by fleet_host_new and torn down by fleet_host_free. */
#ifndef FLEET_HOST_H
#define FLEET_HOST_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>

#include <lua.h>

#include "config.h"
#include "stats.h"

struct fleet_http;
struct fleet_pool;
struct fleet_sched;
struct fleet_cache;
struct fleet_shared;
struct fleet_apps;

/* The C view of one provider instance: what the host needs from the plugin
 * on every request, read once when the plugin is loaded. */
struct fleet_provider {
    char *name;        /* instance name ("github", "ghe") */
    char *plugin;      /* plugin name (file basename) */
    char *plugin_file; /* path of the plugin's source */
    char *base_url;
    char *origin;      /* scheme://host[:port] of base_url, for redirects */
    int table_ref;     /* registry ref: the plugin's table */

    char *auth_header; /* "Authorization", "PRIVATE-TOKEN" */
    char *auth_scheme; /* "Bearer", "token"; NULL: the bare secret */

    /* Response headers that carry the budget (lower case); NULL if absent. */
    char *h_limit, *h_remaining, *h_used, *h_reset, *h_resource;
    bool reset_is_delta; /* reset header counts seconds, not an epoch */
    bool budget_per_account; /* tokens of one account share a budget (GitHub) */
    char *default_resource;

    /* Statuses and body fragments that mark a secondary (abuse) limit. */
    int limit_statuses[8];
    int nlimit_statuses;
    char **secondary_patterns;
    size_t nsecondary_patterns;

    int ntokens; /* configured tokens */
};

struct fleet_host {
    struct fleet_config cfg;
    lua_State *L;
    struct fleet_provider *providers;
    size_t nproviders;
    struct fleet_pool *pool;
    struct fleet_shared *shared; /* budgets in Redis (shared:), or NULL */
    struct fleet_apps *apps; /* GitHub Apps: JWTs and installation tokens */
    struct fleet_http *http;
    struct fleet_sched *sched;
    struct fleet_cache *cache; /* opened on the first cacheable request */
    struct fleet_skew *skew;   /* clock offset per origin, from Date headers (skew.h) */
    struct fleet_background *background; /* blocking work off the loop (background.h), or NULL */
    bool cache_opened;
    struct fleet_stats stats;

    char *providers_dir; /* the installed (or source tree) providers folder */
    int verbosity;       /* -v count */
    bool quiet;
    bool progress;       /* progress line wanted (terminal, not -q) */
    bool no_cache;

    size_t lua_mem_used;
    size_t lua_mem_limit;

    int exit_code;
};

/* Creates the host for cfg (which it takes over). Returns NULL with a
 * message in err on failure. */
struct fleet_host *fleet_host_new(struct fleet_config *cfg, const char *providers_dir,
                                  char *err, size_t errlen);
void fleet_host_free(struct fleet_host *host);

/* Runs a Lua chunk as the main task, with arg as the lua interpreter builds
 * it (arg[0] = script, arg[1..] = args). Returns the process exit code. */
int fleet_host_run(struct fleet_host *host, const char *chunkname, const char *source,
                   size_t len, const char *script_path, int argc, char **argv);

/* The host behind a Lua function registered with it as upvalue 1. */
struct fleet_host *fleet_host_from(lua_State *L);

/* The response cache, opened on first use; NULL when disabled or when no
 * cache can be had (the run goes on without one). */
struct fleet_cache *fleet_host_cache(struct fleet_host *host);

/* The thread for blocking work, started on first use; NULL if none can
 * be had (the caller then does the work itself). */
struct fleet_background *fleet_host_background(struct fleet_host *host);

/* Finds a provider by instance name; NULL if none. */
struct fleet_provider *fleet_host_provider(struct fleet_host *host, const char *name);

/* Seconds since the epoch, with sub-second precision. */
double fleet_now(void);

extern volatile sig_atomic_t fleet_signal_received;

#endif
