/* The token pool: tokens, the budgets they draw on, and the choice of a
 * token for each request.
 *
 * A budget belongs to (provider origin, account, resource) where the
 * provider counts per account — GitHub counts all of a user's tokens
 * together — and to the token alone otherwise. Until a token's account is
 * known its budget is its own. Each
 * request in flight reserves one unit, so concurrent requests cannot
 * overdraw what the last response reported.
 *
 * Callers use reserve / release / observe / status only, so a shared store
 * could replace this in-process pool without touching them. */
#ifndef FLEET_POOL_H
#define FLEET_POOL_H

#include <stdbool.h>
#include <stddef.h>

struct fleet_host;
struct fleet_provider;
struct fleet_pool;

struct fleet_budget {
    struct fleet_budget *next;
    char *origin;
    char *account; /* NULL: private to one token (label in owner_label) */
    char *owner_label;
    char *resource;
    long limit;     /* -1 unknown */
    long remaining; /* -1 unknown */
    long used;      /* -1 unknown */
    double reset;   /* epoch seconds; 0 unknown */
    int reserved;   /* requests in flight charged to it */
    int refs;       /* tokens pointing at it */
    bool untracked; /* successful responses carry no remaining count */
    struct shared_budget *shared; /* its state in the shared store, if any */
};

/* Where a token's secret comes from. */
enum fleet_token_kind {
    TOKEN_CONFIGURED,   /* a token from the configuration */
    TOKEN_APP,          /* a GitHub App's JWT (runtime/apps.c), re-signed as needed */
    TOKEN_INSTALLATION, /* an App installation's token, refreshed before it expires */
};

struct fleet_token {
    int id;
    enum fleet_token_kind kind;
    bool pinned_only;  /* used only by requests pinned to it (Apps' tokens) */
    double expires_at; /* TOKEN_INSTALLATION: when the secret expires; 0 otherwise */
    char *label;
    struct fleet_provider *provider;
    const char *secret; /* in locked, non-dumpable memory; NULL: anonymous */
    size_t secret_len;
    char *username;     /* HTTP Basic user, or NULL */
    char *account;      /* NULL until known */
    bool account_from_config;
    bool account_lookup; /* a lookup of the account is under way or done */
    bool disabled;       /* 401: not used again this run */
    double paused_until; /* secondary limit */
    double last_strike;
    int strikes;
    int inflight;
    int cwnd;   /* concurrency allowed now: 1 until the first response, then up to `proven` + 2 */
    int cap;    /* ceiling: per_token_concurrency, lowered by secondary limits */
    int proven; /* most requests in flight at once (as sent) that all succeeded */
    long answered; /* answers without push-back, each counted when seen as it came */
    char cache_id[65]; /* the credential's identity in the cache; "" until computed */
    struct fleet_token_budget {
        char *resource;
        struct fleet_budget *budget;
    } *budgets; /* one per resource the token has drawn on */
    int nbudgets;
};

/* What a response said about a budget. */
struct fleet_budget_obs {
    bool has_limit, has_remaining, has_used, has_reset;
    long limit, remaining, used;
    double reset; /* epoch seconds */
    char resource[32];
};

/* Why no token could be reserved. */
enum fleet_pool_block {
    POOL_BUSY,     /* tokens at their concurrency cap: wait for a completion */
    POOL_WAIT,     /* budgets spent or tokens paused: wait until *wake_at */
    POOL_DISABLED, /* every token of the provider is disabled */
};

struct fleet_pool *fleet_pool_new(struct fleet_host *host, char *err, size_t errlen);
void fleet_pool_free(struct fleet_pool *pool);

/* Chooses a token for one request and reserves a unit of its budget for
 * `resource`: among usable tokens, the one with the most unreserved budget,
 * `preferred` winning ties. With `pinned`, only that token is considered.
 * `free_request` requests (GitHub's /rate_limit) need no budget. Returns
 * NULL and sets *block (and *wake_at for POOL_WAIT) when none is usable. */
struct fleet_token *fleet_pool_reserve(struct fleet_pool *pool, struct fleet_provider *p, const char *resource,
                                       struct fleet_token *pinned, struct fleet_token *preferred,
                                       bool free_request, double now, enum fleet_pool_block *block,
                                       double *wake_at);

/* Ends a reservation made by fleet_pool_reserve. */
void fleet_pool_release(struct fleet_pool *pool, struct fleet_token *t, const char *resource, bool free_request);

/* Settles a budget from what a response reported. `success`: a 2xx, whose
 * lack of a remaining count means the provider does not report one. */
void fleet_pool_observe(struct fleet_pool *pool, struct fleet_token *t, const char *resource,
                        const struct fleet_budget_obs *obs, bool success, double now);

/* The server refused for a spent budget (primary limit): nothing more goes
 * out on this budget before `reset` (epoch; 0 if unknown). */
void fleet_pool_spent(struct fleet_pool *pool, struct fleet_token *t, const char *resource, double reset,
                      double now);

/* A secondary limit: pause the token for `wait` seconds (< 0: the growing
 * default) and lower its concurrency below what triggered it. Returns the
 * pause in seconds. */
double fleet_pool_pause(struct fleet_pool *pool, struct fleet_token *t, double wait, int sent_inflight,
                        double now);

/* 401: the token is not used again this run. */
void fleet_pool_disable(struct fleet_pool *pool, struct fleet_token *t);

/* A request on t was answered without push-back while the provider held
 * `held` requests of t at once (itself included), and t's unanswered
 * requests were sent with at most `probing` in flight: its window may grow,
 * up to the cap. */
void fleet_pool_success(struct fleet_pool *pool, struct fleet_token *t, int held, int probing);

/* Records the account a token belongs to; tokens of one account then share
 * one budget per resource. */
void fleet_pool_set_account(struct fleet_pool *pool, struct fleet_token *t, const char *account);

struct fleet_token *fleet_pool_find(struct fleet_pool *pool, struct fleet_provider *p, const char *label);

/* Adds a token whose secret its owner (runtime/apps.c) keeps in locked
 * memory and sets later; the pool made room for the configured Apps when
 * it was created. The token is used only by requests pinned to it and
 * its account is never looked up (its budget is its own). Returns NULL
 * when no room is left. */
struct fleet_token *fleet_pool_add_token(struct fleet_pool *pool, struct fleet_provider *p, const char *label,
                                         enum fleet_token_kind kind);
int fleet_pool_count(struct fleet_pool *pool);
struct fleet_token *fleet_pool_at(struct fleet_pool *pool, int i);

/* Among the provider's enabled tokens, the one that becomes usable first
 * (its pause ends or its budget resets); NULL if none is waiting. */
struct fleet_token *fleet_pool_first_free(struct fleet_pool *pool, const struct fleet_provider *p);

/* Human-readable state of a token: ok, spent, paused, disabled. */
const char *fleet_pool_state(struct fleet_pool *pool, struct fleet_token *t, double now);

/* The budget a token draws on for resource, created if needed. */
struct fleet_budget *fleet_pool_budget(struct fleet_pool *pool, struct fleet_token *t, const char *resource);

#endif
