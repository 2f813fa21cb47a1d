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

const char *fleet_base_url_problem(const char *url)
{
    const char *rest = strncasecmp(url, "https://", 8) == 0  ? url + 8
                       : strncasecmp(url, "http://", 7) == 0 ? url + 7
                                                             : NULL;
    if (!rest)
        return "expected an http:// or https:// URL";
    if (!*rest || *rest == '/')
        return "the URL has no host";
    for (const char *p = url; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            return "a URL must not contain spaces or control characters";
    size_t authority = strcspn(rest, "/?#");
    if (memchr(rest, '@', authority))
        return "credentials in the URL are not allowed; put them under tokens";
    if (strchr(rest, '?'))
        return "a base_url has no query ('?'): request paths are appended to it";
    if (strchr(rest, '#'))
        return "a base_url has no fragment ('#'): it would cut off every request path";
    const char *host_end = rest + authority;
    const char *port = NULL;
    if (*rest == '[') {
        const char *close = memchr(rest, ']', authority);
        if (!close)
            return "the host has an unclosed '['";
        if (close + 1 < host_end && close[1] != ':')
            return "unexpected characters after the ']' of the host";
        if (close + 1 < host_end)
            port = close + 2;
    } else {
        if (memchr(rest, '[', authority) || memchr(rest, ']', authority))
            return "a '[' or ']' belongs only around an IPv6 address";
        const char *colon = memchr(rest, ':', authority);
        if (colon == rest)
            return "the URL has no host";
        if (colon)
            port = colon + 1;
    }
    if (port) {
        long n = 0;
        const char *p = port;
        for (; p < host_end && *p >= '0' && *p <= '9' && n <= 65535; p++)
            n = n * 10 + (*p - '0');
        if (p == port || p != host_end)
            return "the port must be a number from 1 to 65535";
        if (n < 1 || n > 65535)
            return "the port must be a number from 1 to 65535";
    }
    return fleet_url_path_problem(url);
}
