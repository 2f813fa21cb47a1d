/* The pool's shared store on Redis. See pool_shared.h for the rules; the
 * comments here say why. */
#include "pool_shared.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "host.h"
#include "log.h"
#include "pool.h"
#include "redis.h"
#include "sha256.h"

/* A grant left unused this long goes back to the others. */
#define IDLE_RETURN 0.5
/* Settled units and new figures are sent at least this often. */
#define FLUSH_EVERY 2.0
/* A block used up within this long asks for twice as many next time, up
 * to BLOCK_GROWTH times shared.block; one returned unused halves it. */
#define FAST_USE 1.0
#define BLOCK_GROWTH 8
/* "remaining" of a budget whose responses carry no count (as Gitea's):
 * not limited by the store, only by concurrency. */
#define UNTRACKED -2
/* When others hold every unit, ask again after this, doubling to 1 s:
 * they are used or given back within IDLE_RETURN. */
#define RETRY_FIRST 0.2
#define RETRY_MAX 1.0
/* The same while the figures are unknown: what the others hold is one
 * process's first request, which probes the budget and is answered a
 * round trip away. */
#define PROBE_WAIT_FIRST 0.005

/* One budget's shared state, kept in Redis as a hash:
 *   remaining, reset, limit   the provider's last figures (merged: within a
 *                             window remaining only goes down)
 *   leased                    units held by processes, not yet reflected
 *   u:<worker>                the units one process holds
 * and a sorted set <key>:leases of workers by the expiry of their lease.
 *
 * sync: expired leases are given back; the caller's settled and returned
 * units leave its lease; its figures are merged; the window rolls over at
 * reset (+ margin); then up to `want` units are granted from remaining -
 * leased (one probe at a time while remaining is unknown). Returns
 * {granted, remaining, reset, limit, leased, token's paused_until,
 * token disabled}. */
