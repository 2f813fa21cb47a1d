/* gitfleet: the command line. Global options, configuration, then one
 * command — each command is a Lua script compiled into the binary, written
 * on the public fleet API (runtime/lua/commands/). */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "config.h"
#include "embedded.h"
#include "host.h"
#include "log.h"
#include "lstate.h"

static const char usage[] =
    "usage: gitfleet [OPTIONS] COMMAND [ARGS...]\n"
    "\n"
    "A scriptable runtime for Git hosting APIs (GitHub, GitLab, Bitbucket, Gitea).\n"
    "\n"
    "Commands:\n"
    "  run SCRIPT [ARGS...]   run a Lua script with the fleet API\n"
    "  fetch OWNER...         fetch every repository of the owners (NDJSON, JSON or CSV)\n"
    "  rate-limit             show each token's rate-limit budget\n"
    "  providers              list the providers and their plugins\n"
    "  config check           validate the configuration and show what was loaded\n"
    "  cache stats|clear      inspect or empty the HTTP cache\n"
    "  queue push|status      fill or inspect a shared work queue (Redis, shared:)\n"
    "  worker                 fetch owners from a shared queue into per-owner files\n"
    "  help [COMMAND]         show help for a command\n"
    "\n"
    "Options (also accepted after COMMAND):\n"
    "  --config FILE          configuration file (else $GITFLEET_CONFIG, ./gitfleet.yaml,\n"
    "                         $XDG_CONFIG_HOME/gitfleet/config.yaml)\n"
    "  -v, --verbose          log waits, retries and disabled tokens (-vv: every request)\n"
    "  -q, --quiet            only warnings and errors; no progress line\n"
    "  --no-progress          no progress line\n"
    "  --no-cache             do not use the HTTP cache\n"
    "  -h, --help             show this help (COMMAND --help: the command's)\n"
    "  -V, --version          show the version\n"
    "\n"
    "Exit status: 0 success, 1 some work failed (the rest was delivered),\n"
    "2 usage or configuration error. See gitfleet(1).\n";

struct options {
    const char *config;
    int verbosity;
    int quiet;
    int no_progress;
    int no_cache;
};

/* Global options may stand before COMMAND or anywhere after it (for `run`,
 * only before SCRIPT). Returns 1 if argv[*i] was one (consuming its value),
 * 0 if not, -1 on a usage error. */
static int global_option(int argc, char **argv, int *i, struct options *o)
{
    const char *a = argv[*i];
    if (strcmp(a, "--config") == 0) {
        if (*i + 1 >= argc) {
            fprintf(stderr, "gitfleet: --config needs a FILE\n");
            return -1;
        }
        o->config = argv[++*i];
        return 1;
    }
    if (strncmp(a, "--config=", 9) == 0) {
        o->config = a + 9;
        return 1;
    }
    if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0) {
        o->verbosity++;
        return 1;
    }
    if (strcmp(a, "-vv") == 0) {
        o->verbosity += 2;
        return 1;
    }
    if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0) {
        o->quiet = 1;
        return 1;
    }
    if (strcmp(a, "--no-progress") == 0) {
        o->no_progress = 1;
        return 1;
    }
    if (strcmp(a, "--no-cache") == 0) {
        o->no_cache = 1;
        return 1;
    }
    return 0;
}

static int usage_error(const char *fmt, const char *arg)
{
    fputs("gitfleet: ", stderr);
    fprintf(stderr, fmt, arg);
    fputs("\nTry 'gitfleet --help'.\n", stderr);
    return 2;
}

/* The providers folder: next to the binary in a source tree, else the
 * installed one (PREFIX/share/gitfleet/providers), found from the binary's
 * own path so an installation can be moved. */
static char *find_providers_dir(void)
{
    const char *env = getenv("GITFLEET_PROVIDERS");
    if (env && *env)
        return strdup(env);
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return NULL;
    exe[n] = 0;
    char *dir = dirname(exe);
    char path[PATH_MAX + 64];
    struct stat st;
    snprintf(path, sizeof path, "%s/providers", dir);
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return strdup(path);
    snprintf(path, sizeof path, "%s/../share/gitfleet/providers", dir);
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return realpath(path, NULL);
    return NULL;
}

/* Command names on the command line -> built-in chunk names. */
static const struct {
    const char *name;
    const char *chunk;
} commands[] = {
    {"fetch", "commands.fetch"},
    {"rate-limit", "commands.rate_limit"},
    {"providers", "commands.providers"},
    {"config", "commands.config"},
    {"cache", "commands.cache"},
    {"queue", "commands.queue"},
    {"worker", "commands.worker"},
    {NULL, NULL},
};

static const char *command_chunk(const char *name)
{
    for (int i = 0; commands[i].name; i++)
        if (strcmp(commands[i].name, name) == 0)
            return commands[i].chunk;
    return NULL;
}

/* Page bodies, their decoded records and the output buffers are freed and
 * allocated again for every page. With glibc's defaults the freed top of
 * the heap goes back to the kernel at once and comes back one page fault at
 * a time: on the 200-owner job that was some 40,000 faults for a peak of
 * 45 MB, and a fifth of a virtual machine's CPU time. A heap that keeps 32
 * MB free at its top is faulted in about once; the peak stays the same. */
static void keep_heap_pages(void)
{
#ifdef M_TOP_PAD
    mallopt(M_TOP_PAD, 32 << 20);
#endif
}

