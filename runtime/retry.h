/* Classification of a response, and how long to wait before a retry. */
#ifndef FLEET_RETRY_H
#define FLEET_RETRY_H

#include <stdbool.h>
#include <stddef.h>

#include <curl/curl.h>

#include "config.h"

struct fleet_provider;
struct fleet_budget_obs;

enum fleet_class {
    CLASS_OK,             /* 2xx: hand to the caller */
    CLASS_NOT_MODIFIED,   /* 304: serve the cached body */
    CLASS_REDIRECT,       /* 301/302/303/307/308 with a Location */
    CLASS_PRIMARY_LIMIT,  /* 403/429 with the budget spent: token spent until reset */
    CLASS_SECONDARY_LIMIT,/* 403/429 otherwise limited: pause the token */
    CLASS_AUTH,           /* 401: disable the token */
    CLASS_RETRY,          /* 5xx, network failure, timeout, truncated body: back off */
    CLASS_FINAL,          /* other 4xx and what retrying cannot fix: to the caller */
};

/* The kinds of error a Lua caller sees in err.kind. */
#define FLEET_ERR_KINDS(X)                                                                         \
    X(ERR_NONE, "none") X(ERR_RATE_LIMITED, "rate_limited") X(ERR_AUTH, "auth")                   \
    X(ERR_NOT_FOUND, "not_found") X(ERR_HTTP, "http") X(ERR_SERVER, "server")                      \
    X(ERR_NETWORK, "network") X(ERR_TIMEOUT, "timeout") X(ERR_DECODE, "decode")                   \
    X(ERR_TOO_LARGE, "too_large") X(ERR_CONFIG, "config") X(ERR_INTERRUPTED, "interrupted")

#define FLEET_ENUM(e, s) e,
enum fleet_err_kind { FLEET_ERR_KINDS(FLEET_ENUM) };
#undef FLEET_ENUM

const char *fleet_err_kind_name(enum fleet_err_kind kind);

struct fleet_verdict {
    enum fleet_class cls;
    enum fleet_err_kind kind; /* what a caller sees if this is final */
    double retry_after;       /* from Retry-After; < 0 if absent */
};

/* Classifies one attempt. `cres` is libcurl's result; status is 0 when no
 * response arrived. `body` may be a prefix of the body (secondary-limit
 * messages are near its start). */
struct fleet_verdict fleet_classify(const struct fleet_provider *p, CURLcode cres, bool too_large, long status,
                                    const struct fleet_budget_obs *obs, double retry_after, const char *body,
                                    size_t body_len);

/* Exponential backoff with full jitter for attempt n (1-based), in seconds:
 * uniform in [0, min(max_delay, base_delay * 2^(n-1))]; a server's
 * Retry-After, when given, is honoured instead (capped at max_wait). */
double fleet_backoff(const struct fleet_retry_conf *rc, int attempt, double retry_after);

#endif