static const char sync_source[] =
    "local b, z, tk, from = KEYS[1], KEYS[2], KEYS[3], KEYS[4]\n"
    "local me, want, give = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])\n"
    "local now, lease, margin = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])\n"
    "local moved = redis.call('HGET', b, 'moved')\n"
    "if moved then b = moved; z = moved .. ':leases' end\n"
    "if from ~= b and redis.call('EXISTS', from) == 1 and not redis.call('HGET', from, 'moved') then\n"
    "  local fz = from .. ':leases'\n"
    "  local m = redis.call('ZRANGE', fz, 0, -1, 'WITHSCORES')\n"
    "  for i = 1, #m, 2 do\n"
    "    local u = tonumber(redis.call('HGET', from, 'u:' .. m[i]) or 0)\n"
    "    redis.call('HINCRBY', b, 'u:' .. m[i], u)\n"
    "    redis.call('HINCRBY', b, 'leased', u)\n"
    "    redis.call('ZADD', z, 'GT', m[i + 1], m[i])\n"
    "    redis.call('ZADD', z, 'NX', m[i + 1], m[i])\n"
    "  end\n"
    "  local frem = tonumber(redis.call('HGET', from, 'remaining') or -1)\n"
    "  local freset = tonumber(redis.call('HGET', from, 'reset') or 0)\n"
    "  local rem0 = tonumber(redis.call('HGET', b, 'remaining') or -1)\n"
    "  local reset0 = tonumber(redis.call('HGET', b, 'reset') or 0)\n"
    "  if frem >= 0 and (rem0 < 0 or freset > reset0 + 0.5 or (freset >= reset0 - 0.5 and frem < rem0)) then\n"
    "    redis.call('HSET', b, 'remaining', frem, 'reset', tostring(freset))\n"
    "  end\n"
    "  redis.call('HSET', from, 'moved', b)\n"
    "  redis.call('EXPIRE', from, 86400)\n"
    "end\n"
    "for _, w in ipairs(redis.call('ZRANGEBYSCORE', z, '-inf', now)) do\n"
    "  local u = tonumber(redis.call('HGET', b, 'u:' .. w) or 0)\n"
    "  redis.call('HDEL', b, 'u:' .. w)\n"
    "  redis.call('HINCRBY', b, 'leased', -u)\n"
    "  redis.call('ZREM', z, w)\n"
    "end\n"
    "local mine = tonumber(redis.call('HGET', b, 'u:' .. me) or 0)\n"
    "local back = math.min(mine, give)\n"
    "mine = mine - back\n"
    "local leased = tonumber(redis.call('HGET', b, 'leased') or 0) - back\n"
    "if leased < 0 then leased = 0 end\n"
    "local rem = tonumber(redis.call('HGET', b, 'remaining') or -1)\n"
    "local reset = tonumber(redis.call('HGET', b, 'reset') or 0)\n"
    "local limit = tonumber(redis.call('HGET', b, 'limit') or -1)\n"
    "if ARGV[4] == '1' then\n"
    "  local orem, oreset, olim = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])\n"
    "  if olim >= 0 then limit = olim end\n"
    "  if orem == -2 or rem == -2 then rem = orem\n"
    "  elseif oreset <= 0 then rem = orem\n"
    "  elseif oreset + margin <= now then\n"
    "  elseif reset == 0 or rem < 0 or oreset > reset + 0.5 then rem, reset = orem, oreset\n"
    "  elseif oreset >= reset - 0.5 and orem < rem then rem = orem end\n"
    "end\n"
    "if reset > 0 and now >= reset + margin then rem = limit; reset = 0 end\n"
    "local n = 0\n"
    "if want > 0 then\n"
    "  if rem == -2 then n = want\n"
    "  elseif rem < 0 then if leased == 0 then n = 1 end\n"
    "  else n = math.max(0, math.min(want, rem - leased)) end\n"
    "end\n"
    "mine = mine + n\n"
    "leased = leased + n\n"
    "redis.call('HSET', b, 'remaining', rem, 'reset', tostring(reset), 'limit', limit, 'leased', leased)\n"
    "if mine > 0 then\n"
    "  redis.call('HSET', b, 'u:' .. me, mine)\n"
    "  redis.call('ZADD', z, now + lease, me)\n"
    "else\n"
    "  redis.call('HDEL', b, 'u:' .. me)\n"
    "  redis.call('ZREM', z, me)\n"
    "end\n"
    "redis.call('EXPIRE', b, 86400)\n"
    "redis.call('EXPIRE', z, 86400)\n"
    "local t = redis.call('HMGET', tk, 'paused_until', 'disabled')\n"
    "return {n, rem, tostring(reset), limit, leased, t[1] or '0', t[2] or '0'}\n";

/* A pause or a 401, for every process: the later pause wins. */
static const char token_source[] =
    "local cur = tonumber(redis.call('HGET', KEYS[1], 'paused_until') or 0)\n"
    "if tonumber(ARGV[1]) > cur then redis.call('HSET', KEYS[1], 'paused_until', ARGV[1]) end\n"
    "if ARGV[2] == '1' then redis.call('HSET', KEYS[1], 'disabled', '1') end\n"
    "redis.call('EXPIRE', KEYS[1], 86400)\n"
    "return 1\n";

struct shared_budget {
    struct shared_budget *next;
    struct fleet_shared *s;
    struct fleet_budget *b;
    struct fleet_token *token; /* the last token that drew on it */
    char key[512];
    long grant;     /* units leased and not yet used */
    long unsettled; /* used, the request not yet ended */
    long settle;    /* ended: to leave the lease at the next sync */
    bool has_obs;
    long obs_remaining, obs_limit;
    double obs_reset;
    bool busy;      /* a sync is waiting for its reply */
    bool demand;    /* a request found the grant empty */
    long asked;
    long block;     /* units asked for at a time */
    double granted_at;
    long sent_give, sent_settle;
    double next_try, last_sync, last_use;
    double retry_pause; /* the last wait for units others held; 0: none */
    bool plenty;    /* at the last sync, far more was free than one block */
    bool store_blind; /* at the last sync Redis had no figures: others wait on ours */
};

struct token_name {
    char hash[33]; /* hex of the first 16 bytes of HMAC-SHA256(salt, origin NUL secret) */
};

