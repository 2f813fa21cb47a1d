/* Requests, from submission to the result a task resumes with.
 *
 * A request waits in the pending queue until the pool gives it a token and
 * the global connection cap allows; it is then one libcurl transfer. When
 * the transfer ends, the response is classified: a limit or a refused token
 * sends the request back to the front of the queue for another token; a
 * transient fault schedules a retry after a backoff; anything else
 * finishes it and wakes its waiting tasks. */
#include "http.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "cache.h"
#include "events.h"
#include "gunzip.h"
#include "headers.h"
#include "host.h"
#include "log.h"
#include "pool.h"
#include "redact.h"
#include "sched.h"
#include "skew.h"
#include "transport.h"
#include "urlpath.h"

enum { MAX_REDIRECTS = 5 };

struct fleet_request {
    struct fleet_request *prev, *next; /* in the pending or in-flight list */
    int refs; /* waiters yet to read the response, + 1 until finished */
    struct fleet_provider *provider;
    char *method, *url, *body;
    size_t body_len;
    char **headers; /* NULL-terminated "Name: value" lines */
    char *resource;
    struct fleet_token *pinned;
    bool free_budget, cacheable;
    bool no_credentials; /* a redirect left the provider's origin */
    bool finished;
    bool wait_logged;
    int attempts, redirects;
    double not_before;

    struct fleet_token *token; /* while in flight */
    CURL *easy;
    int sent_inflight;
    double sent_at;
    long answered_before; /* its token's `answered` when it was sent */
    bool landed; /* finished, not yet handled (fleet_http_landed) */
    struct fleet_transfer transfer;
    struct fleet_bytes compressed; /* the body as it came, when it came gzipped */
    struct fleet_cache_entry cached; /* the stored response being revalidated */
    bool has_cached;
    bool skip_cache;     /* the stored copy proved unreadable: ask plainly */
    bool affinity_known; /* `affinity` was looked up (once per request) */
    struct fleet_token *affinity;

    struct fleet_response resp;
    struct fleet_task **waiters;
    int nwaiters, capwaiters;

    bool twin_indexed; /* in the twin index, under twin_hash */
    uint64_t twin_hash; /* of provider, pinned token and URL: set with the URL */
    struct fleet_request *twin_next;
};

/* The cacheable requests pending or in flight, by a hash of provider,
 * pinned token and URL, so that a new request finds the identical one it
 * can share (find_twin) without walking both lists: with 10,000 requests
 * queued, walking made submitting them quadratic. */
struct twin_index {
    struct fleet_request **buckets; /* chained through twin_next */
    size_t nbuckets, count;         /* nbuckets: 0 or a power of two */
};

struct fleet_list {
    struct fleet_request *head, *tail;
    int count;
    struct twin_index *twins; /* where its cacheable requests are indexed */
};

struct fleet_http {
    struct twin_index twins;
    struct fleet_list pending, inflight;
    CURL **idle; /* easy handles kept for reuse */
    int nidle, capidle;
    double logged_wake; /* the last budget wait announced */
    double away; /* the last poll's time away: from the read before it to its call */
    double stall_check; /* when fleet_http_watch_stalls looks next */
};

static uint64_t hash_of_twin(const struct fleet_request *r)
{
    uint64_t h = 14695981039346656037u; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)r->url; *p; p++)
        h = (h ^ *p) * 1099511628211u;
    h ^= (uint64_t)(uintptr_t)r->provider * 0x9E3779B97F4A7C15ull;
    h ^= (uint64_t)(uintptr_t)r->pinned * 0xC2B2AE3D27D4EB4Full;
    return h;
}

static void twin_add(struct twin_index *x, struct fleet_request *r)
{
    if (x->count >= x->nbuckets) {
        size_t n = x->nbuckets ? 2 * x->nbuckets : 64;
        struct fleet_request **b = calloc(n, sizeof *b);
        if (!b)
            return; /* not indexed: the request is only not shared */
        for (size_t i = 0; i < x->nbuckets; i++)
            for (struct fleet_request *o = x->buckets[i], *next; o; o = next) {
                next = o->twin_next;
                o->twin_next = b[o->twin_hash & (n - 1)];
                b[o->twin_hash & (n - 1)] = o;
            }
        free(x->buckets);
        x->buckets = b;
        x->nbuckets = n;
    }
    struct fleet_request **head = &x->buckets[r->twin_hash & (x->nbuckets - 1)];
    r->twin_next = *head;
    *head = r;
    r->twin_indexed = true;
    x->count++;
}

static void twin_remove(struct twin_index *x, struct fleet_request *r)
{
    for (struct fleet_request **p = &x->buckets[r->twin_hash & (x->nbuckets - 1)]; *p; p = &(*p)->twin_next)
        if (*p == r) {
            *p = r->twin_next;
            break;
        }
    r->twin_next = NULL;
    r->twin_indexed = false;
    x->count--;
}

