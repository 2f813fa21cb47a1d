/* The token pool. See pool.h for the rules; the comments here say why. */
#include "pool.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "host.h"
#include "log.h"
#include "pool_shared.h"
#include "redact.h"
#include "strmap.h"

struct fleet_pool {
    struct fleet_host *host;
    struct fleet_token *tokens;
    int ntokens;
    int capacity; /* ntokens plus room for Apps' tokens (never reallocated: tokens are held by pointer) */
    struct fleet_budget *budgets;
    /* Lookups that must not grow with the number of tokens: a token by
     * provider and label, a budget by its key (budget_key). */
    struct fleet_strmap tokens_by_label, budgets_by_key;
    char *secret_arena; /* locked, excluded from core dumps */
    size_t arena_size;
};

static char *xstrdup(const char *s)
{
    char *d = s ? strdup(s) : NULL;
    if (s && !d) {
        fleet_log(FLEET_LOG_ERROR, "out of memory");
        exit(70);
    }
    return d;
}

/* Joins the parts, each followed by a NUL, into one key; *len its length.
 * The caller frees it. */
static char *join_key(const char *const *parts, int n, size_t *len)
{
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += strlen(parts[i]) + 1;
    char *key = malloc(total), *p = key;
    if (!key) {
        fleet_log(FLEET_LOG_ERROR, "out of memory");
        exit(70);
    }
    for (int i = 0; i < n; i++) {
        size_t l = strlen(parts[i]) + 1;
        memcpy(p, parts[i], l);
        p += l;
    }
    *len = total;
    return key;
}

static void index_token(struct fleet_pool *pool, struct fleet_token *t)
{
    size_t len;
    char *key = join_key((const char *const[]){t->provider->name, t->label}, 2, &len);
    fleet_strmap_put(&pool->tokens_by_label, key, len, t);
    free(key);
}

static void register_basic_secret(const char *user, const char *secret, size_t len)
{
    /* The Authorization value of HTTP Basic is base64(user:secret): a
     * secret in its own right, so it is redacted too. */
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t ulen = strlen(user), n = ulen + 1 + len;
    unsigned char *raw = malloc(n);
    char *enc = malloc(4 * ((n + 2) / 3) + 1);
    if (!raw || !enc) {
        fleet_log(FLEET_LOG_ERROR, "out of memory");
        exit(70);
    }
    memcpy(raw, user, ulen);
    raw[ulen] = ':';
    memcpy(raw + ulen + 1, secret, len);
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)raw[i] << 16 | (i + 1 < n ? (unsigned)raw[i + 1] << 8 : 0) |
                     (i + 2 < n ? raw[i + 2] : 0);
        enc[o++] = b64[v >> 18 & 63];
        enc[o++] = b64[v >> 12 & 63];
        enc[o++] = i + 1 < n ? b64[v >> 6 & 63] : '=';
        enc[o++] = i + 2 < n ? b64[v & 63] : '=';
    }
    fleet_log_add_secret(enc, o);
    explicit_bzero(raw, n);
    explicit_bzero(enc, o);
    free(raw);
    free(enc);
}

/* Room for each App's JWT token and its installations' tokens. */
static int app_token_room(const struct fleet_config *cfg)
{
    int n = 0;
    for (size_t i = 0; i < cfg->nproviders; i++)
        for (size_t j = 0; j < cfg->providers[i].napps; j++) {
            const struct fleet_app_conf *a = &cfg->providers[i].apps[j];
            n += 1 + (a->installations_auto ? FLEET_APP_MAX_INSTALLATIONS : (int)a->ninstallations);
        }
    return n;
}

struct fleet_token *fleet_pool_add_token(struct fleet_pool *pool, struct fleet_provider *p, const char *label,
                                         enum fleet_token_kind kind)
{
    if (pool->ntokens >= pool->capacity)
        return NULL;
    struct fleet_token *t = &pool->tokens[pool->ntokens];
    memset(t, 0, sizeof *t);
    t->id = pool->ntokens++;
    t->kind = kind;
    t->pinned_only = true;
    t->provider = p;
    t->label = xstrdup(label);
    t->account_lookup = true;
    t->cap = pool->host->cfg.http.per_token_concurrency;
    t->cwnd = t->cap < 2 ? t->cap : 2;
    index_token(pool, t);
    return t;
}