struct fleet_shared {
    struct fleet_host *host;
    struct fleet_redis *redis;
    struct fleet_redis_script sync, token;
    struct shared_budget *budgets;
    struct token_name *names; /* by token id */
    unsigned char salt[32];
    bool have_salt;
    char worker[128];
    char waiting[512];
    bool startup_failed;
};

struct fleet_redis *fleet_shared_redis(struct fleet_shared *s) { return s->redis; }
const char *fleet_shared_worker(struct fleet_shared *s) { return s->worker; }

/* ---- names ---- */

static void hmac_sha256(const unsigned char *key, size_t klen, const unsigned char *msg, size_t mlen,
                        unsigned char out[32])
{
    unsigned char k[64] = {0}, pad[64], inner[32];
    if (klen > 64) {
        fleet_sha256(key, klen, k);
    } else {
        memcpy(k, key, klen);
    }
    struct fleet_sha256 h;
    for (int i = 0; i < 64; i++)
        pad[i] = k[i] ^ 0x36;
    fleet_sha256_init(&h);
    fleet_sha256_update(&h, pad, 64);
    fleet_sha256_update(&h, msg, mlen);
    fleet_sha256_final(&h, inner);
    for (int i = 0; i < 64; i++)
        pad[i] = k[i] ^ 0x5c;
    fleet_sha256_init(&h);
    fleet_sha256_update(&h, pad, 64);
    fleet_sha256_update(&h, inner, 32);
    fleet_sha256_final(&h, out);
    explicit_bzero(k, sizeof k);
    explicit_bzero(pad, sizeof pad);
}

/* The token's name in Redis: never its value, nor its label alone (two
 * deployments may both call a token "bot"). */
static const char *token_hash(struct fleet_shared *s, struct fleet_token *t)
{
    struct token_name *n = &s->names[t->id];
    if (n->hash[0])
        return n->hash;
    const char *origin = t->provider->origin;
    const char *secret = t->secret ? t->secret : "(anonymous)";
    size_t olen = strlen(origin), slen = t->secret ? t->secret_len : strlen(secret);
    unsigned char *msg = malloc(olen + 1 + slen), mac[32];
    if (!msg) {
        fleet_log(FLEET_LOG_ERROR, "out of memory");
        exit(70);
    }
    memcpy(msg, origin, olen);
    msg[olen] = 0;
    memcpy(msg + olen + 1, secret, slen);
    hmac_sha256(s->salt, sizeof s->salt, msg, olen + 1 + slen, mac);
    explicit_bzero(msg, olen + 1 + slen);
    free(msg);
    for (int i = 0; i < 16; i++)
        snprintf(n->hash + 2 * i, 3, "%02x", mac[i]);
    return n->hash;
}

/* A token's own budget. Where the provider counts per account, the token
 * draws on it until its account is known; then the first sync on the
 * account's budget moves it there (units leased, figures), and leaves a
 * pointer for processes that do not know the account yet. */
static void token_budget_key(struct fleet_shared *s, struct fleet_token *t, const char *resource, char *out,
                             size_t size)
{
    snprintf(out, size, "%s:budget:%s|t:%s|%s", s->host->cfg.shared.prefix, t->provider->origin, token_hash(s, t),
             resource);
}

static struct shared_budget *budget_state(struct fleet_shared *s, struct fleet_token *t, struct fleet_budget *b)
{
    struct shared_budget *sb = b->shared;
    if (sb) {
        sb->token = t;
        return sb;
    }
    if (!(sb = calloc(1, sizeof *sb))) {
        fleet_log(FLEET_LOG_ERROR, "out of memory");
        exit(70);
    }
    sb->s = s;
    sb->b = b;
    sb->token = t;
    sb->block = s->host->cfg.shared.block;
    /* Account budgets are named by the account (not a secret); a token's
     * own budget by the token's keyed hash. */
    if (b->account)
        snprintf(sb->key, sizeof sb->key, "%s:budget:%s|a:%s|%s", s->host->cfg.shared.prefix, b->origin,
                 b->account, b->resource);
    else
        token_budget_key(s, t, b->resource, sb->key, sizeof sb->key);
    sb->next = s->budgets;
    s->budgets = sb;
    b->shared = sb;
    return sb;
}