static void list_remove(struct fleet_list *l, struct fleet_request *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        l->head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        l->tail = r->prev;
    r->prev = r->next = NULL;
    l->count--;
    if (r->twin_indexed)
        twin_remove(l->twins, r);
}

static void list_push_back(struct fleet_list *l, struct fleet_request *r)
{
    r->next = NULL;
    r->prev = l->tail;
    if (l->tail)
        l->tail->next = r;
    else
        l->head = r;
    l->tail = r;
    l->count++;
    if (r->cacheable)
        twin_add(l->twins, r);
}

static void list_push_front(struct fleet_list *l, struct fleet_request *r)
{
    r->prev = NULL;
    r->next = l->head;
    if (l->head)
        l->head->prev = r;
    else
        l->tail = r;
    l->head = r;
    l->count++;
    if (r->cacheable)
        twin_add(l->twins, r);
}

struct fleet_http *fleet_http_new(struct fleet_host *host)
{
    (void)host;
    struct fleet_http *h = calloc(1, sizeof *h);
    if (h)
        h->pending.twins = h->inflight.twins = &h->twins;
    return h;
}

int fleet_http_in_flight(struct fleet_host *host) { return host->http->inflight.count; }
int fleet_http_pending(struct fleet_host *host) { return host->http->pending.count; }
const struct fleet_response *fleet_http_response(const struct fleet_request *r) { return &r->resp; }

static void request_free(struct fleet_request *r)
{
    free(r->method);
    free(r->url);
    free(r->body);
    for (char **h = r->headers; h && *h; h++)
        free(*h);
    free(r->headers);
    free(r->resource);
    fleet_bytes_free(&r->transfer.body);
    fleet_bytes_free(&r->transfer.headers);
    fleet_bytes_free(&r->compressed);
    if (r->has_cached)
        fleet_cache_entry_free(&r->cached);
    free(r->resp.url);
    free(r->resp.err_message);
    free(r->waiters);
    free(r);
}

void fleet_http_unref(struct fleet_host *host, struct fleet_request *r)
{
    (void)host;
    if (--r->refs == 0)
        request_free(r);
}

static bool add_waiter(struct fleet_request *r, struct fleet_task *t)
{
    if (r->nwaiters == r->capwaiters) {
        int cap = r->capwaiters ? 2 * r->capwaiters : 2;
        struct fleet_task **grown = realloc(r->waiters, (size_t)cap * sizeof *grown);
        if (!grown)
            return false;
        r->waiters = grown;
        r->capwaiters = cap;
    }
    r->waiters[r->nwaiters++] = t;
    r->refs++;
    t->waiting_on = r;
    return true;
}

static bool same_headers(char **a, char **b)
{
    for (; *a && *b; a++, b++)
        if (strcmp(*a, *b) != 0)
            return false;
    return !*a && !*b;
}

/* An identical cacheable GET already queued or in flight, to share. */
static struct fleet_request *find_twin(struct fleet_http *h, const struct fleet_request *r)
{
    if (!h->twins.nbuckets)
        return NULL;
    uint64_t hash = r->twin_hash;
    for (struct fleet_request *o = h->twins.buckets[hash & (h->twins.nbuckets - 1)]; o; o = o->twin_next)
        if (o->twin_hash == hash && o->cacheable && o->provider == r->provider && o->pinned == r->pinned &&
            strcmp(o->url, r->url) == 0 && same_headers(o->headers, r->headers))
            return o;
    return NULL;
}

static void url_origin(const char *url, char *buf, size_t len);

struct fleet_request *fleet_http_submit(struct fleet_host *host, struct fleet_task *t,
                                        const struct fleet_request_spec *spec, const char **err)
{
    if (strncmp(spec->url, "http://", 7) != 0 && strncmp(spec->url, "https://", 8) != 0) {
        *err = "the URL must start with http:// or https://";
        return NULL;
    }
    if ((*err = fleet_url_path_problem(spec->url)))
        return NULL;
    struct fleet_request *r = calloc(1, sizeof *r);
    if (!r)
        goto oom;
    r->refs = 1;
    r->provider = spec->provider;
    r->method = strdup(spec->method);
    r->url = strdup(spec->url);
    r->resource = strdup(spec->resource ? spec->resource
                                        : spec->provider->default_resource ? spec->provider->default_resource
                                                                           : "core");
    if (!r->method || !r->url || !r->resource)
        goto oom;
    /* A URL outside the provider's origin (a full URL from a script or a
     * plugin) goes without the credential, as a redirect there would. */
    char origin[512];
    url_origin(r->url, origin, sizeof origin);
    r->no_credentials = strcasecmp(origin, spec->provider->origin) != 0;
    if (spec->body) {
        r->body = malloc(spec->body_len + 1);
        if (!r->body)
            goto oom;
        memcpy(r->body, spec->body, spec->body_len);
        r->body[spec->body_len] = 0;
        r->body_len = spec->body_len;
    }
    size_t nh = 0;
    while (spec->headers && spec->headers[nh])
        nh++;
    r->headers = calloc(nh + 1, sizeof *r->headers);
    if (!r->headers)
        goto oom;
    for (size_t i = 0; i < nh; i++)
        if (!(r->headers[i] = strdup(spec->headers[i])))
            goto oom;
    r->pinned = spec->pinned;
    r->free_budget = spec->free_budget;
    r->cacheable = spec->cacheable && strcmp(spec->method, "GET") == 0;
    r->twin_hash = hash_of_twin(r);
    r->resp.retry_after = -1;

    if (r->cacheable) {
        fleet_host_cache(host);
        struct fleet_request *twin = find_twin(host->http, r);
        if (twin) {
            request_free(r);
            if (!add_waiter(twin, t))
                goto oom_twin;
            host->stats.merged++;
            t->state = TASK_WAITING;
            t->wait_started = fleet_now();
            return twin;
        }
    }
    if (!add_waiter(r, t))
        goto oom;
    list_push_back(&host->http->pending, r);
    t->state = TASK_WAITING;
    t->wait_started = fleet_now();
    return r;
oom:
    if (r)
        request_free(r);
oom_twin:
    *err = "out of memory";
    return NULL;
}

