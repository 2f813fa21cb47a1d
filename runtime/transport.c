/* One HTTP attempt on a libcurl easy handle.
 *
 * Redirects are not followed by libcurl: the request layer follows them
 * itself so it can drop the credential when a redirect leaves the
 * provider's origin (libcurl would keep a custom header such as
 * PRIVATE-TOKEN). */
#include "transport.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "host.h"
#include "pool.h"

#define MAX_HEADER_BYTES (256 * 1024)

bool fleet_bytes_append(struct fleet_bytes *b, const char *data, size_t len)
{
    if (b->len + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + len + 1)
            cap *= 2;
        char *grown = realloc(b->data, cap);
        if (!grown)
            return false;
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = 0;
    return true;
}

void fleet_bytes_free(struct fleet_bytes *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

static size_t on_body(char *data, size_t size, size_t n, void *ud)
{
    struct fleet_transfer *x = ud;
    size_t len = size * n;
    if ((long long)(x->body.len + len) > x->max_body) {
        x->too_large = true;
        return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
    }
    return fleet_bytes_append(&x->body, data, len) ? len : 0;
}

static size_t on_header(char *data, size_t size, size_t n, void *ud)
{
    struct fleet_transfer *x = ud;
    size_t len = size * n;
    /* A new status line starts a new response (after 100 Continue). */
    if (len >= 5 && memcmp(data, "HTTP/", 5) == 0) {
        x->headers.len = 0;
        x->body.len = 0;
    }
    if (x->headers.len + len > MAX_HEADER_BYTES) {
        x->too_large = true;
        return 0;
    }
    /* Size the body buffer once from Content-Length (within the cap). */
    if (len > 15 && strncasecmp(data, "content-length:", 15) == 0 && x->body.cap == 0) {
        long long cl = atoll(data + 15);
        if (cl > 0 && cl <= x->max_body) {
            x->body.data = malloc((size_t)cl + 1);
            if (x->body.data)
                x->body.cap = (size_t)cl + 1;
        }
    }
    return fleet_bytes_append(&x->headers, data, len) ? len : 0;
}

static bool add_header(struct curl_slist **list, const char *line)
{
    struct curl_slist *next = curl_slist_append(*list, line);
    if (!next)
        return false;
    *list = next;
    return true;
}

/* "Name: scheme secret" or, for HTTP Basic, "Authorization: Basic b64". */
static bool add_credential(struct curl_slist **list, const struct fleet_token *t)
{
    const struct fleet_provider *p = t->provider;
    size_t cap = strlen(p->auth_header) + (p->auth_scheme ? strlen(p->auth_scheme) : 0) + 16 +
                 2 * (t->secret_len + (t->username ? strlen(t->username) : 0)) + 8;
    char *line = malloc(cap);
    if (!line)
        return false;
    int n;
    if (t->username) {
        static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        size_t ulen = strlen(t->username), rlen = ulen + 1 + t->secret_len;
        unsigned char *raw = malloc(rlen);
        if (!raw) {
            free(line);
            return false;
        }
        memcpy(raw, t->username, ulen);
        raw[ulen] = ':';
        memcpy(raw + ulen + 1, t->secret, t->secret_len);
        n = snprintf(line, cap, "Authorization: Basic ");
        for (size_t i = 0; i < rlen; i += 3) {
            unsigned v = (unsigned)raw[i] << 16 | (i + 1 < rlen ? (unsigned)raw[i + 1] << 8 : 0) |
                         (i + 2 < rlen ? raw[i + 2] : 0);
            line[n++] = b64[v >> 18 & 63];
            line[n++] = b64[v >> 12 & 63];
            line[n++] = i + 1 < rlen ? b64[v >> 6 & 63] : '=';
            line[n++] = i + 2 < rlen ? b64[v & 63] : '=';
        }
        line[n] = 0;
        explicit_bzero(raw, rlen);
        free(raw);
    } else if (p->auth_scheme) {
        n = snprintf(line, cap, "%s: %s %.*s", p->auth_header, p->auth_scheme, (int)t->secret_len, t->secret);
    } else {
        n = snprintf(line, cap, "%s: %.*s", p->auth_header, (int)t->secret_len, t->secret);
    }
    bool ok = add_header(list, line);
    explicit_bzero(line, (size_t)n);
    free(line);
    return ok;
}

int fleet_transport_setup(CURL *easy, const struct fleet_http_conf *conf, struct fleet_transfer *x,
                          const struct fleet_attempt *a)
{
    x->max_body = conf->max_response_size;
    x->too_large = false;
    x->watched = 0;
    x->errbuf[0] = 0;
    x->body.len = x->headers.len = 0;

    bool ok = true, encoding_given = false;
    for (const char *const *h = a->headers; h && *h && ok; h++) {
        ok = add_header(&x->slist, *h);
        encoding_given = encoding_given || strncasecmp(*h, "accept-encoding:", 16) == 0;
    }
    /* gzip, decoded by the request layer (gunzip.c) rather than libcurl,
     * so the cache can store the compressed bytes. */
    if (ok && !encoding_given)
        ok = add_header(&x->slist, "Accept-Encoding: gzip");
    if (ok && a->token && a->token->secret)
        ok = add_credential(&x->slist, a->token);
    if (ok && a->etag) {
        char line[512];
        snprintf(line, sizeof line, "If-None-Match: %s", a->etag);
        ok = add_header(&x->slist, line);
    }
    if (ok && a->last_modified) {
        char line[256];
        snprintf(line, sizeof line, "If-Modified-Since: %s", a->last_modified);
        ok = add_header(&x->slist, line);
    }
    if (!ok)
        return -1;

    curl_easy_setopt(easy, CURLOPT_URL, a->url);
    /* The path goes out as given (and as logged): the host refuses dot
     * segments before a request is queued (urlpath.c), so libcurl has
     * nothing to normalise. */
    curl_easy_setopt(easy, CURLOPT_PATH_AS_IS, 1L);
    if (strcmp(a->method, "GET") == 0) {
        curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
    } else if (strcmp(a->method, "HEAD") == 0) {
        curl_easy_setopt(easy, CURLOPT_NOBODY, 1L);
    } else {
        curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, a->method);
        if (a->body) {
            curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)a->body_len);
            curl_easy_setopt(easy, CURLOPT_POSTFIELDS, a->body);
        }
    }
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, x->slist);
    curl_easy_setopt(easy, CURLOPT_USERAGENT, "gitfleet/" FLEET_VERSION);
    curl_easy_setopt(easy, CURLOPT_HTTP_CONTENT_DECODING, 0L);
    curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    /* Over TLS, a request waits for the handshake to tell whether the
     * origin multiplexes (HTTP/2) rather than opening a connection of its
     * own. Plain http:// is HTTP/1.1 here, and there the wait would last
     * until the first connection's first response: a round trip lost by
     * every request sent with it. */
    if (strncmp(a->url, "https://", 8) == 0)
        curl_easy_setopt(easy, CURLOPT_PIPEWAIT, 1L);
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(easy, CURLOPT_BUFFERSIZE, 64L * 1024);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long)(conf->timeout * 1000));
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, (long)(conf->connect_timeout * 1000));
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, conf->insecure ? 0L : 1L);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, conf->insecure ? 0L : 2L);
    if (conf->ca_file)
        curl_easy_setopt(easy, CURLOPT_CAINFO, conf->ca_file);
    if (conf->ca_path)
        curl_easy_setopt(easy, CURLOPT_CAPATH, conf->ca_path);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(easy, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, x->errbuf);
    curl_easy_setopt(easy, CURLOPT_PRIVATE, a->owner);
    return 0;
}

void fleet_transport_unstall(CURL *easy, struct fleet_transfer *x)
{
    size_t received = x->headers.len + x->body.len;
    curl_off_t sent_at = 0;
    /* Only once the request is out: before that there is no stream. */
    if (received == x->watched && curl_easy_getinfo(easy, CURLINFO_PRETRANSFER_TIME_T, &sent_at) == CURLE_OK &&
        sent_at > 0) {
        curl_easy_pause(easy, CURLPAUSE_ALL);
        curl_easy_pause(easy, CURLPAUSE_CONT);
    }
    x->watched = received;
}

void fleet_transport_cleanup(struct fleet_transfer *x)
{
    /* libcurl copied the header strings; the credential in those copies
     * is wiped before they are freed. */
    for (struct curl_slist *s = x->slist; s; s = s->next)
        explicit_bzero(s->data, strlen(s->data));
    curl_slist_free_all(x->slist);
    x->slist = NULL;
}