/* A standard stream the caller closed (`>&-`) would have its number taken
 * by the first file or socket opened (libcurl's socketpair, say), and
 * records or messages meant for it would go there. Each closed one is
 * opened on /dev/null: stdin reads nothing, stderr's messages are dropped,
 * and stdout is opened read-only, so writing records to it fails and says
 * so (exit 1) instead of losing them. */
static void open_closed_std_streams(void)
{
    for (int fd = 0; fd <= 2; fd++) {
        if (fcntl(fd, F_GETFD) != -1 || errno != EBADF)
            continue;
        int n = open("/dev/null", fd == 2 ? O_WRONLY : O_RDONLY);
        if (n >= 0 && n != fd) {
            dup2(n, fd);
            close(n);
        }
    }
}

int main(int argc, char **argv)
{
    open_closed_std_streams();
    keep_heap_pages();
    /* Secrets live in this process: no core dumps of it. */
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    srandom((unsigned)time(NULL) ^ (unsigned)getpid());

    struct options o = {0};
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        int r = global_option(argc, argv, &i, &o);
        if (r < 0)
            return 2;
        if (r > 0)
            continue;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(usage, stdout);
            return 0;
        }
        if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
            printf("gitfleet %s (%s, %s)\n", FLEET_VERSION, LUA_RELEASE, curl_version());
            return 0;
        }
        if (a[0] == '-')
            return usage_error("unknown option '%s'", a);
        break;
    }
    if (i >= argc) {
        fputs(usage, stderr);
        return 2;
    }
    const char *command = argv[i++];
    if (strcmp(command, "help") == 0) {
        if (i >= argc) {
            fputs(usage, stdout);
            return 0;
        }
        command = argv[i];
        argv[i] = "--help";
    }

    /* The command's own arguments, global options taken out: compacted in
     * place in argv (an argument only ever moves towards the front). */
    char **rest = argv + i;
    int nrest = 0;
    const char *script = NULL;
    const char *chunk = NULL;
    if (strcmp(command, "run") == 0) {
        for (; i < argc; i++) {
            int r = global_option(argc, argv, &i, &o);
            if (r < 0)
                return 2;
            if (r > 0)
                continue;
            if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
                fputs("usage: gitfleet run SCRIPT [ARGS...]\n\n"
                      "Runs a Lua 5.4 script with the fleet API (see docs/scripting.md).\n"
                      "The script gets its arguments in `arg` (arg[0] is SCRIPT) and in `...`;\n"
                      "an integer it returns becomes the exit status.\n",
                      stdout);
                return 0;
            }
            break;
        }
        if (i >= argc)
            return usage_error("%s", "run needs a SCRIPT");
        script = argv[i++];
        rest = argv + i;
        nrest = argc - i;
    } else {
        chunk = command_chunk(command);
        if (!chunk)
            return usage_error("unknown command '%s'", command);
        for (; i < argc; i++) {
            int r = global_option(argc, argv, &i, &o);
            if (r < 0)
                return 2;
            if (r == 0)
                rest[nrest++] = argv[i];
        }
    }

    if (o.quiet)
        fleet_log_set_level(FLEET_LOG_WARN);
    char *config_path = fleet_config_find(o.config);
    struct fleet_config cfg;
    fleet_config_defaults(&cfg);
    char err[2048];
    if (config_path && fleet_config_load(&cfg, config_path, err, sizeof err) != 0) {
        fleet_log(FLEET_LOG_ERROR, "%s", err);
        fleet_config_free(&cfg);
        free(config_path);
        return 2;
    }
    free(config_path);
    int level = o.quiet ? FLEET_LOG_WARN : cfg.log_level;
    if (o.verbosity >= 2)
        level = FLEET_LOG_DEBUG;
    else if (o.verbosity == 1 && level < FLEET_LOG_INFO)
        level = FLEET_LOG_INFO;
    fleet_log_set_level(level);

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fleet_log(FLEET_LOG_ERROR, "cannot initialise libcurl");
        return 1;
    }
    if (o.no_cache)
        cfg.cache.enabled = false;
    char *providers_dir = find_providers_dir();
    struct fleet_host *host = fleet_host_new(&cfg, providers_dir, err, sizeof err);
    free(providers_dir);
    if (!host) {
        fleet_log(FLEET_LOG_ERROR, "%s", err);
        fleet_config_free(&cfg);
        curl_global_cleanup();
        return 2;
    }
    host->verbosity = o.verbosity;
    host->quiet = o.quiet;
    host->no_cache = o.no_cache;
    host->progress = !o.quiet && !o.no_progress && isatty(2);

    int code;
    if (script) {
        code = fleet_host_run(host, NULL, NULL, 0, script, nrest, rest);
    } else {
        lua_State *L = host->L;
        if (fleet_lstate_load_builtin(L, chunk) != LUA_OK) {
            fleet_log(FLEET_LOG_ERROR, "%s", lua_tostring(L, -1));
            code = 1;
        } else {
            lua_pop(L, 1);
            char name[64];
            snprintf(name, sizeof name, "gitfleet %s", command);
            code = 1;
            for (const struct fleet_embedded *e = fleet_embedded; e->name; e++)
                if (strcmp(e->name, chunk) == 0)
                    code = fleet_host_run(host, e->chunkname, e->source, e->len, name, nrest, rest);
        }
    }
    fleet_host_free(host);
    curl_global_cleanup();
    if (fflush(stdout) != 0 && errno != EPIPE && code == 0)
        code = 1;
    return code;
}
