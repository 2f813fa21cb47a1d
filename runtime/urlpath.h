/* Checks on the path of a URL before it is requested. */
#ifndef FLEET_URLPATH_H
#define FLEET_URLPATH_H

/* NULL when the path of url (an http:// or https:// URL) has no dot
 * segment, else why it is refused. A dot segment ("." or "..", also
 * percent-encoded as %2E) would be removed by libcurl or by the server,
 * so the endpoint called would not be the one the URL names. */
const char *fleet_url_path_problem(const char *url);

#endif
