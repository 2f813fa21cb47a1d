/* Configuration: YAML (libyaml) → validated C structs.
 *
 * Every error names file:line:column and never carries a value read from the
 * file (a value may be a secret); variables are named, never expanded in
 * messages. Secrets live only in fleet_token_conf.secret. */
#ifndef FLEET_CONFIG_H
#define FLEET_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

struct fleet_token_conf {
    char *label;    /* from config, else "<provider>#<n>" (n from 1) */
    char *secret;   /* the token or app password; NEVER printed or logged */
    char *username; /* optional: HTTP Basic user (Bitbucket app passwords) */
    char *account;  /* optional: the account the token belongs to */
    char *where;    /* "file:line:column" of the token's entry */
};

/* A GitHub App (providers.NAME.apps): the host signs its JWT and gets
 * installation tokens with it. */
#define FLEET_APP_MAX_INSTALLATIONS 64 /* per app: auto uses the first 64 */
struct fleet_app_conf {
    char *label;
    char *app_id;       /* the JWT's iss */
    char *private_key;  /* PEM; NEVER printed or logged */
    bool installations_auto;
    char **installations; /* ids or account logins, when not auto */
    size_t ninstallations;
    char *where;
};

struct fleet_provider_conf {
    char *name;     /* instance name: the key under providers: */
    char *plugin;   /* plugin that implements it; defaults to name */
    char *base_url; /* NULL: the plugin's default */
    struct fleet_token_conf *tokens;
    size_t ntokens;
    struct fleet_app_conf *apps;
    size_t napps;
    char *where;    /* "file:line:column" of the key */
};

struct fleet_http_conf {
    int max_connections;       /* global cap on requests in flight (64) */
    int per_token_concurrency; /* cap per token (8) */
    double timeout;            /* total seconds per request (30) */
    double connect_timeout;    /* seconds (10) */
    long long max_response_size; /* bytes (32 MiB) */
    char *ca_file;             /* NULL: system default */
    char *ca_path;
    bool insecure;             /* disable TLS verification: tests only */
};

struct fleet_retry_conf {
    int max_attempts;      /* 6 */
    double base_delay;     /* 0.5 s */
    double max_delay;      /* 60 s */
    double secondary_wait; /* 60 s */
    double reset_margin;   /* 1 s */
    double max_wait;       /* 3600 s */
};

struct fleet_cache_conf {
    bool enabled;        /* true */
    char *path;          /* $XDG_CACHE_HOME/gitfleet/http.sqlite */
    long long max_size;  /* bytes (256 MiB) */
};

struct fleet_lua_conf {
    long long memory_limit;     /* bytes for the Lua state (1 GiB) */
    long long plugin_instructions; /* instruction budget to load one plugin (10M) */
    double script_timeout;      /* seconds a run may last, 0: no limit (0) */
};

/* shared: token budgets (and the work queue) in Redis, for many processes
 * on many machines. Absent: the in-process pool alone. */
struct fleet_shared_conf {
    bool enabled;
    char *url;        /* as written: redis://HOST[:PORT][/DB] or unix:///PATH[?db=N] */
    char *host;       /* NULL for a unix socket */
    int port;         /* 6379 */
    char *socket;     /* unix socket path, or NULL */
    int db;           /* 0 */
    char *password;   /* from ${VAR} or password_file; NEVER printed or logged */
    char *prefix;     /* key prefix ("gitfleet") */
    double lease;     /* seconds a dead worker's reservations and queue entries are held (30) */
    int block;        /* budget units reserved per Redis call (8) */
    double connect_timeout; /* seconds (5) */
    int max_attempts; /* queue: tries of a failing owner before it is parked (3) */
    char *where;      /* "file:line:column" of the section */
};

enum fleet_log_level { FLEET_LOG_ERROR, FLEET_LOG_WARN, FLEET_LOG_INFO, FLEET_LOG_DEBUG };

struct fleet_config {
    char *path; /* the file loaded; NULL when the built-in defaults apply */
    struct fleet_provider_conf *providers;
    size_t nproviders;
    struct fleet_http_conf http;
    struct fleet_retry_conf retry;
    struct fleet_cache_conf cache;
    struct fleet_lua_conf lua;
    struct fleet_shared_conf shared;
    char **plugin_paths;
    size_t nplugin_paths;
    int log_level; /* enum fleet_log_level */
};

/* Where the configuration comes from: explicit (--config), else
 * $GITFLEET_CONFIG, else ./gitfleet.yaml, else
 * $XDG_CONFIG_HOME/gitfleet/config.yaml (~/.config when unset).
 * Returns a malloc'd path, or NULL when none exists (built-in defaults).
 * An explicit or $GITFLEET_CONFIG path is returned even if missing, so that
 * loading it reports the error. */
char *fleet_config_find(const char *explicit_path);

/* Fills cfg with the built-in defaults (no providers: every installed plugin
 * is used unauthenticated at its default base URL). */
void fleet_config_defaults(struct fleet_config *cfg);

/* Loads and validates path into cfg (which starts from the defaults).
 * On error returns -1 and writes one line "file:line:column: message" to err.
 * Warnings (a token file readable by others) go through fleet_log.
 * An error about the whole file (it cannot be read) is "file: message".
 * On error cfg holds what was loaded before it; fleet_config_free it as usual.
 * Relative paths in the file are resolved against the file's directory, so
 * every path in cfg is absolute. Tokens that expand to "" are left out. */
int fleet_config_load(struct fleet_config *cfg, const char *path, char *err, size_t errlen);

/* The shared: section's defaults (not enabled); frees what sc held. */
void fleet_config_shared_defaults(struct fleet_shared_conf *sc);

/* Zeroes every secret (and username) before freeing; cfg is left zeroed. */
void fleet_config_free(struct fleet_config *cfg);

/* Expands a leading "~" or "~/" to $HOME. Returns a malloc'd string. */
char *fleet_expand_home(const char *path);

#endif