/* ---- the pool's hooks ---- */

long fleet_shared_allowance(struct fleet_shared *s, struct fleet_token *t, struct fleet_budget *b, long local,
                            double now)
{
    struct shared_budget *sb = budget_state(s, t, b);
    (void)now;
    if (!fleet_redis_up(s->redis))
        return 0; /* nothing new on a shared budget while Redis is away */
    if (sb->grant <= 0) {
        sb->demand = true;
        return 0;
    }
    /* An unknown remaining: Redis knows better than the one-probe rule. */
    if (b->remaining < 0)
        return sb->grant;
    return local < sb->grant ? local : sb->grant;
}

void fleet_shared_took(struct fleet_shared *s, struct fleet_budget *b, double now)
{
    struct shared_budget *sb = b->shared;
    (void)s;
    if (!sb || sb->grant <= 0)
        return;
    sb->grant--;
    sb->unsettled++;
    sb->last_use = now;
}

void fleet_shared_released(struct fleet_shared *s, struct fleet_budget *b)
{
    struct shared_budget *sb = b->shared;
    (void)s;
    if (!sb || sb->unsettled <= 0)
        return;
    sb->unsettled--;
    sb->settle++;
}

void fleet_shared_observed(struct fleet_shared *s, struct fleet_token *t, struct fleet_budget *b)
{
    if (b->remaining < 0 && !b->untracked)
        return;
    struct shared_budget *sb = budget_state(s, t, b);
    sb->has_obs = true;
    /* UNTRACKED tells the others that this budget is not counted. */
    sb->obs_remaining = b->untracked ? UNTRACKED : b->remaining;
    sb->obs_reset = b->reset;
    sb->obs_limit = b->limit;
}

static void on_token_reply(struct fleet_redis *r, redisReply *reply, void *data)
{
    (void)r;
    (void)reply;
    (void)data;
}

void fleet_shared_token_changed(struct fleet_shared *s, struct fleet_token *t)
{
    char key[256], until[32];
    snprintf(key, sizeof key, "%s:token:%s", s->host->cfg.shared.prefix, token_hash(s, t));
    snprintf(until, sizeof until, "%.3f", t->paused_until);
    const char *argv[] = {"1", key, until, t->disabled ? "1" : "0"};
    /* Lost if Redis is away: each process still learns it by itself. */
    (void)fleet_redis_eval(s->redis, &s->token, on_token_reply, NULL, 4, argv, NULL);
}

void fleet_shared_account(struct fleet_shared *s, struct fleet_token *t)
{
    if (!t->account || t->account_from_config)
        return;
    char key[256];
    snprintf(key, sizeof key, "%s:accounts", s->host->cfg.shared.prefix);
    const char *argv[] = {"HSET", key, token_hash(s, t), t->account};
    (void)fleet_redis_command(s->redis, on_token_reply, NULL, 4, argv, NULL);
}

/* ---- sync ---- */

static long reply_int(const redisReply *r)
{
    if (r->type == REDIS_REPLY_INTEGER)
        return (long)r->integer;
    if (r->type == REDIS_REPLY_STRING)
        return strtol(r->str, NULL, 10);
    return 0;
}

static double reply_num(const redisReply *r)
{
    if (r->type == REDIS_REPLY_INTEGER)
        return (double)r->integer;
    if (r->type == REDIS_REPLY_STRING)
        return strtod(r->str, NULL);
    return 0;
}