/* ---- finishing ---- */

static void finish(struct fleet_host *host, struct fleet_request *r, enum fleet_err_kind kind, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void finish(struct fleet_host *host, struct fleet_request *r, enum fleet_err_kind kind, const char *fmt, ...)
{
    r->finished = true;
    r->resp.err_kind = kind;
    r->resp.attempts = r->attempts;
    if (fmt) {
        char msg[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        fleet_redact(msg, strlen(msg));
        r->resp.err_message = strdup(msg);
    }
    if (!r->resp.url)
        r->resp.url = strdup(r->url);
    if (!r->resp.from_cache) {
        r->resp.body = r->transfer.body.data;
        r->resp.body_len = r->transfer.body.len;
        r->resp.headers = r->transfer.headers.data;
        r->resp.headers_len = r->transfer.headers.len;
    }
    for (int i = 0; i < r->nwaiters; i++)
        fleet_sched_wake(host->sched, r->waiters[i]);
    r->nwaiters = 0;
    fleet_http_unref(host, r); /* the queue's reference */
}

/* ---- dispatch ---- */

static CURL *take_easy(struct fleet_http *h)
{
    if (h->nidle > 0) {
        CURL *e = h->idle[--h->nidle];
        curl_easy_reset(e);
        return e;
    }
    return curl_easy_init();
}

static void give_back_easy(struct fleet_http *h, CURL *e)
{
    if (h->nidle == h->capidle) {
        int cap = h->capidle ? 2 * h->capidle : 16;
        CURL **grown = realloc(h->idle, (size_t)cap * sizeof *grown);
        if (!grown) {
            curl_easy_cleanup(e);
            return;
        }
        h->idle = grown;
        h->capidle = cap;
    }
    h->idle[h->nidle++] = e;
}

static void format_clock(double epoch, char *buf, size_t len)
{
    time_t t = (time_t)ceil(epoch);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(buf, len, "%H:%M:%S", &tm);
}

/* The token's identity in cache keys, computed once. */
static const char *cache_id(struct fleet_host *host, struct fleet_token *tok)
{
    if (!tok->cache_id[0])
        fleet_cache_credential(host->cache, tok->secret, tok->secret ? tok->secret_len : 0, tok->cache_id);
    return tok->cache_id;
}

/* The token whose cached validators exist for this URL: the server ties
 * validators to the credential, so using it turns a refetch into a free
 * 304. */
static struct fleet_token *cache_affinity(struct fleet_host *host, struct fleet_request *r)
{
    if (!r->cacheable || !host->cache || r->pinned || r->no_credentials)
        return NULL;
    /* Looked up once: a request may wait through many dispatch passes. */
    if (r->affinity_known)
        return r->affinity && !r->affinity->disabled ? r->affinity : NULL;
    r->affinity_known = true;
    char ids[4][65];
    int n = fleet_cache_credentials_for(host->cache, r->url, ids, 4);
    for (int i = 0; i < fleet_pool_count(host->pool) && n > 0; i++) {
        struct fleet_token *t = fleet_pool_at(host->pool, i);
        if (t->provider != r->provider || t->disabled)
            continue;
        const char *id = cache_id(host, t);
        for (int j = 0; j < n; j++)
            if (strcmp(ids[j], id) == 0)
                return r->affinity = t;
    }
    return NULL;
}

static bool start(struct fleet_host *host, struct fleet_request *r, struct fleet_token *tok)
{
    struct fleet_http *h = host->http;
    CURL *easy = take_easy(h);
    if (!easy)
        return false;
    r->token = tok;
    r->sent_inflight = tok->inflight;
    r->sent_at = fleet_now();
    r->answered_before = tok->answered;
    r->landed = false;
    r->attempts++;
    if (r->has_cached) {
        fleet_cache_entry_free(&r->cached);
        r->has_cached = false;
    }
    if (r->cacheable && host->cache && !r->no_credentials && !r->skip_cache)
        r->has_cached = fleet_cache_lookup(host->cache, r->url, cache_id(host, tok), &r->cached);
    struct fleet_attempt a = {
        .method = r->method,
        .url = r->url,
        .body = r->body,
        .body_len = r->body_len,
        .headers = (const char *const *)r->headers,
        .token = r->no_credentials ? NULL : tok,
        .etag = r->has_cached ? r->cached.etag : NULL,
        .last_modified = r->has_cached ? r->cached.last_modified : NULL,
        .owner = r,
    };
    if (fleet_transport_setup(easy, &host->cfg.http, &r->transfer, &a) != 0 ||
        curl_multi_add_handle(fleet_sched_multi(host->sched), easy) != CURLM_OK) {
        fleet_transport_cleanup(&r->transfer);
        give_back_easy(h, easy);
        r->attempts--;
        return false;
    }
    r->easy = easy;
    list_remove(&h->pending, r);
    list_push_back(&h->inflight, r);
    host->stats.requests++;
    if (r->no_credentials) /* outside the provider's origin: sent without it */
        fleet_log(FLEET_LOG_DEBUG, "%s %s (no token: outside %s's origin)", r->method, r->url, r->provider->name);
    else
        fleet_log(FLEET_LOG_DEBUG, "%s %s (token %s:%s)", r->method, r->url, r->provider->name, tok->label);
    return true;
}

/* A stalled stream is read within one to two periods; a transfer still
 * receiving data is not touched. */
#define STALL_CHECK_PERIOD 0.1

double fleet_http_watch_stalls(struct fleet_host *host, double now)
{
    struct fleet_http *h = host->http;
    if (!h->inflight.head)
        return INFINITY;
    if (now < h->stall_check)
        return h->stall_check;
    for (struct fleet_request *r = h->inflight.head; r; r = r->next)
        fleet_transport_unstall(r->easy, &r->transfer);
    h->stall_check = now + STALL_CHECK_PERIOD;
    return h->stall_check;
}

/* (provider, resource) pairs found blocked in this pass: the rest of the
 * queue for them need not ask the pool again. */
struct blocked {
    struct fleet_provider *p;
    const char *resource;
    bool free_budget;
};

static bool is_blocked(const struct blocked *b, int n, const struct fleet_request *r)
{
    for (int i = 0; i < n; i++)
        if (b[i].p == r->provider && b[i].free_budget == r->free_budget && strcmp(b[i].resource, r->resource) == 0)
            return true;
    return false;
}

double fleet_http_dispatch(struct fleet_host *host, double now)
{
    struct fleet_http *h = host->http;
    double wake = INFINITY;
    struct blocked blocked[32];
    int nblocked = 0;
    int cap = host->cfg.http.max_connections;

    for (struct fleet_request *r = h->pending.head, *next; r; r = next) {
        next = r->next;
        if (h->inflight.count >= cap)
            break;
        if (r->not_before > now) {
            wake = fmin(wake, r->not_before);
            continue;
        }
        if (!r->pinned && is_blocked(blocked, nblocked, r))
            continue;
        enum fleet_pool_block why;
        double wake_at = INFINITY;
        struct fleet_token *preferred = cache_affinity(host, r);
        struct fleet_token *tok = fleet_pool_reserve(host->pool, r->provider, r->resource, r->pinned, preferred,
                                                     r->free_budget, now, &why, &wake_at);
        if (tok) {
            if (!start(host, r, tok)) {
                fleet_pool_release(host->pool, tok, r->resource, r->free_budget);
                list_remove(&h->pending, r);
                finish(host, r, ERR_NETWORK, "%s %s: cannot start the transfer (out of memory)", r->method,
                       r->url);
            }
            continue;
        }
        if (why == POOL_DISABLED) {
            list_remove(&h->pending, r);
            finish(host, r, ERR_AUTH,
                   r->pinned ? "%s %s: token %s of %s is disabled (refused with 401)"
                             : "%s %s: every token of %s is disabled (refused with 401)%s",
                   r->method, r->url, r->pinned ? r->pinned->label : r->provider->name,
                   r->pinned ? r->provider->name : "");
            continue;
        }
        if (why == POOL_WAIT) {
            if (wake_at - now > host->cfg.retry.max_wait) {
                r->resp.reset = wake_at;
                list_remove(&h->pending, r);
                char clock[16];
                format_clock(wake_at, clock, sizeof clock);
                finish(host, r, ERR_RATE_LIMITED,
                       "%s %s: every token of %s is rate limited until %s, beyond retry.max_wait (%.0fs)",
                       r->method, r->url, r->provider->name, clock, host->cfg.retry.max_wait);
                continue;
            }
            wake = fmin(wake, wake_at);
            if (!r->wait_logged && fabs(wake_at - h->logged_wake) > 0.5) {
                char clock[16];
                format_clock(wake_at, clock, sizeof clock);
                const struct fleet_token *first = fleet_pool_first_free(host->pool, r->provider);
                /* A long wait is announced even without -v: silence for
                 * minutes would look like a hang. */
                fleet_log(host->verbosity > 0 || wake_at - now > 10 ? FLEET_LOG_INFO : FLEET_LOG_DEBUG,
                          "waiting %.1fs: every token of %s is spent or paused; %s:%s frees up first, at %s",
                          wake_at - now, r->provider->name, r->provider->name, first ? first->label : "?", clock);
                h->logged_wake = wake_at;
                fleet_emit_wait(host, r->provider, wake_at);
            }
            r->wait_logged = true;
        }
        /* A request waiting for its preferred token says nothing about
         * the others. */
        if (!r->pinned && !preferred && nblocked < (int)(sizeof blocked / sizeof blocked[0]))
            blocked[nblocked++] = (struct blocked){r->provider, r->resource, r->free_budget};
    }
    return wake;
}

/* ---- completion ---- */

/* A header count as a long: a server may send any number of digits. */
static long to_count(double x) { return x >= 9.2e18 ? LONG_MAX : (long)x; }

static void parse_budget(const struct fleet_provider *p, const char *hb, size_t hl, struct fleet_budget_obs *obs,
                         double now)
{
    memset(obs, 0, sizeof *obs);
    const char *v;
    size_t n;
    double x;
    if (p->h_limit && (v = fleet_header_find(hb, hl, p->h_limit, &n)) && fleet_parse_number(v, n, &x)) {
        obs->has_limit = true;
        obs->limit = to_count(x);
    }
    if (p->h_remaining && (v = fleet_header_find(hb, hl, p->h_remaining, &n)) && fleet_parse_number(v, n, &x)) {
        obs->has_remaining = true;
        obs->remaining = to_count(x);
    }
    if (p->h_used && (v = fleet_header_find(hb, hl, p->h_used, &n)) && fleet_parse_number(v, n, &x)) {
        obs->has_used = true;
        obs->used = to_count(x);
    }
    if (p->h_reset && (v = fleet_header_find(hb, hl, p->h_reset, &n)) && fleet_parse_number(v, n, &x)) {
        obs->has_reset = true;
        obs->reset = p->reset_is_delta ? now + x : x;
    }
    if (p->h_resource && (v = fleet_header_find(hb, hl, p->h_resource, &n)) && n < sizeof obs->resource) {
        memcpy(obs->resource, v, n);
        obs->resource[n] = 0;
    }
}

static void store_in_cache(struct fleet_host *host, struct fleet_request *r, struct fleet_token *tok)
{
    const char *hb = r->transfer.headers.data ? r->transfer.headers.data : "";
    size_t hl = r->transfer.headers.len, elen = 0, llen = 0;
    const char *etag = fleet_header_find(hb, hl, "etag", &elen);
    const char *lm = fleet_header_find(hb, hl, "last-modified", &llen);
    if (!etag && !lm)
        return;
    char etag_buf[256], lm_buf[128];
    if (etag && elen < sizeof etag_buf) {
        memcpy(etag_buf, etag, elen);
        etag_buf[elen] = 0;
    }
    if (lm && llen < sizeof lm_buf) {
        memcpy(lm_buf, lm, llen);
        lm_buf[llen] = 0;
    }
    /* The body as it came: compressed when it came compressed (the stored
     * headers say so, and cached_body decodes it again). */
    const struct fleet_bytes *body = r->compressed.data ? &r->compressed : &r->transfer.body;
    fleet_cache_store(host->cache, r->url, cache_id(host, tok), etag && elen < sizeof etag_buf ? etag_buf : NULL,
                      lm && llen < sizeof lm_buf ? lm_buf : NULL, hb, hl, body->data ? body->data : "", body->len);
}

/* A gzip body is decoded into transfer.body, the compressed bytes kept for
 * the cache. A body that does not decode is treated like a truncated one
 * (retried); one that decodes past http.max_response_size is too large. */
static CURLcode decode_body(struct fleet_host *host, struct fleet_request *r, const char *hb, size_t hl)
{
    size_t len;
    const char *encoding = fleet_header_find(hb, hl, "content-encoding", &len);
    if (!encoding || (len == 8 && strncasecmp(encoding, "identity", 8) == 0))
        return CURLE_OK;
    if (!fleet_gunzip_handles(encoding, len)) {
        snprintf(r->transfer.errbuf, sizeof r->transfer.errbuf, "unsupported Content-Encoding %.*s",
                 (int)(len < 32 ? len : 32), encoding);
        return CURLE_BAD_CONTENT_ENCODING;
    }
    struct fleet_bytes plain = {0};
    const char *why = NULL;
    if (fleet_gunzip(r->transfer.body.data, r->transfer.body.len, host->cfg.http.max_response_size, &plain,
                     &why) != 0) {
        fleet_bytes_free(&plain);
        if (strcmp(why, "too large") == 0) {
            r->transfer.too_large = true;
            return CURLE_OK;
        }
        snprintf(r->transfer.errbuf, sizeof r->transfer.errbuf, "the compressed body is %s", why);
        return CURLE_PARTIAL_FILE;
    }
    r->compressed = r->transfer.body;
    r->transfer.body = plain;
    return CURLE_OK;
}

/* A stored body comes back as it was stored: gzipped if its headers say. */
static bool cached_body(struct fleet_host *host, struct fleet_request *r)
{
    size_t len;
    const char *encoding = fleet_header_find(r->cached.headers ? r->cached.headers : "", r->cached.headers_len,
                                             "content-encoding", &len);
    if (!encoding || !fleet_gunzip_handles(encoding, len)) {
        r->resp.body = r->cached.body;
        r->resp.body_len = r->cached.body_len;
        return true;
    }
    const char *why; /* fleet_gunzip reuses transfer.body's buffer */
    if (fleet_gunzip(r->cached.body, r->cached.body_len, host->cfg.http.max_response_size, &r->transfer.body,
                     &why) != 0)
        return false;
    r->resp.body = r->transfer.body.data;
    r->resp.body_len = r->transfer.body.len;
    return true;
}

static void requeue(struct fleet_host *host, struct fleet_request *r, double not_before)
{
    r->not_before = not_before;
    r->wait_logged = false;
    list_push_front(&host->http->pending, r);
}

/* Origin (scheme://host[:port]) of an absolute URL, into buf. */
static void url_origin(const char *url, char *buf, size_t len)
{
    const char *p = strstr(url, "://");
    const char *end = p ? strpbrk(p + 3, "/?#") : NULL;
    size_t n = end ? (size_t)(end - url) : strlen(url);
    if (n >= len)
        n = len - 1;
    memcpy(buf, url, n);
    buf[n] = 0;
}

static bool follow_redirect(struct fleet_host *host, struct fleet_request *r, long status)
{
    char *location = NULL;
    curl_easy_getinfo(r->easy, CURLINFO_REDIRECT_URL, &location);
    if (!location || r->redirects >= MAX_REDIRECTS)
        return false;
    char *url = strdup(location);
    if (!url)
        return false;
    char from[512], to[512];
    url_origin(r->url, from, sizeof from);
    url_origin(url, to, sizeof to);
    if (strcmp(from, to) != 0 && strcmp(to, r->provider->origin) != 0) {
        /* Leaving the provider: the credential stays behind. */
        r->no_credentials = true;
        fleet_log(FLEET_LOG_DEBUG, "redirect to another origin; credentials withheld");
    }
    free(r->url);
    r->url = url;
    r->twin_hash = hash_of_twin(r);
    r->affinity_known = false;
    if (status == 303 && strcmp(r->method, "GET") != 0) {
        free(r->method);
        r->method = strdup("GET");
        free(r->body);
        r->body = NULL;
        r->body_len = 0;
    }
    r->redirects++;
    r->attempts--; /* a redirect is not a failed attempt */
    return r->method != NULL;
}

void fleet_http_landed(struct fleet_host *host, CURL *easy, double away)
{
    struct fleet_request *r = NULL;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&r);
    r->landed = true;
    host->http->away = away;
}

/* r was answered without push-back: how many requests of its token the
 * provider held at once with it, and its window's growth (pool.c).
 *
 * Held: r and those answered, also without push-back, while r was out
 * (each was out when r was sent, or sent after it and answered first),
 * no more than were out when r was sent. An answer counts only when the
 * client saw it as it came: its time away from the poll that found it
 * short next to the answer's round trip. After a long time away (a busy or
 * slowed client) it may have come before r was even sent, and answers a
 * fast provider gave one after another would look held at once. Answers
 * not yet come do not count: one may be the refusal that shows the limit.
 *
 * Probing: the most that were out when any request of the token still
 * unanswered was sent; the window does not grow past it before those
 * answers come. */
static void answered_ok(struct fleet_host *host, struct fleet_request *r, struct fleet_token *tok, double now)
{
    const struct fleet_http *h = host->http;
    long during = tok->answered - r->answered_before;
    int held = 1 + (int)(during < r->sent_inflight - 1 ? during : r->sent_inflight - 1);
    int probing = 0;
    for (const struct fleet_request *q = h->inflight.head; q; q = q->next)
        if (q->token == tok && !q->landed && q->sent_inflight > probing)
            probing = q->sent_inflight;
    if (h->away * 4 < now - r->sent_at)
        tok->answered++;
    fleet_pool_success(host->pool, tok, held, probing);
}

void fleet_http_done(struct fleet_host *host, CURL *easy, CURLcode cres)
{
    struct fleet_http *h = host->http;
    struct fleet_request *r = NULL;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&r);
    double now = fleet_now();
    long status = 0;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
    curl_multi_remove_handle(fleet_sched_multi(host->sched), easy);
    fleet_transport_cleanup(&r->transfer);
    list_remove(&h->inflight, r);

    struct fleet_token *tok = r->token;
    struct fleet_provider *p = r->provider;
    fleet_pool_release(host->pool, tok, r->resource, r->free_budget);
    r->token = NULL;
    host->stats.bytes += (long long)r->transfer.body.len;
    const char *hb = r->transfer.headers.data ? r->transfer.headers.data : "";
    size_t hl = r->transfer.headers.len;
    /* The compressed copy is this response's only: one kept from an
     * earlier attempt or a redirect must not be cached as this body. */
    fleet_bytes_free(&r->compressed);
    if (cres == CURLE_OK && r->transfer.body.len > 0)
        cres = decode_body(host, r, hb, hl);
    /* Network text that might echo a credential is redacted before it is
     * classified, cached or handed to Lua; a body that did is not cached
     * at all (its compressed copy would still hold the secret). */
    if (r->transfer.body.data && fleet_redact(r->transfer.body.data, r->transfer.body.len) > 0)
        fleet_bytes_free(&r->compressed), r->cacheable = false;
    if (r->transfer.headers.data)
        fleet_redact(r->transfer.headers.data, r->transfer.headers.len);

    struct fleet_budget_obs obs;
    parse_budget(p, hb, hl, &obs, now);
    /* A reset given as an epoch is on the provider's clock: read it on ours. */
    if (status > 0)
        fleet_skew_observe(host->skew, p->origin, hb, hl, now);
    if (obs.has_reset && !p->reset_is_delta)
        obs.reset += fleet_skew_offset(host->skew, p->origin);
    double retry_after = -1;
    const char *v;
    size_t n;
    if ((v = fleet_header_find(hb, hl, "retry-after", &n))) /* a date in it is on the provider's clock too */
        fleet_parse_retry_after(v, n, now - fleet_skew_offset(host->skew, p->origin), &retry_after);
    if (status > 0 && !r->no_credentials)
        fleet_pool_observe(host->pool, tok, r->resource, &obs, status >= 200 && status < 300, now);

    struct fleet_verdict verdict = fleet_classify(p, cres, r->transfer.too_large, status, &obs, retry_after,
                                                  r->transfer.body.data, r->transfer.body.len);
    const char *label = tok->label;
    char clock[16];

    switch (verdict.cls) {
    case CLASS_OK:
        host->stats.responses_ok++;
        answered_ok(host, r, tok, now);
        if (status == 200 && r->cacheable && host->cache && !r->no_credentials)
            store_in_cache(host, r, tok);
        r->resp.status = status;
        r->resp.token = r->no_credentials ? NULL : label;
        r->resp.url = strdup(r->url);
        finish(host, r, ERR_NONE, NULL);
        break;
    case CLASS_NOT_MODIFIED:
        host->stats.not_modified++;
        answered_ok(host, r, tok, now);
        if (r->has_cached && !cached_body(host, r)) {
            /* The stored copy cannot be read back: fetch it anew. */
            r->skip_cache = true;
            r->attempts--;
            requeue(host, r, 0);
            break;
        }
        r->resp.token = label;
        r->resp.url = strdup(r->url);
        if (r->has_cached) {
            /* Revalidated: the stored response is the answer, at no cost. */
            fleet_cache_touch(host->cache, r->url, cache_id(host, tok));
            r->resp.status = 200;
            r->resp.from_cache = true;
            r->resp.headers = r->cached.headers;
            r->resp.headers_len = r->cached.headers_len;
        } else {
            /* A conditional request the caller made itself: 304 as is. */
            r->resp.status = status;
        }
        finish(host, r, ERR_NONE, NULL);
        break;
    case CLASS_REDIRECT:
        answered_ok(host, r, tok, now);
        if (follow_redirect(host, r, status)) {
            requeue(host, r, 0);
        } else {
            r->resp.status = status;
            finish(host, r, ERR_HTTP, "%s %s: HTTP %ld redirect not followed (no Location, or more than %d)",
                   r->method, r->url, status, MAX_REDIRECTS);
        }
        break;
    case CLASS_PRIMARY_LIMIT:
        host->stats.primary_limited++;
        fleet_pool_spent(host->pool, tok, obs.resource[0] ? obs.resource : r->resource,
                         obs.has_reset ? obs.reset : 0, now);
        format_clock(obs.has_reset ? obs.reset : now, clock, sizeof clock);
        fleet_log(host->verbosity > 0 ? FLEET_LOG_INFO : FLEET_LOG_DEBUG,
                  "%s:%s budget spent (HTTP %ld); not used again before %s", p->name, label, status, clock);
        fleet_emit(host, "rate_limited", p, tok, obs.has_reset ? obs.reset : 0, -1, status, r->attempts, r->url);
        r->attempts--; /* the refusal is the pool's to absorb, not a fault */
        r->free_budget = false; /* refused for budget: it waits for one now */
        requeue(host, r, 0);
        break;
    case CLASS_SECONDARY_LIMIT: {
        host->stats.secondary_limited++;
        double pause = fleet_pool_pause(host->pool, tok, verdict.retry_after, r->sent_inflight, now);
        fleet_log(host->verbosity > 0 ? FLEET_LOG_INFO : FLEET_LOG_DEBUG,
                  "%s:%s hit a secondary rate limit (HTTP %ld); paused for %.1fs, at most %d in flight", p->name,
                  label, status, pause, tok->cap);
        fleet_emit(host, "secondary_limit", p, tok, now + pause, pause, status, r->attempts, r->url);
        r->attempts--;
        requeue(host, r, 0);
        break;
    }
    case CLASS_AUTH:
        host->stats.unauthorized++;
        if (!tok->secret || r->no_credentials) {
            /* Anonymous, or a foreign origin: nothing to disable. */
            r->resp.status = status;
            finish(host, r, ERR_AUTH, "%s %s: HTTP 401 (authentication required)", r->method, r->url);
            break;
        }
        fleet_pool_disable(host->pool, tok);
        fleet_log(FLEET_LOG_WARN, "token %s of %s was refused (HTTP 401): disabled for this run", label, p->name);
        fleet_emit(host, "token_disabled", p, tok, 0, -1, status, r->attempts, r->url);
        r->attempts--;
        requeue(host, r, 0);
        break;
    case CLASS_RETRY:
        if (status >= 500)
            host->stats.server_errors++;
        else
            host->stats.network_errors++;
        if (r->attempts < host->cfg.retry.max_attempts) {
            double delay = fleet_backoff(&host->cfg.retry, r->attempts, verdict.retry_after);
            host->stats.retries++;
            char what[CURL_ERROR_SIZE + 32];
            if (cres == CURLE_OK)
                snprintf(what, sizeof what, "HTTP %ld", status);
            else
                snprintf(what, sizeof what, "%s", r->transfer.errbuf[0] ? r->transfer.errbuf : curl_easy_strerror(cres));
            fleet_redact(what, strlen(what));
            fleet_log(host->verbosity > 0 ? FLEET_LOG_INFO : FLEET_LOG_DEBUG, "retry %d/%d of %s %s in %.2fs: %s",
                      r->attempts, host->cfg.retry.max_attempts - 1, r->method, r->url, delay, what);
            fleet_emit(host, "retry", p, tok, now + delay, delay, status, r->attempts, r->url);
            requeue(host, r, now + delay);
            break;
        }
        r->resp.status = status;
        if (cres == CURLE_OK)
            finish(host, r, verdict.kind, "%s %s: HTTP %ld after %d attempts", r->method, r->url, status,
                   r->attempts);
        else
            finish(host, r, verdict.kind, "%s %s: %s after %d attempts", r->method, r->url,
                   r->transfer.errbuf[0] ? r->transfer.errbuf : curl_easy_strerror(cres), r->attempts);
        break;
    case CLASS_FINAL:
        /* An answer that is not a limit (a 404 for an owner of the other
         * kind, say) shows the provider took the request as well as a 200
         * does: the token's window grows on it too. */
        if (status > 0)
            answered_ok(host, r, tok, now);
        if (status >= 400)
            host->stats.client_errors++;
        r->resp.status = status;
        if (verdict.kind == ERR_TOO_LARGE)
            finish(host, r, ERR_TOO_LARGE, "%s %s: response larger than http.max_response_size (%lld bytes)",
                   r->method, r->url, host->cfg.http.max_response_size);
        else if (status > 0)
            finish(host, r, verdict.kind, "%s %s: HTTP %ld", r->method, r->url, status);
        else
            finish(host, r, verdict.kind, "%s %s: %s", r->method, r->url,
                   r->transfer.errbuf[0] ? r->transfer.errbuf : curl_easy_strerror(cres));
        break;
    }
    r->easy = NULL;
    give_back_easy(h, easy);
}

void fleet_http_abandon_all(struct fleet_host *host)
{
    /* Each request loses the queue's reference here; the tasks waiting on
     * it drop theirs when the scheduler abandons them. */
    struct fleet_http *h = host->http;
    while (h->inflight.head) {
        struct fleet_request *r = h->inflight.head;
        curl_multi_remove_handle(fleet_sched_multi(host->sched), r->easy);
        fleet_transport_cleanup(&r->transfer);
        fleet_pool_release(host->pool, r->token, r->resource, r->free_budget);
        give_back_easy(h, r->easy);
        r->easy = NULL;
        list_remove(&h->inflight, r);
        r->finished = true;
        fleet_http_unref(host, r);
    }
    while (h->pending.head) {
        struct fleet_request *r = h->pending.head;
        list_remove(&h->pending, r);
        r->finished = true;
        fleet_http_unref(host, r);
    }
}

void fleet_http_free(struct fleet_http *h)
{
    if (!h)
        return;
    for (int i = 0; i < h->nidle; i++)
        curl_easy_cleanup(h->idle[i]);
    free(h->idle);
    free(h->twins.buckets);
    free(h);
}