struct fleet_pool *fleet_pool_new(struct fleet_host *host, char *err, size_t errlen)
{
    struct fleet_pool *pool = calloc(1, sizeof *pool);
    int count = 0;
    size_t arena = 0;
    if (!pool)
        goto oom;
    pool->host = host;
    for (size_t i = 0; i < host->nproviders; i++) {
        int n = host->providers[i].ntokens;
        count += n ? n : 1; /* a provider without tokens gets an anonymous one */
    }
    for (size_t i = 0; i < host->cfg.nproviders; i++)
        for (size_t j = 0; j < host->cfg.providers[i].ntokens; j++)
            arena += strlen(host->cfg.providers[i].tokens[j].secret) + 1;
    count += app_token_room(&host->cfg);
    pool->capacity = count;
    pool->tokens = calloc((size_t)count, sizeof *pool->tokens);
    if (!pool->tokens)
        goto oom;
    if (arena) {
        pool->arena_size = arena;
        pool->secret_arena = mmap(NULL, arena, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (pool->secret_arena == MAP_FAILED) {
            pool->secret_arena = NULL;
            goto oom;
        }
        /* Keep secrets out of swap and out of core dumps; both are best
         * effort (mlock needs RLIMIT_MEMLOCK room). */
        (void)mlock(pool->secret_arena, arena);
        (void)madvise(pool->secret_arena, arena, MADV_DONTDUMP);
    }
    size_t used = 0;
    for (size_t i = 0; i < host->nproviders; i++) {
        struct fleet_provider *p = &host->providers[i];
        const struct fleet_provider_conf *pc = NULL;
        for (size_t k = 0; k < host->cfg.nproviders; k++)
            if (strcmp(host->cfg.providers[k].name, p->name) == 0)
                pc = &host->cfg.providers[k];
        int ntok = pc ? (int)pc->ntokens : 0;
        for (int j = 0; j < (ntok ? ntok : 1); j++) {
            struct fleet_token *t = &pool->tokens[pool->ntokens];
            t->id = pool->ntokens++;
            t->provider = p;
            t->cap = host->cfg.http.per_token_concurrency;
            t->cwnd = 1; /* until the first response says the token works */
            if (!ntok) {
                t->label = xstrdup("anonymous");
                index_token(pool, t);
                continue;
            }
            const struct fleet_token_conf *tc = &pc->tokens[j];
            size_t len = strlen(tc->secret);
            memcpy(pool->secret_arena + used, tc->secret, len + 1);
            t->secret = pool->secret_arena + used;
            t->secret_len = len;
            used += len + 1;
            t->label = xstrdup(tc->label);
            index_token(pool, t);
            t->username = xstrdup(tc->username);
            if (tc->account) {
                t->account = xstrdup(tc->account);
                t->account_from_config = true;
                t->account_lookup = true;
            }
            fleet_log_add_secret(t->secret, len);
            if (t->username)
                register_basic_secret(t->username, t->secret, len);
        }
    }
    return pool;
oom:
    snprintf(err, errlen, "cannot set up the token pool: out of memory");
    fleet_pool_free(pool);
    return NULL;
}

void fleet_pool_free(struct fleet_pool *pool)
{
    if (!pool)
        return;
    for (int i = 0; i < pool->ntokens; i++) {
        struct fleet_token *t = &pool->tokens[i];
        free(t->label);
        free(t->username);
        free(t->account);
        for (int j = 0; j < t->nbudgets; j++)
            free(t->budgets[j].resource);
        free(t->budgets);
    }
    fleet_strmap_free(&pool->tokens_by_label);
    fleet_strmap_free(&pool->budgets_by_key);
    for (struct fleet_budget *b = pool->budgets, *next; b; b = next) {
        next = b->next;
        free(b->origin);
        free(b->account);
        free(b->owner_label);
        free(b->resource);
        free(b);
    }
    if (pool->secret_arena) {
        explicit_bzero(pool->secret_arena, pool->arena_size);
        munlock(pool->secret_arena, pool->arena_size);
        munmap(pool->secret_arena, pool->arena_size);
    }
    free(pool->tokens);
    free(pool);
}

int fleet_pool_count(struct fleet_pool *pool) { return pool->ntokens; }
struct fleet_token *fleet_pool_at(struct fleet_pool *pool, int i) { return &pool->tokens[i]; }

struct fleet_token *fleet_pool_find(struct fleet_pool *pool, struct fleet_provider *p, const char *label)
{
    size_t len;
    char *key = join_key((const char *const[]){p->name, label}, 2, &len);
    struct fleet_token *t = fleet_strmap_get(&pool->tokens_by_label, key, len);
    free(key);
    return t;
}

/* The shared budget for (origin, account, resource) where the provider
 * counts per account, else the token's own. */
static struct fleet_budget *budget_for(struct fleet_pool *pool, struct fleet_token *t, const char *resource)
{
    const char *origin = t->provider->origin;
    const char *account = t->provider->budget_per_account ? t->account : NULL;
    /* an account's budget, or one token's (by label) */
    size_t len;
    char *key = join_key((const char *const[]){origin, account ? "account" : "token", account ? account : t->label,
                                               resource},
                         4, &len);
    struct fleet_budget *b = fleet_strmap_get(&pool->budgets_by_key, key, len);
    if (b) {
        free(key);
        return b;
    }
    b = calloc(1, sizeof *b);
    if (!b) {
        fleet_log(FLEET_LOG_ERROR, "out of memory");
        exit(70);
    }
    b->origin = xstrdup(origin);
    b->account = xstrdup(account);
    b->owner_label = account ? NULL : xstrdup(t->label);
    b->resource = xstrdup(resource);
    b->limit = b->remaining = b->used = -1;
    b->next = pool->budgets;
    pool->budgets = b;
    fleet_strmap_put(&pool->budgets_by_key, key, len, b);
    free(key);
    return b;
}

struct fleet_budget *fleet_pool_budget(struct fleet_pool *pool, struct fleet_token *t, const char *resource)
{
    for (int i = 0; i < t->nbudgets; i++)
        if (strcmp(t->budgets[i].resource, resource) == 0)
            return t->budgets[i].budget;
    struct fleet_token_budget *grown = realloc(t->budgets, (size_t)(t->nbudgets + 1) * sizeof *grown);
    if (!grown) {
        fleet_log(FLEET_LOG_ERROR, "out of memory");
        exit(70);
    }
    t->budgets = grown;
    struct fleet_budget *b = budget_for(pool, t, resource);
    b->refs++;
    t->budgets[t->nbudgets].resource = xstrdup(resource);
    t->budgets[t->nbudgets].budget = b;
    t->nbudgets++;
    return b;
}

/* A budget whose reset (plus the margin for clock skew) has passed is
 * assumed full again; the next response says how full. */
static void roll_window(struct fleet_pool *pool, struct fleet_budget *b, double now)
{
    if (b->reset > 0 && now >= b->reset + pool->host->cfg.retry.reset_margin) {
        b->remaining = b->limit;
        b->used = b->limit >= 0 ? 0 : -1;
        b->reset = 0;
    }
}

/* Units that may still be reserved. A budget not yet seen allows one probe
 * at a time, so the first response teaches the real figure before more go;
 * one the provider does not report is limited by concurrency alone. */
static long available(const struct fleet_provider *p, struct fleet_budget *b)
{
    if (!p->h_remaining || b->untracked)
        return LONG_MAX;
    if (b->remaining < 0)
        return b->reserved == 0 ? 1 : 0;
    return b->remaining - b->reserved;
}

/* What t may reserve on b: with a shared store, also no more than the
 * units this process holds from it. */
static long usable(struct fleet_pool *pool, struct fleet_token *t, struct fleet_budget *b, double now)
{
    long avail = available(t->provider, b);
    struct fleet_shared *shared = pool->host->shared;
    if (shared && t->provider->h_remaining && !b->untracked && (avail > 0 || b->remaining < 0))
        avail = fleet_shared_allowance(shared, t, b, avail, now);
    return avail;
}

struct fleet_token *fleet_pool_first_free(struct fleet_pool *pool, const struct fleet_provider *p)
{
    struct fleet_token *first = NULL;
    double best = INFINITY;
    for (int i = 0; i < pool->ntokens; i++) {
        struct fleet_token *t = &pool->tokens[i];
        if (t->provider != p || t->disabled)
            continue;
        double w = t->paused_until;
        for (int j = 0; j < t->nbudgets; j++) {
            const struct fleet_budget *b = t->budgets[j].budget;
            if (b->remaining == 0 && b->reset > w)
                w = b->reset;
        }
        if (w > 0 && w < best) {
            best = w;
            first = t;
        }
    }
    return first;
}

const char *fleet_pool_state(struct fleet_pool *pool, struct fleet_token *t, double now)
{
    if (t->disabled)
        return "disabled";
    if (t->paused_until > now)
        return "paused";
    for (int i = 0; i < t->nbudgets; i++) {
        struct fleet_budget *b = t->budgets[i].budget;
        roll_window(pool, b, now);
        if (b->remaining == 0)
            return "spent";
    }
    return "ok";
}

struct fleet_token *fleet_pool_reserve(struct fleet_pool *pool, struct fleet_provider *p, const char *resource,
                                       struct fleet_token *pinned, struct fleet_token *preferred,
                                       bool free_request, double now, enum fleet_pool_block *block,
                                       double *wake_at)
{
    struct fleet_token *best = NULL;
    long best_avail = 0;
    bool any_enabled = false;
    double wake = INFINITY;
    double margin = pool->host->cfg.retry.reset_margin;

    /* The preferred token holds validators the server honours only for it:
     * with it the answer is likely a free 304, with another a full 200.
     * So the request waits for the preferred token when it is merely busy,
     * and goes elsewhere only when it is paused, spent or disabled. */
    if (preferred && !pinned && !preferred->pinned_only && !preferred->disabled && preferred->paused_until <= now) {
        struct fleet_budget *b = free_request ? NULL : fleet_pool_budget(pool, preferred, resource);
        if (b)
            roll_window(pool, b, now);
        if (!b || b->remaining != 0) {
            if (preferred->inflight >= preferred->cwnd || (b && usable(pool, preferred, b, now) <= 0)) {
                *block = POOL_BUSY;
                *wake_at = INFINITY;
                return NULL;
            }
            best = preferred;
            goto reserve;
        }
    }

    for (int i = 0; i < pool->ntokens; i++) {
        struct fleet_token *t = &pool->tokens[i];
        if (t->provider != p || (pinned ? t != pinned : t->pinned_only) || t->disabled)
            continue;
        any_enabled = true;
        if (t->paused_until > now) {
            wake = fmin(wake, t->paused_until);
            continue;
        }
        if (t->inflight >= t->cwnd)
            continue; /* a completion will make room */
        long avail = LONG_MAX;
        if (!free_request) {
            struct fleet_budget *b = fleet_pool_budget(pool, t, resource);
            roll_window(pool, b, now);
            avail = usable(pool, t, b, now);
            if (avail <= 0) {
                if (b->remaining == 0)
                    wake = fmin(wake, b->reset > 0 ? b->reset + margin : now + 1);
                continue;
            }
        }
        /* The most unreserved budget wins, then the least busy. */
        if (!best || avail > best_avail || (avail == best_avail && t->inflight < best->inflight)) {
            best = t;
            best_avail = avail;
        }
    }
    if (!best) {
        *block = !any_enabled ? POOL_DISABLED : isfinite(wake) ? POOL_WAIT : POOL_BUSY;
        *wake_at = wake;
        return NULL;
    }
reserve:
    best->inflight++;
    if (!free_request) {
        struct fleet_budget *b = fleet_pool_budget(pool, best, resource);
        b->reserved++;
        if (pool->host->shared)
            fleet_shared_took(pool->host->shared, b, now);
    }
    return best;
}

void fleet_pool_release(struct fleet_pool *pool, struct fleet_token *t, const char *resource, bool free_request)
{
    t->inflight--;
    if (!free_request) {
        struct fleet_budget *b = fleet_pool_budget(pool, t, resource);
        if (b->reserved > 0)
            b->reserved--;
        if (pool->host->shared)
            fleet_shared_released(pool->host->shared, b);
    }
}

void fleet_pool_observe(struct fleet_pool *pool, struct fleet_token *t, const char *resource,
                        const struct fleet_budget_obs *obs, bool success, double now)
{
    struct fleet_budget *b = fleet_pool_budget(pool, t, obs->resource[0] ? obs->resource : resource);
    if (obs->has_limit)
        b->limit = obs->limit;
    if (!obs->has_remaining) {
        /* Bitbucket sends a remaining count only for some credentials,
         * Gitea none: such a budget is not counted down. */
        if (success) {
            b->untracked = true;
            if (pool->host->shared)
                fleet_shared_observed(pool->host->shared, t, b);
        }
        return;
    }
    b->untracked = false;
    if (obs->has_reset) {
        if (obs->reset + pool->host->cfg.retry.reset_margin <= now)
            return; /* describes a window that is already over */
        if (b->reset == 0 || b->remaining < 0 || obs->reset > b->reset + 0.5) {
            /* A new window: the server's figures replace ours. */
            b->remaining = obs->remaining;
            b->reset = obs->reset;
            b->used = obs->has_used ? obs->used : -1;
        } else if (obs->reset >= b->reset - 0.5) {
            /* The same window: counts only go down, and responses may
             * arrive out of order, so keep the lowest remaining. */
            if (obs->remaining < b->remaining)
                b->remaining = obs->remaining;
            if (obs->has_used && obs->used > b->used)
                b->used = obs->used;
        }
    } else {
        /* No window in the headers (a rolling limit): take the latest. */
        b->remaining = obs->remaining;
        if (obs->has_used)
            b->used = obs->used;
    }
    if (pool->host->shared)
        fleet_shared_observed(pool->host->shared, t, b);
}

void fleet_pool_spent(struct fleet_pool *pool, struct fleet_token *t, const char *resource, double reset,
                      double now)
{
    struct fleet_budget *b = fleet_pool_budget(pool, t, resource);
    b->remaining = 0;
    /* Without a reset time, assume the provider's usual short wait. */
    b->reset = reset > now ? reset : now + pool->host->cfg.retry.secondary_wait;
    if (b->limit >= 0)
        b->used = b->limit;
    if (pool->host->shared)
        fleet_shared_observed(pool->host->shared, t, b);
}

double fleet_pool_pause(struct fleet_pool *pool, struct fleet_token *t, double wait, int sent_inflight, double now)
{
    const struct fleet_retry_conf *rc = &pool->host->cfg.retry;
    /* Nothing is sent on a paused token, so a refusal that arrives during
     * the pause answers a request sent before it: the same push back as
     * the one that started the pause, not a new strike. */
    bool same_push_back = t->paused_until > now;
    if (!same_push_back) {
        if (now - t->last_strike > rc->secondary_wait + (t->paused_until > 0 ? t->paused_until - t->last_strike : 0))
            t->strikes = 0; /* a quiet period forgives earlier strikes */
        t->strikes++;
        t->last_strike = now;
    }
    if (wait < 0) {
        wait = rc->secondary_wait * pow(2, t->strikes - 1);
        if (wait > rc->max_wait)
            wait = rc->max_wait;
    }
    if (now + wait > t->paused_until)
        t->paused_until = now + wait;
    /* The limit was hit with sent_inflight requests in flight: stay below,
     * and at what the provider was seen to hold at once. The window may
     * have run two above that, and stopping anywhere above it risks
     * another refusal (and pause) to find the limit the slow way. */
    int ceiling = sent_inflight > 1 ? sent_inflight - 1 : 1;
    if (t->proven >= 1 && t->proven < ceiling)
        ceiling = t->proven;
    if (ceiling < t->cap)
        t->cap = ceiling;
    /* The window stays at the cut: growing again would only find the
     * same limit with another refusal. */
    t->cwnd = t->cap;
    if (pool->host->shared)
        fleet_shared_token_changed(pool->host->shared, t);
    return wait;
}

void fleet_pool_disable(struct fleet_pool *pool, struct fleet_token *t)
{
    t->disabled = true;
    if (pool->host->shared)
        fleet_shared_token_changed(pool->host->shared, t);
}

void fleet_pool_success(struct fleet_pool *pool, struct fleet_token *t, int held, int probing)
{
    (void)pool;
    /* Slow start: the window is at most two more than the most requests
     * the provider took at once from this token, so while work keeps it
     * full it grows each round trip — 1, 2, 4, 6, 8 ... up to the cap —
     * where one slot per window of successes took a round trip per slot.
     * Never more than two ahead of what was tried: a concurrency limit
     * below the cap is found with at most two refusals (the requests above
     * it in that round trip), where doubling found it with up to half the
     * window. And not past requests still out beyond what is proven: their
     * answers, not those of requests sent before them, tell whether the
     * provider takes that many, and a limit's first refusal may be among
     * them. A secondary limit sets the window at the cut, and nothing here
     * raises the cap. */
    if (held > t->proven)
        t->proven = held;
    int want = t->proven + (t->proven < 2 ? t->proven : 2);
    if (probing > t->proven && want > probing)
        want = probing;
    if (want > t->cap)
        want = t->cap;
    if (want > t->cwnd)
        t->cwnd = want;
}

void fleet_pool_set_account(struct fleet_pool *pool, struct fleet_token *t, const char *account)
{
    if (t->account && strcmp(t->account, account) == 0)
        return;
    free(t->account);
    t->account = xstrdup(account);
    t->account_lookup = true;
    if (pool->host->shared)
        fleet_shared_account(pool->host->shared, t);
    if (!t->provider->budget_per_account)
        return; /* each token has its own allowance (Bitbucket) */
    /* Move each of the token's budgets onto the account's shared one. */
    for (int i = 0; i < t->nbudgets; i++) {
        struct fleet_budget *old = t->budgets[i].budget;
        struct fleet_budget *shared = budget_for(pool, t, t->budgets[i].resource);
        if (shared == old)
            continue;
        shared->reserved += old->reserved;
        old->reserved = 0;
        if (shared->remaining < 0 || (old->remaining >= 0 && old->reset >= shared->reset - 0.5 &&
                                      old->remaining < shared->remaining)) {
            shared->remaining = old->remaining;
            shared->reset = old->reset;
            shared->used = old->used;
        }
        if (shared->limit < 0)
            shared->limit = old->limit;
        shared->refs++;
        old->refs--;
        t->budgets[i].budget = shared;
    }
}