static void on_sync(struct fleet_redis *r, redisReply *reply, void *data)
{
    struct shared_budget *sb = data;
    struct fleet_shared *s = sb->s;
    double now = fleet_now();
    (void)r;
    sb->busy = false;
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements < 7) {
        /* Lost or refused: what was sent may or may not have counted. The
         * units stay leased in Redis until the lease ends, which errs on
         * the side of fewer requests. */
        if (reply && reply->type == REDIS_REPLY_ERROR)
            fleet_log(FLEET_LOG_WARN, "shared budget update failed: %s", reply->str);
        sb->next_try = now + fmax(sb->retry_pause, RETRY_FIRST);
        return;
    }
    /* What was sent is accounted for. */
    sb->settle -= sb->sent_settle;
    sb->sent_settle = sb->sent_give = 0;
    long n = reply_int(reply->element[0]);
    long rem = reply_int(reply->element[1]);
    double reset = reply_num(reply->element[2]);
    long limit = reply_int(reply->element[3]);
    long leased = reply_int(reply->element[4]);
    /* Plenty free for everyone: unused units and settled ones need not go
     * back before the lease refresh, which saves round trips. */
    sb->plenty = rem >= 0 && rem - leased > 4 * sb->block * (long)s->host->cfg.shared.block;
    sb->store_blind = rem == -1;
    double paused = reply_num(reply->element[5]);
    bool disabled = reply_int(reply->element[6]) == 1;
    sb->grant += n;
    sb->last_sync = now;
    if (n > 0) {
        sb->last_use = now;
        sb->granted_at = now;
    }
    struct fleet_budget *b = sb->b;
    if (limit >= 0 && b->limit < 0)
        b->limit = limit;
    /* The shared figures are what every process has seen: take them when
     * they are newer or lower than ours. */
    if (rem == UNTRACKED)
        b->untracked = true;
    if (rem >= 0) {
        if (b->remaining < 0 || (reset > 0 && reset > b->reset + 0.5)) {
            b->remaining = rem;
            b->reset = reset;
        } else if (rem < b->remaining && (reset == 0 || reset >= b->reset - 0.5)) {
            b->remaining = rem;
        }
    }
    if (n > 0 || sb->asked == 0) {
        sb->retry_pause = 0;
    } else if (rem == 0 && reset > 0) {
        sb->next_try = reset + s->host->cfg.retry.reset_margin;
    } else {
        /* Others hold every unit for now: ask again soon, less often
         * the longer it lasts. */
        if (sb->retry_pause > 0)
            sb->retry_pause = fmin(sb->retry_pause * 2, RETRY_MAX);
        else
            sb->retry_pause = rem == -1 ? PROBE_WAIT_FIRST : RETRY_FIRST;
        sb->next_try = now + sb->retry_pause;
    }
    sb->asked = 0;
    struct fleet_token *t = sb->token;
    if (t && paused > t->paused_until)
        t->paused_until = paused;
    if (t && disabled && !t->disabled) {
        t->disabled = true;
        fleet_log(FLEET_LOG_WARN, "token %s of %s was disabled by another process (HTTP 401)", t->label,
                  t->provider->name);
    }
}

static void send_sync(struct fleet_shared *s, struct shared_budget *sb, long want, long give, double now)
{
    const struct fleet_shared_conf *c = &s->host->cfg.shared;
    char zkey[540], tkey[256], a_want[24], a_give[24], a_rem[24], a_reset[32], a_limit[24], a_now[32], a_lease[24],
        a_margin[24];
    char from[512];
    snprintf(zkey, sizeof zkey, "%s:leases", sb->key);
    if (sb->b->account)
        token_budget_key(s, sb->token, sb->b->resource, from, sizeof from);
    else
        snprintf(from, sizeof from, "%s", sb->key);
    snprintf(tkey, sizeof tkey, "%s:token:%s", c->prefix, token_hash(s, sb->token));
    snprintf(a_want, sizeof a_want, "%ld", want);
    snprintf(a_give, sizeof a_give, "%ld", give + sb->settle);
    snprintf(a_rem, sizeof a_rem, "%ld", sb->obs_remaining);
    snprintf(a_reset, sizeof a_reset, "%.3f", sb->obs_reset);
    snprintf(a_limit, sizeof a_limit, "%ld", sb->obs_limit);
    snprintf(a_now, sizeof a_now, "%.3f", now);
    snprintf(a_lease, sizeof a_lease, "%.3f", c->lease);
    snprintf(a_margin, sizeof a_margin, "%.3f", s->host->cfg.retry.reset_margin);
    const char *argv[] = {"4",      sb->key, zkey,  tkey,  from,  s->worker, a_want,  a_give,
                          sb->has_obs ? "1" : "0", a_rem, a_reset, a_limit, a_now, a_lease, a_margin};
    if (fleet_redis_eval(s->redis, &s->sync, on_sync, sb, (int)(sizeof argv / sizeof *argv), argv, NULL) != 0)
        return;
    sb->busy = true;
    sb->demand = false;
    sb->asked = want;
    sb->sent_settle = sb->settle;
    sb->sent_give = give;
    sb->grant -= give;
    sb->has_obs = false;
    sb->last_sync = now;
    s->host->stats.shared_syncs++;
}

