/* One HTTP attempt on a libcurl easy handle: options (timeouts, TLS,
 * compression, HTTP/2, size cap), credentials, and capture of the
 * response's headers and body. */
#ifndef FLEET_TRANSPORT_H
#define FLEET_TRANSPORT_H

#include <stdbool.h>

#include <curl/curl.h>

#include "http.h"

struct fleet_http_conf;
struct fleet_token;

struct fleet_transfer {
    struct fleet_bytes body;
    struct fleet_bytes headers;
    long long max_body;
    bool too_large;
    size_t watched;      /* bytes received when the stall watch last looked */
    struct curl_slist *slist; /* request headers, credentials among them */
    char errbuf[CURL_ERROR_SIZE];
};

struct fleet_attempt {
    const char *method;
    const char *url;
    const char *body;
    size_t body_len;
    const char *const *headers;
    const struct fleet_token *token; /* NULL: send no credentials */
    const char *etag;                /* validators of a cached response */
    const char *last_modified;
    void *owner;                     /* CURLOPT_PRIVATE */
};

/* Sets up easy (already reset) for one attempt. Returns 0, or -1 if memory
 * ran out. */
int fleet_transport_setup(CURL *easy, const struct fleet_http_conf *conf, struct fleet_transfer *x,
                          const struct fleet_attempt *a);

/* If the transfer received nothing since the last call, makes libcurl read
 * its connection again, now. The libcurl of Debian 12 (7.88) can leave the
 * end of an HTTP/2 stream in its connection buffer, unread, when the
 * transfer that pulled those bytes off the socket finishes first: nothing
 * on the socket then wakes the stream, and it sits until its timeout.
 * Pausing and resuming the transfer is the public way to make libcurl look
 * again; on a connection with nothing buffered it costs one read that
 * finds nothing. */
void fleet_transport_unstall(CURL *easy, struct fleet_transfer *x);

/* Wipes the credential from memory and frees what the attempt held, except
 * the captured body and headers. */
void fleet_transport_cleanup(struct fleet_transfer *x);

/* Appends to a buffer, growing it; returns false when memory ran out. */
bool fleet_bytes_append(struct fleet_bytes *b, const char *data, size_t len);
void fleet_bytes_free(struct fleet_bytes *b);

#endif
