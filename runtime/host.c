/* struct fleet_host: created and torn down in one place, so the order in
 * which parts depend on each other is visible here and nowhere else. */
#include "host.h"
#include "pool_shared.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>

#include "cache.h"
#include "http.h"
#include "interrupt.h"
#include "lfleet.h"
#include "log.h"
#include "lstate.h"
#include "plugin.h"
#include "pool.h"
#include "redact.h"
#include "apps.h"
#include "background.h"
#include "sched.h"
#include "skew.h"

double fleet_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct fleet_provider *fleet_host_provider(struct fleet_host *host, const char *name)
{
    for (size_t i = 0; i < host->nproviders; i++)
        if (strcmp(host->providers[i].name, name) == 0)
            return &host->providers[i];
    return NULL;
}

struct fleet_cache *fleet_host_cache(struct fleet_host *host)
{
    if (!host->cache_opened) {
        host->cache_opened = true;
        if (host->cfg.cache.enabled && host->cfg.cache.path)
            host->cache = fleet_cache_open(host->cfg.cache.path, host->cfg.cache.max_size);
    }
    return host->cache;
}

struct fleet_host *fleet_host_new(struct fleet_config *cfg, const char *providers_dir, char *err, size_t errlen)
{
    struct fleet_host *host = calloc(1, sizeof *host);
    if (!host) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    host->cfg = *cfg;
    memset(cfg, 0, sizeof *cfg); /* the host owns it now */
    host->providers_dir = providers_dir ? strdup(providers_dir) : NULL;

    host->L = fleet_lstate_new(host);
    if (!host->L) {
        snprintf(err, errlen, "cannot create the Lua state");
        goto fail;
    }
    if (fleet_plugins_load(host, err, errlen) != 0)
        goto fail;
    if (!(host->pool = fleet_pool_new(host, err, errlen)))
        goto fail;
    if (host->cfg.shared.enabled && !(host->shared = fleet_shared_new(host, err, errlen)))
        goto fail;
    if (!(host->apps = fleet_apps_new(host, err, errlen)))
        goto fail;
    if (!(host->http = fleet_http_new(host))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (!(host->sched = fleet_sched_new(host, err, errlen)))
        goto fail;
    if (!(host->skew = fleet_skew_new())) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    return host;
fail:
    fleet_host_free(host);
    return NULL;
}

struct fleet_background *fleet_host_background(struct fleet_host *host)
{
    if (!host->background)
        host->background = fleet_background_new();
    return host->background;
}

void fleet_host_free(struct fleet_host *host)
{
    if (!host)
        return;
    if (host->sched)
        fleet_http_abandon_all(host);
    /* Blocking work still under way ends first: its completions refer to
     * tasks and Lua values. */
    if (host->background)
        fleet_background_finish(host->background);
    /* Tasks hold registry references: free them while the state lives,
     * then let handles collected by lua_close see no scheduler. */
    fleet_sched_free(host->sched);
    host->sched = NULL;
    fleet_redis_prepare_at_exit(host);
    if (host->L)
        lua_close(host->L);
    fleet_background_free(host->background);
    fleet_http_free(host->http);
    fleet_cache_close(host->cache);
    /* What the loop's connection still had to send lands first, so that
     * the commands run at exit see it. */
    fleet_shared_free(host->shared);
    host->shared = NULL;
    fleet_redis_run_at_exit(host);
    fleet_skew_free(host->skew);
    fleet_apps_free(host->apps);
    fleet_pool_free(host->pool);
    fleet_plugins_free(host);
    fleet_config_free(&host->cfg);
    free(host->providers_dir);
    fleet_log_forget_secrets();
    free(host);
}

/* Builds the global `arg` as the lua interpreter does: arg[0] is the
 * script, arg[1..] its arguments; also pushes the arguments for `...`. */
static int push_args(lua_State *L, const char *script, int argc, char **argv)
{
    lua_createtable(L, argc, 1);
    lua_pushstring(L, script);
    lua_rawseti(L, -2, 0);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setglobal(L, "arg");
    luaL_checkstack(L, argc, "too many arguments");
    for (int i = 0; i < argc; i++)
        lua_pushstring(L, argv[i]);
    return argc;
}

struct run_args {
    struct fleet_host *host;
    const char *chunkname, *source, *script;
    size_t len;
    int argc;
    char **argv;
    char *load_error; /* a syntax error: reported without a traceback */
};

/* Loads the fleet module and the chunk, and spawns the chunk as the main
 * task. Runs protected: any error here is reported as a script error. */
static int prepare_main(lua_State *L)
{
    struct run_args *a = lua_touserdata(L, 1);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "fleet");
    lua_call(L, 1, 1);
    lua_setglobal(L, "fleet");
    int status = a->source ? luaL_loadbufferx(L, a->source, a->len, a->chunkname, "t")
                           : luaL_loadfilex(L, a->script, "t");
    if (status != LUA_OK) {
        /* "file:line: message" says it all; a traceback would only show C. */
        a->load_error = strdup(lua_tostring(L, -1));
        return 0;
    }
    int nargs = push_args(L, a->script, a->argc, a->argv);
    fleet_sched_spawn(a->host->sched, L, nargs, true);
    return 0;
}

int fleet_host_run(struct fleet_host *host, const char *chunkname, const char *source, size_t len,
                   const char *script_path, int argc, char **argv)
{
    lua_State *L = host->L;
    struct run_args a = {host, chunkname, source, script_path, len, argc, argv, NULL};
    if (fleet_lstate_protect(L, prepare_main, &a) != LUA_OK) {
        fleet_log(FLEET_LOG_ERROR, "%s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return 1;
    }
    if (a.load_error) {
        fleet_log(FLEET_LOG_ERROR, "%s", a.load_error);
        free(a.load_error);
        return 1;
    }
    if (host->cfg.lua.script_timeout > 0)
        fleet_interrupt_set_timeout(host->cfg.lua.script_timeout);
    int signo = fleet_sched_run(host->sched);
    fleet_interrupt_cancel_timeout();
    int code = host->exit_code;
    struct fleet_task *main_task = fleet_sched_main(host->sched);
    int requested;
    if (fleet_sched_exit_requested(host->sched, &requested)) {
        code = requested; /* os.exit's, from whichever task called it first (sched.c) */
    } else if (main_task && main_task->fatal) {
        fleet_log(FLEET_LOG_ERROR, "%s", main_task->fatal);
        if (code < 1)
            code = 1;
    } else if (main_task && main_task->state == TASK_DONE && !main_task->cancelled) {
        int n = fleet_sched_push_results(L, main_task);
        if (n < 0) {
            const char *msg = luaL_tolstring(L, -1, NULL);
            fleet_log(FLEET_LOG_ERROR, "%s", msg);
            lua_pop(L, 2);
            if (code < 1)
                code = 1;
        } else {
            /* A script may return its exit code. */
            if (n >= 1 && lua_isinteger(L, -n)) {
                lua_Integer c = lua_tointeger(L, -n);
                if (c > code && c <= 255)
                    code = (int)c;
            }
            lua_pop(L, n);
        }
    }
    if (fleet_sched_unobserved_errors(host->sched) > 0 && code < 1)
        code = 1;
    if (signo)
        code = signo == SIGALRM ? 124 : 128 + signo; /* 124: a timeout, as timeout(1) says */
    return code;
}