double fleet_shared_turn(struct fleet_shared *s, double now)
{
    fleet_redis_set_verbose(s->redis, s->host->verbosity > 0);
    double wake = fleet_redis_tick(s->redis, now);
    if (!fleet_redis_up(s->redis)) {
        snprintf(s->waiting, sizeof s->waiting, "%s", fleet_redis_waiting(s->redis));
        return wake;
    }
    s->waiting[0] = 0;
    double lease_refresh = s->host->cfg.shared.lease / 3;
    for (struct shared_budget *sb = s->budgets; sb; sb = sb->next) {
        if (sb->busy || !sb->token)
            continue;
        long held = sb->grant + sb->unsettled + sb->settle;
        long base = s->host->cfg.shared.block;
        if (sb->demand && sb->grant <= 0) {
            if (now >= sb->next_try) {
                if (sb->granted_at > 0 && now - sb->granted_at < FAST_USE && sb->block < base * BLOCK_GROWTH)
                    sb->block *= 2;
                send_sync(s, sb, sb->block, 0, now);
                continue;
            }
            wake = fmin(wake, sb->next_try);
        }
        if (sb->has_obs && sb->store_blind) {
            /* The first figures of a budget: while Redis has none it grants
             * one probe at a time, so the other processes wait for these. */
            send_sync(s, sb, 0, 0, now);
        } else if (sb->plenty && held > 0 && now - sb->last_sync < lease_refresh) {
            wake = fmin(wake, sb->last_sync + lease_refresh);
        } else if (sb->grant > 0 && now - sb->last_use >= IDLE_RETURN) {
            if (sb->block > base)
                sb->block /= 2;
            send_sync(s, sb, 0, sb->grant, now);
        } else if ((sb->settle > 0 || sb->has_obs) && now - sb->last_sync >= FLUSH_EVERY) {
            send_sync(s, sb, 0, 0, now);
        } else if (held > 0 && now - sb->last_sync >= lease_refresh) {
            send_sync(s, sb, 0, 0, now);
        } else {
            if (sb->grant > 0)
                wake = fmin(wake, sb->last_use + IDLE_RETURN);
            if (sb->settle > 0 || sb->has_obs)
                wake = fmin(wake, sb->last_sync + FLUSH_EVERY);
            if (held > 0)
                wake = fmin(wake, sb->last_sync + lease_refresh);
        }
    }
    return wake;
}

void fleet_shared_idle(struct fleet_shared *s)
{
    double now = fleet_now();
    for (struct shared_budget *sb = s->budgets; sb; sb = sb->next) {
        if (!sb->busy && sb->token && (sb->grant > 0 || sb->settle > 0 || sb->has_obs))
            send_sync(s, sb, 0, sb->grant, now);
    }
}

const char *fleet_shared_waiting(struct fleet_shared *s) { return s->waiting; }

/* ---- start and end ---- */

static void on_salt(struct fleet_redis *r, redisReply *reply, void *data)
{
    struct fleet_shared *s = data;
    (void)r;
    if (!reply || reply->type != REDIS_REPLY_STRING || reply->len != 64) {
        s->startup_failed = true;
        return;
    }
    for (int i = 0; i < 32; i++) {
        unsigned v;
        if (sscanf(reply->str + 2 * i, "%2x", &v) != 1) {
            s->startup_failed = true;
            return;
        }
        s->salt[i] = (unsigned char)v;
    }
    s->have_salt = true;
}

