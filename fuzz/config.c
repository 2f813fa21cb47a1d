/* The YAML configuration loader (config.c over libyaml) on arbitrary files.
 *
 * The input is written to one file in a private folder under /dev/shm
 * (made once, rewritten each run) and loaded with fleet_config_defaults +
 * fleet_config_load, then freed with fleet_config_free; leaks are found by
 * LeakSanitizer. The folder also holds the token files the seeds name.
 *
 * Checks on error: the message is one line that starts with "PATH:" and
 * never holds a secret from the environment or a token file (unless the
 * file spells it out itself, as a key that may be quoted back). On success:
 * every path is absolute, names, labels, URLs and tokens are in the form
 * config.h promises, numbers are inside their ranges. Either way
 * fleet_config_free leaves the struct zeroed. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "fuzz_check.h"
#include "log.h"

#define ENV_SECRET "ghp_FUZZENVSECRET0123456789abcdefghijkl"
#define FILE_SECRET "glpat-FUZZFILESECRET0123456789"

static char dir[64];
static char path[96];

static void write_file(const char *name, const char *text, mode_t mode)
{
    char p[128];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text) || fchmod(fd, mode) != 0)
        fuzz_fail("cannot write %s: %s", p, strerror(errno));
    close(fd);
}

static void remove_dir(void)
{
    static const char *const names[] = {"config.yaml", "token", "token-shared", "token-empty",
                                        "token-lines", "cache", "plugins", NULL};
    char p[128];
    for (const char *const *n = names; *n; n++) {
        snprintf(p, sizeof p, "%s/%s", dir, *n);
        if (unlink(p) != 0)
            rmdir(p);
    }
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    snprintf(dir, sizeof dir, "/dev/shm/gitfleet-fuzz-XXXXXX");
    if (!mkdtemp(dir)) {
        snprintf(dir, sizeof dir, "/tmp/gitfleet-fuzz-XXXXXX");
        if (!mkdtemp(dir))
            fuzz_fail("mkdtemp: %s", strerror(errno));
    }
    snprintf(path, sizeof path, "%s/config.yaml", dir);
    write_file("token", FILE_SECRET "\n", 0600);
    write_file("token-shared", FILE_SECRET "\r\n", 0644); /* warned about: readable by others */
    write_file("token-empty", "", 0600);
    write_file("token-lines", "one\ntwo\n", 0600);
    char sub[128];
    snprintf(sub, sizeof sub, "%s/plugins", dir);
    mkdir(sub, 0700);
    atexit(remove_dir);

    /* The variables the seeds use; the unset ones must be unset. */
    setenv("GITHUB_TOKEN", ENV_SECRET, 1);
    setenv("GITLAB_TOKEN", ENV_SECRET "-gl", 1);
    setenv("GITHUB_CI_TOKEN", "", 1);
    unsetenv("GITFLEET_SPEC_UNSET_VARIABLE");
    unsetenv("GITFLEET_EXTRA_PLUGINS");
    unsetenv("GHE_URL");
    setenv("HOME", dir, 1);
    snprintf(sub, sizeof sub, "%s/cache", dir);
    setenv("XDG_CACHE_HOME", sub, 1);
    /* Warnings (a token file readable by others, http.insecure) are still
     * decided, just not printed on every run. */
    fleet_log_set_level(FLEET_LOG_ERROR);
    return 0;
}

static bool valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_' || *s == '-'))
            return false;
    return true;
}

static bool has_control(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    return false;
}

static void check_where(const char *where, const char *what)
{
    size_t n = strlen(path);
    FUZZ_CHECK(where && strncmp(where, path, n) == 0 && where[n] == ':', "%s: where '%s' is not PATH:line:col",
               what, where ? where : "(null)");
}

static void check_path(const char *p, const char *what)
{
    FUZZ_CHECK(!p || p[0] == '/', "%s is not absolute: %s", what, p);
}

