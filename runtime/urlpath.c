/* Dot segments in a URL's path.
 *
 * Owners and repository names are placed into API paths. Were "..", ".",
 * or their percent-encoded forms ever sent, libcurl (RFC 3986 section
 * 5.2.4) or the server would remove them and another endpoint would be
 * called: "/orgs/../repos" is "/repos". Refusing them here, for every URL
 * the host requests, means no value a plugin or a script builds a path
 * from can change which endpoint is reached, whatever the plugin's own
 * escaping does. */
#include "urlpath.h"

#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

/* Whether s[0..n) is "." or "..", with any dot written as %2E or %2e. */
static bool is_dot_segment(const char *s, size_t n)
{
    int dots = 0;
    size_t i = 0;
    while (i < n) {
        if (s[i] == '.') {
            i++;
        } else if (n - i >= 3 && s[i] == '%' && s[i + 1] == '2' && (s[i + 2] == 'e' || s[i + 2] == 'E')) {
            i += 3;
        } else {
            return false;
        }
        if (++dots > 2)
            return false;
    }
    return dots == 1 || dots == 2;
}

const char *fleet_url_path_problem(const char *url)
{
    const char *p = strstr(url, "://");
    if (!p)
        return "the URL has no scheme";
    p += 3;
    p += strcspn(p, "/?#"); /* the authority */
    size_t path_len = strcspn(p, "?#");
    const char *end = p + path_len;
    while (p < end) {
        if (*p == '/')
            p++;
        const char *seg = p;
        while (p < end && *p != '/')
            p++;
        if (is_dot_segment(seg, (size_t)(p - seg)))
            return "the URL's path holds a '.' or '..' segment, which would change the endpoint called";
    }
    return NULL;
}