static void on_accounts(struct fleet_redis *r, redisReply *reply, void *data)
{
    struct fleet_shared *s = data;
    struct fleet_pool *pool = s->host->pool;
    (void)r;
    if (!reply || reply->type != REDIS_REPLY_ARRAY || !s->have_salt)
        return;
    for (size_t i = 0; i + 1 < reply->elements; i += 2) {
        const redisReply *k = reply->element[i], *v = reply->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        for (int j = 0; j < fleet_pool_count(pool); j++) {
            struct fleet_token *t = fleet_pool_at(pool, j);
            if (t->secret && !t->account_from_config && strcmp(token_hash(s, t), k->str) == 0)
                fleet_pool_set_account(pool, t, v->str);
        }
    }
}

static void on_ignore(struct fleet_redis *r, redisReply *reply, void *data)
{
    (void)r;
    (void)reply;
    (void)data;
}

struct fleet_shared *fleet_shared_new(struct fleet_host *host, char *err, size_t errlen)
{
    struct fleet_shared *s = calloc(1, sizeof *s);
    int ntokens = fleet_pool_count(host->pool);
    if (!s || !(s->names = calloc((size_t)ntokens + 1, sizeof *s->names))) {
        free(s);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->host = host;
    s->sync = (struct fleet_redis_script){.name = "sync", .source = sync_source};
    s->token = (struct fleet_redis_script){.name = "token", .source = token_source};
    if (!(s->redis = fleet_redis_open(&host->cfg.shared, err, errlen))) {
        free(s->names);
        free(s);
        return NULL;
    }
    char hostname[64] = "?";
    gethostname(hostname, sizeof hostname - 1);
    unsigned char rnd[4] = {0};
    (void)getrandom(rnd, sizeof rnd, 0);
    snprintf(s->worker, sizeof s->worker, "%s:%d:%02x%02x%02x%02x", hostname, (int)getpid(), rnd[0], rnd[1],
             rnd[2], rnd[3]);

    /* The deployment's salt: made by the first process, read by all. */
    unsigned char fresh[32];
    char hex[65], key[128], akey[128];
    if (getrandom(fresh, sizeof fresh, 0) != (ssize_t)sizeof fresh) {
        snprintf(err, errlen, "shared: no random bytes for the salt");
        fleet_shared_free(s);
        return NULL;
    }
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", fresh[i]);
    snprintf(key, sizeof key, "%s:salt", host->cfg.shared.prefix);
    snprintf(akey, sizeof akey, "%s:accounts", host->cfg.shared.prefix);
    const char *set[] = {"SET", key, hex, "NX"};
    const char *get[] = {"GET", key};
    const char *accounts[] = {"HGETALL", akey};
    fleet_redis_command(s->redis, on_ignore, NULL, 4, set, NULL);
    fleet_redis_command(s->redis, on_salt, s, 2, get, NULL);
    fleet_redis_command(s->redis, on_accounts, s, 2, accounts, NULL);
    fleet_redis_drain(s->redis, host->cfg.shared.connect_timeout);
    if (!s->have_salt) {
        snprintf(err, errlen, "shared: cannot read the salt %s from Redis at %s%s", key,
                 fleet_redis_name(s->redis), s->startup_failed ? " (it is not 64 hex digits)" : "");
        fleet_shared_free(s);
        return NULL;
    }
    explicit_bzero(fresh, sizeof fresh);
    return s;
}

void fleet_shared_free(struct fleet_shared *s)
{
    if (!s)
        return;
    /* Units not used go back now rather than at the lease's end; those
     * of requests cut short count as used. */
    for (struct shared_budget *sb = s->budgets; sb; sb = sb->next) {
        sb->settle += sb->unsettled;
        sb->unsettled = 0;
    }
    fleet_shared_idle(s);
    fleet_redis_drain(s->redis, 2.0);
    fleet_redis_free(s->redis); /* replies still due come back as NULL */
    for (struct shared_budget *sb = s->budgets, *next; sb; sb = next) {
        next = sb->next;
        if (sb->b)
            sb->b->shared = NULL;
        free(sb);
    }
    explicit_bzero(s->salt, sizeof s->salt);
    free(s->names);
    free(s);
}
