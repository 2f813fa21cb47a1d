/* Requests: the life of one API call from submission by a task, through
 * the pool and the transport, retries, redirects and the cache, to the
 * result its waiting tasks resume with. */
#ifndef FLEET_HTTP_H
#define FLEET_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include <curl/curl.h>

#include "retry.h"

struct fleet_host;
struct fleet_provider;
struct fleet_token;
struct fleet_task;

struct fleet_bytes {
    char *data;
    size_t len, cap;
};

/* What waiting tasks receive. */
struct fleet_response {
    long status;
    char *headers; /* raw block of the final response's header lines */
    size_t headers_len;
    char *body;
    size_t body_len;
    char *url;          /* the URL that answered (after redirects) */
    const char *token;  /* label of the token used, or NULL */
    bool from_cache;    /* a 304 answered from the cache */
    enum fleet_err_kind err_kind; /* ERR_NONE on success */
    char *err_message;
    double reset;       /* rate_limited: when a budget resets (epoch) */
    double retry_after; /* < 0 if unknown */
    int attempts;
};

struct fleet_request_spec {
    struct fleet_provider *provider;
    const char *method;
    const char *url;
    const char *body;
    size_t body_len;
    const char *const *headers; /* "Name: value" lines, NULL-terminated */
    const char *resource;       /* NULL: the provider's default */
    struct fleet_token *pinned; /* only this token */
    bool free_budget;           /* costs no budget (GitHub /rate_limit) */
    bool cacheable;             /* conditional GET through the cache */
};

struct fleet_request;

/* Queues a request for task t, merging it with an identical cacheable GET
 * already queued or in flight. Returns the request (the task must yield),
 * or NULL with *err set when the spec is unusable. */
struct fleet_request *fleet_http_submit(struct fleet_host *host, struct fleet_task *t,
                                        const struct fleet_request_spec *spec, const char **err);

/* The outcome, once the waiting task resumes; then fleet_http_unref. */
const struct fleet_response *fleet_http_response(const struct fleet_request *r);
void fleet_http_unref(struct fleet_host *host, struct fleet_request *r);

/* Starts what the pool allows. Returns the earliest time (epoch seconds)
 * something queued could start without a completion first, or INFINITY. */
double fleet_http_dispatch(struct fleet_host *host, double now);

/* Makes libcurl read again for each transfer that received nothing since
 * the last look (see fleet_transport_unstall). Returns when it wants to
 * look next, or INFINITY when nothing is in flight. */
double fleet_http_watch_stalls(struct fleet_host *host, double now);

/* A transfer finished, found by a poll called `away` seconds after the
 * previous poll's transfers were read; marked before any of those that
 * finished with it is handled by fleet_http_done. */
void fleet_http_landed(struct fleet_host *host, CURL *easy, double away);

/* A transfer finished (called from the loop, not from a curl callback). */
void fleet_http_done(struct fleet_host *host, CURL *easy, CURLcode result);

int fleet_http_in_flight(struct fleet_host *host);
int fleet_http_pending(struct fleet_host *host);

/* Drops everything queued or in flight (interrupt, teardown). */
void fleet_http_abandon_all(struct fleet_host *host);

struct fleet_http *fleet_http_new(struct fleet_host *host);
void fleet_http_free(struct fleet_http *h);

#endif