static void check_loaded(const struct fleet_config *cfg)
{
    FUZZ_CHECK(cfg->path && strcmp(cfg->path, path) == 0, "cfg->path is not the file loaded");
    check_path(cfg->http.ca_file, "http.ca_file");
    check_path(cfg->http.ca_path, "http.ca_path");
    check_path(cfg->cache.path, "cache.path");
    FUZZ_CHECK(cfg->nplugin_paths == 0 || cfg->plugin_paths, "plugin_paths missing");
    for (size_t i = 0; i < cfg->nplugin_paths; i++)
        check_path(cfg->plugin_paths[i], "plugins.paths[i]");
    FUZZ_CHECK(cfg->http.max_connections >= 1 && cfg->http.max_connections <= 100000, "http.max_connections %d",
               cfg->http.max_connections);
    FUZZ_CHECK(cfg->http.per_token_concurrency >= 1 && cfg->http.per_token_concurrency <= 10000,
               "http.per_token_concurrency %d", cfg->http.per_token_concurrency);
    FUZZ_CHECK(cfg->http.timeout >= 0.001 && cfg->http.timeout <= 86400, "http.timeout %g", cfg->http.timeout);
    FUZZ_CHECK(cfg->http.connect_timeout >= 0.001 && cfg->http.connect_timeout <= 86400,
               "http.connect_timeout %g", cfg->http.connect_timeout);
    FUZZ_CHECK(cfg->http.max_response_size >= 1024 && cfg->http.max_response_size <= (64LL << 30),
               "http.max_response_size %lld", cfg->http.max_response_size);
    FUZZ_CHECK(cfg->retry.max_attempts >= 1 && cfg->retry.max_attempts <= 100, "retry.max_attempts %d",
               cfg->retry.max_attempts);
    FUZZ_CHECK(cfg->retry.base_delay >= 0 && cfg->retry.max_delay >= cfg->retry.base_delay &&
                   cfg->retry.max_delay <= 86400,
               "retry delays %g..%g", cfg->retry.base_delay, cfg->retry.max_delay);
    FUZZ_CHECK(cfg->cache.max_size >= (1LL << 20) && cfg->cache.max_size <= (64LL << 40), "cache.max_size %lld",
               cfg->cache.max_size);
    FUZZ_CHECK(cfg->lua.memory_limit >= (16LL << 20) && cfg->lua.memory_limit <= (1LL << 40),
               "lua.memory_limit %lld", cfg->lua.memory_limit);
    FUZZ_CHECK(cfg->lua.plugin_instructions >= 1000 && cfg->lua.plugin_instructions <= 1000000000000LL,
               "lua.plugin_instructions %lld", cfg->lua.plugin_instructions);
    FUZZ_CHECK(cfg->log_level >= FLEET_LOG_ERROR && cfg->log_level <= FLEET_LOG_DEBUG, "log level %d",
               cfg->log_level);
    for (size_t i = 0; i < cfg->nproviders; i++) {
        const struct fleet_provider_conf *pv = &cfg->providers[i];
        FUZZ_CHECK(valid_name(pv->name), "provider name '%s'", pv->name);
        FUZZ_CHECK(pv->plugin && valid_name(pv->plugin), "plugin name of provider %zu", i);
        check_where(pv->where, "provider");
        for (size_t j = 0; j < i; j++)
            FUZZ_CHECK(strcmp(cfg->providers[j].name, pv->name) != 0, "provider '%s' twice", pv->name);
        if (pv->base_url) {
            size_t n = strlen(pv->base_url);
            FUZZ_CHECK(strncasecmp(pv->base_url, "http://", 7) == 0 || strncasecmp(pv->base_url, "https://", 8) == 0,
                       "base_url of %s is not http(s)", pv->name);
            FUZZ_CHECK(n > 0 && pv->base_url[n - 1] != '/', "base_url of %s ends with '/'", pv->name);
            FUZZ_CHECK(!has_control(pv->base_url) && !strchr(pv->base_url, ' '), "base_url of %s has a space",
                       pv->name);
        }
        for (size_t t = 0; t < pv->ntokens; t++) {
            const struct fleet_token_conf *tk = &pv->tokens[t];
            FUZZ_CHECK(tk->secret && *tk->secret && !has_control(tk->secret), "token %zu of %s", t, pv->name);
            FUZZ_CHECK(tk->label && *tk->label && strlen(tk->label) <= 128, "label of token %zu of %s", t, pv->name);
            for (const char *c = tk->label; *c; c++)
                FUZZ_CHECK((unsigned char)*c > 0x20 && (unsigned char)*c < 0x7f, "label of token %zu of %s", t,
                           pv->name);
            FUZZ_CHECK(!tk->username || (*tk->username && !strchr(tk->username, ':') && !has_control(tk->username)),
                       "username of token %zu of %s", t, pv->name);
            FUZZ_CHECK(!tk->account || (*tk->account && !has_control(tk->account)), "account of token %zu of %s", t,
                       pv->name);
            check_where(tk->where, "token");
            for (size_t u = 0; u < t; u++)
                FUZZ_CHECK(strcmp(pv->tokens[u].label, tk->label) != 0, "label '%s' twice in %s", tk->label,
                           pv->name);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || (size && write(fd, data, size) != (ssize_t)size))
        fuzz_fail("cannot write %s: %s", path, strerror(errno));
    close(fd);

    struct fleet_config cfg;
    char err[512];
    memset(err, 'x', sizeof err);
    fleet_config_defaults(&cfg);
    int rc = fleet_config_load(&cfg, path, err, sizeof err);
    FUZZ_CHECK(rc == 0 || rc == -1, "fleet_config_load returned %d", rc);
    FUZZ_CHECK(memchr(err, '\0', sizeof err), "the message is not NUL-terminated");
    if (rc == 0) {
        FUZZ_CHECK(err[0] == '\0', "a message on success: %s", err);
        check_loaded(&cfg);
    } else {
        size_t n = strlen(path);
        FUZZ_CHECK(strncmp(err, path, n) == 0 && err[n] == ':', "the message does not start with the path: %s",
                   err);
        FUZZ_CHECK(strlen(err) > n + 2, "an empty message: %s", err);
        FUZZ_CHECK(!has_control(err), "the message is not one line: %s", err);
        /* A secret the file itself spells out may come back as an echoed
         * key; one it only names (${GITHUB_TOKEN}, token_file:) must not. */
        FUZZ_CHECK(!strstr(err, ENV_SECRET) || memmem(data, size, ENV_SECRET, strlen(ENV_SECRET)),
                   "a secret from the environment in the message: %s", err);
        FUZZ_CHECK(!strstr(err, FILE_SECRET) || memmem(data, size, FILE_SECRET, strlen(FILE_SECRET)),
                   "a secret from a token file in the message: %s", err);
    }
    fleet_config_free(&cfg);
    static const struct fleet_config zero;
    FUZZ_CHECK(memcmp(&cfg, &zero, sizeof cfg) == 0, "fleet_config_free left the struct non-zero");
    return 0;
}
