/* Classification and backoff. The rules follow what the providers document
 * (shared reference: GitHub, GitLab, Bitbucket) — see retry.h. */
#include "retry.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "host.h"
#include "pool.h"

#define FLEET_NAME(e, s) s,
static const char *const kind_names[] = {FLEET_ERR_KINDS(FLEET_NAME)};
#undef FLEET_NAME

const char *fleet_err_kind_name(enum fleet_err_kind kind) { return kind_names[kind]; }

static bool body_mentions(const struct fleet_provider *p, const char *body, size_t len)
{
    /* Only the start of the body: the messages are short, and a huge body
     * should not be scanned for them. */
    if (len > 4096)
        len = 4096;
    for (size_t i = 0; i < p->nsecondary_patterns; i++) {
        const char *pat = p->secondary_patterns[i];
        size_t plen = strlen(pat);
        for (size_t j = 0; j + plen <= len; j++)
            if (strncasecmp(body + j, pat, plen) == 0)
                return true;
    }
    return false;
}

static bool is_limit_status(const struct fleet_provider *p, long status)
{
    for (int i = 0; i < p->nlimit_statuses; i++)
        if (p->limit_statuses[i] == status)
            return true;
    return false;
}

struct fleet_verdict fleet_classify(const struct fleet_provider *p, CURLcode cres, bool too_large, long status,
                                    const struct fleet_budget_obs *obs, double retry_after, const char *body,
                                    size_t body_len)
{
    struct fleet_verdict v = {CLASS_FINAL, ERR_HTTP, retry_after};
    if (too_large) {
        v.kind = ERR_TOO_LARGE;
        return v;
    }
    if (cres != CURLE_OK) {
        switch (cres) {
        case CURLE_OPERATION_TIMEDOUT:
            v.cls = CLASS_RETRY;
            v.kind = ERR_TIMEOUT;
            return v;
        case CURLE_URL_MALFORMAT:
        case CURLE_UNSUPPORTED_PROTOCOL:
        case CURLE_PEER_FAILED_VERIFICATION:
        case CURLE_SSL_CACERT_BADFILE:
        case CURLE_SSL_CERTPROBLEM:
            /* Retrying cannot fix a bad URL or a certificate that fails. */
            v.kind = ERR_NETWORK;
            return v;
        default:
            /* Connection refused or reset, truncated body (PARTIAL_FILE),
             * bad content encoding, DNS hiccups: transient. */
            v.cls = CLASS_RETRY;
            v.kind = ERR_NETWORK;
            return v;
        }
    }
    if (status >= 200 && status < 300) {
        v.cls = CLASS_OK;
        v.kind = ERR_NONE;
        return v;
    }
    if (status == 304) {
        v.cls = CLASS_NOT_MODIFIED;
        v.kind = ERR_NONE;
        return v;
    }
    if (status == 301 || status == 302 || status == 303 || status == 307 || status == 308) {
        v.cls = CLASS_REDIRECT;
        return v;
    }
    if (status == 401) {
        v.cls = CLASS_AUTH;
        v.kind = ERR_AUTH;
        return v;
    }
    if (status == 429 || is_limit_status(p, status)) {
        bool spent = obs && obs->has_remaining && obs->remaining == 0;
        if (body_mentions(p, body, body_len) || (retry_after >= 0 && !spent)) {
            v.cls = CLASS_SECONDARY_LIMIT;
            v.kind = ERR_RATE_LIMITED;
            return v;
        }
        if (spent) {
            v.cls = CLASS_PRIMARY_LIMIT;
            v.kind = ERR_RATE_LIMITED;
            return v;
        }
        if (status == 429) {
            /* Throttled with no figures at all (GitLab's Projects API,
             * Bitbucket): treat as a secondary limit on this token. */
            v.cls = CLASS_SECONDARY_LIMIT;
            v.kind = ERR_RATE_LIMITED;
            return v;
        }
        /* A 403 that is not about limits: permission denied. */
        v.kind = ERR_AUTH;
        return v;
    }
    if (status >= 500 || status == 408) {
        v.cls = CLASS_RETRY;
        v.kind = ERR_SERVER;
        return v;
    }
    v.kind = status == 404 || status == 410 ? ERR_NOT_FOUND : ERR_HTTP;
    return v;
}

double fleet_backoff(const struct fleet_retry_conf *rc, int attempt, double retry_after)
{
    if (retry_after >= 0)
        return retry_after < rc->max_wait ? retry_after : rc->max_wait;
    double ceiling = rc->base_delay * pow(2, attempt - 1);
    if (ceiling > rc->max_delay)
        ceiling = rc->max_delay;
    return ceiling * ((double)random() / (double)RAND_MAX);
}
