/* Parsers for what servers send in response headers: header lookup in a raw
 * header block, Link, Retry-After, and rate-limit budget values. They read
 * untrusted input, so each is bounded, allocation-free where it can be, and
 * fuzzed (fuzz/). */
#ifndef FLEET_HEADERS_H
#define FLEET_HEADERS_H

#include <stdbool.h>
#include <stddef.h>

/* Finds header NAME (case-insensitive) in a raw block of "Name: value\r\n"
 * lines; returns a pointer to its trimmed value and sets *len, or NULL. The
 * last occurrence wins, as with a proxy that appends. */
const char *fleet_header_find(const char *block, size_t blen, const char *name, size_t *len);

/* Calls fn(rel, rellen, url, urllen, ud) for each link-value of a Link
 * header: <url>; rel="next", <url>; rel="last". A link with several
 * relation types ("next last") is reported once per type. Malformed parts
 * are skipped. Returns the number of links reported. */
typedef void (*fleet_link_fn)(const char *rel, size_t rellen, const char *url, size_t urllen, void *ud);
int fleet_parse_link(const char *v, size_t len, fleet_link_fn fn, void *ud);

/* Retry-After: delta-seconds or an HTTP-date. Sets *seconds (>= 0, relative
 * to now) and returns true if the value is valid. */
bool fleet_parse_retry_after(const char *v, size_t len, double now, double *seconds);

/* A non-negative decimal integer, possibly fractional ("1.5"); whole value
 * must be a number. Returns true on success. */
bool fleet_parse_number(const char *v, size_t len, double *out);

/* An HTTP-date (RFC 9110 IMF-fixdate, plus the obsolete RFC 850 and asctime
 * forms) as epoch seconds. */
bool fleet_parse_http_date(const char *v, size_t len, double *epoch);

#endif
