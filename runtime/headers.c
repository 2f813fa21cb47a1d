/* Parsers for response headers. Every function stays within [v, v+len) and
 * never trusts a length, count or date it reads. */
#include "headers.h"

#include <ctype.h>
#include <stdio.h>
#include <math.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static bool is_space(char c) { return c == ' ' || c == '\t'; }

static void trim(const char **v, size_t *len)
{
    while (*len && (is_space(**v) || **v == '\r' || **v == '\n'))
        (*v)++, (*len)--;
    while (*len && (is_space((*v)[*len - 1]) || (*v)[*len - 1] == '\r' || (*v)[*len - 1] == '\n'))
        (*len)--;
}

const char *fleet_header_find(const char *block, size_t blen, const char *name, size_t *len)
{
    size_t nlen = strlen(name);
    const char *found = NULL;
    const char *p = block, *end = block + blen;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = eol ? eol : end;
        size_t llen = (size_t)(line_end - p);
        if (llen > nlen && p[nlen] == ':' && strncasecmp(p, name, nlen) == 0) {
            const char *v = p + nlen + 1;
            size_t vlen = (size_t)(line_end - v);
            trim(&v, &vlen);
            found = v;
            *len = vlen;
        }
        p = eol ? eol + 1 : end;
    }
    return found;
}

/* Link: <url>; param; rel="a b", <url2>; rel=c */
int fleet_parse_link(const char *v, size_t len, fleet_link_fn fn, void *ud)
{
    const char *p = v, *end = v + len;
    int count = 0;
    while (p < end) {
        while (p < end && (is_space(*p) || *p == ','))
            p++;
        if (p >= end)
            break;
        if (*p != '<') {
            /* Not a link-value: skip to the next comma outside quotes. */
            bool quoted = false;
            while (p < end && (quoted || *p != ',')) {
                if (*p == '"')
                    quoted = !quoted;
                p++;
            }
            continue;
        }
        const char *url = ++p;
        while (p < end && *p != '>')
            p++;
        if (p >= end)
            break;
        size_t urllen = (size_t)(p - url);
        p++;
        /* Parameters up to the next comma that is outside quotes. */
        const char *rel = NULL;
        size_t rellen = 0;
        while (p < end && *p != ',') {
            while (p < end && (is_space(*p) || *p == ';'))
                p++;
            const char *pname = p;
            while (p < end && *p != '=' && *p != ';' && *p != ',')
                p++;
            size_t pnamelen = (size_t)(p - pname);
            while (pnamelen && is_space(pname[pnamelen - 1]))
                pnamelen--;
            const char *pval = NULL;
            size_t pvallen = 0;
            if (p < end && *p == '=') {
                p++;
                while (p < end && is_space(*p))
                    p++;
                if (p < end && *p == '"') {
                    pval = ++p;
                    while (p < end && *p != '"')
                        p++;
                    pvallen = (size_t)(p - pval);
                    if (p < end)
                        p++;
                } else {
                    pval = p;
                    while (p < end && *p != ';' && *p != ',' && !is_space(*p))
                        p++;
                    pvallen = (size_t)(p - pval);
                }
            }
            if (pnamelen == 3 && strncasecmp(pname, "rel", 3) == 0 && pval && !rel) {
                rel = pval;
                rellen = pvallen;
            }
            while (p < end && *p != ';' && *p != ',')
                p++;
        }
        if (rel) {
            /* rel may hold several space-separated relation types. */
            const char *r = rel, *rend = rel + rellen;
            while (r < rend) {
                while (r < rend && is_space(*r))
                    r++;
                const char *t = r;
                while (r < rend && !is_space(*r))
                    r++;
                if (r > t) {
                    fn(t, (size_t)(r - t), url, urllen, ud);
                    count++;
                }
            }
        }
    }
    return count;
}

bool fleet_parse_number(const char *v, size_t len, double *out)
{
    trim(&v, &len);
    if (len == 0 || len > 32)
        return false;
    double whole = 0, frac = 0, scale = 1;
    size_t i = 0;
    bool digits = false;
    for (; i < len && isdigit((unsigned char)v[i]); i++, digits = true)
        whole = whole * 10 + (v[i] - '0');
    if (i < len && v[i] == '.') {
        for (i++; i < len && isdigit((unsigned char)v[i]); i++, digits = true) {
            scale /= 10;
            frac += (v[i] - '0') * scale;
        }
    }
    if (!digits || i != len)
        return false;
    *out = whole + frac;
    return isfinite(*out);
}

static int month_index(const char *m)
{
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    for (int i = 0; i < 12; i++)
        if (strncasecmp(m, months + 3 * i, 3) == 0)
            return i;
    return -1;
}

bool fleet_parse_http_date(const char *v, size_t len, double *epoch)
{
    char buf[64];
    trim(&v, &len);
    if (len == 0 || len >= sizeof buf)
        return false;
    memcpy(buf, v, len);
    buf[len] = 0;
    struct tm tm = {0};
    char mon[4] = {0}, wday[10] = {0};
    int day, year, h, m, s, n = 0;
    /* IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT */
    if (sscanf(buf, "%3s, %2d %3s %4d %2d:%2d:%2d GMT%n", wday, &day, mon, &year, &h, &m, &s, &n) == 7 &&
        (size_t)n == len) {
    /* RFC 850: Sunday, 06-Nov-94 08:49:37 GMT */
    } else if (sscanf(buf, "%9[A-Za-z], %2d-%3s-%2d %2d:%2d:%2d GMT%n", wday, &day, mon, &year, &h, &m, &s,
                      &n) == 7 &&
               (size_t)n == len) {
        year += year < 70 ? 2000 : 1900;
    /* asctime: Sun Nov  6 08:49:37 1994 */
    } else if (sscanf(buf, "%3s %3s %2d %2d:%2d:%2d %4d%n", wday, mon, &day, &h, &m, &s, &year, &n) == 7 &&
               (size_t)n == len) {
    } else {
        return false;
    }
    int mi = month_index(mon);
    if (mi < 0 || day < 1 || day > 31 || h > 23 || m > 59 || s > 60 || year < 1970 || year > 9999 || h < 0 ||
        m < 0 || s < 0)
        return false;
    tm.tm_year = year - 1900;
    tm.tm_mon = mi;
    tm.tm_mday = day;
    tm.tm_hour = h;
    tm.tm_min = m;
    tm.tm_sec = s;
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return false;
    *epoch = (double)t;
    return true;
}

bool fleet_parse_retry_after(const char *v, size_t len, double now, double *seconds)
{
    double x;
    if (fleet_parse_number(v, len, &x)) {
        *seconds = x;
        return true;
    }
    if (fleet_parse_http_date(v, len, &x)) {
        *seconds = x > now ? x - now : 0;
        return true;
    }
    return false;
}
