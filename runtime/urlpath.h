/* Checks on URLs: a base_url, and every URL before it is requested. */
#ifndef FLEET_URLPATH_H
#define FLEET_URLPATH_H

/* NULL when the path of url (an http:// or https:// URL) has no dot
 * segment, else why it is refused. A dot segment ("." or "..", also
 * percent-encoded as %2E) would be removed by libcurl or by the server,
 * so the endpoint called would not be the one the URL names. */
const char *fleet_url_path_problem(const char *url);

/* NULL when url can be a provider's base_url, else why not: http(s)://
 * and a host (a bracketed IPv6 address closed), an optional port from 1 to
 * 65535, no user:password@ (a secret in the URL would end up in every
 * logged URL), no query or fragment (paths are appended to it: with
 * "#x", every request would go to the base itself), no dot segment, no
 * space or control character. */
const char *fleet_base_url_problem(const char *url);

#endif
