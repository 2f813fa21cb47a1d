/* The header value parsers (Retry-After, rate-limit numbers and resets,
 * HTTP dates) and fleet_header_find, on arbitrary bytes.
 *
 * The input is used twice: as one header value, and as a raw header block
 * in which a few names are looked up (then their values parsed, as
 * http.c does). Checks:
 * - fleet_parse_number: on success the value is finite and >= 0, the
 *   trimmed text is digits with at most one '.', and strtod agrees;
 * - fleet_parse_http_date: on success the epoch is a whole number of
 *   seconds from 1970 on; written back as an IMF-fixdate it parses to
 *   the same epoch;
 * - fleet_parse_retry_after: on success seconds >= 0 and finite, equal to
 *   the number, or to the date minus now (0 if past);
 * - fleet_header_find: a value found lies inside the block, on one line,
 *   trimmed, and is the one a naive line-by-line lookup finds. */
#include <math.h>
#include <stdint.h>
#include <strings.h>
#include <time.h>

#include "fuzz_check.h"
#include "headers.h"

static bool is_trim(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

static void check_number(const char *v, size_t len)
{
    double x = -1;
    if (!fleet_parse_number(v, len, &x))
        return;
    FUZZ_CHECK(isfinite(x) && x >= 0, "fleet_parse_number gave %g", x);
    while (len && is_trim(*v))
        v++, len--;
    while (len && is_trim(v[len - 1]))
        len--;
    FUZZ_CHECK(len > 0 && len <= 32, "fleet_parse_number accepted %zu trimmed bytes", len);
    char buf[40];
    int dots = 0, digits = 0;
    for (size_t i = 0; i < len; i++) {
        FUZZ_CHECK((v[i] >= '0' && v[i] <= '9') || v[i] == '.', "fleet_parse_number accepted byte 0x%02x",
                   (unsigned char)v[i]);
        dots += v[i] == '.';
        digits += v[i] != '.';
    }
    FUZZ_CHECK(dots <= 1 && digits >= 1, "fleet_parse_number accepted %d dots, %d digits", dots, digits);
    memcpy(buf, v, len);
    buf[len] = 0;
    double ref = strtod(buf, NULL);
    FUZZ_CHECK(fabs(x - ref) <= 1e-9 * (ref > 1 ? ref : 1), "fleet_parse_number gave %.17g, strtod %.17g", x,
               ref);
}

static void check_date(const char *v, size_t len)
{
    double epoch = -1;
    if (!fleet_parse_http_date(v, len, &epoch))
        return;
    FUZZ_CHECK(isfinite(epoch) && epoch >= 0 && epoch == floor(epoch), "fleet_parse_http_date gave %.17g", epoch);
    /* Day 31 of a short month, or second 60, is normalised by timegm; the
     * written-back date is the normalised one. */
    time_t t = (time_t)epoch;
    struct tm tm;
    FUZZ_CHECK(gmtime_r(&t, &tm) != NULL, "gmtime_r failed for %.17g", epoch);
    if (tm.tm_year + 1900 > 9999)
        return; /* 9999-12-31 23:59:60 rolls over into a year that has no 4-digit form */
    char back[64];
    size_t n = strftime(back, sizeof back, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    FUZZ_CHECK(n > 0, "strftime failed");
    double again = -1;
    FUZZ_CHECK(fleet_parse_http_date(back, n, &again) && again == epoch,
               "the date written back (%s) parses to %.17g, not %.17g", back, again, epoch);
}

static void check_retry_after(const char *v, size_t len)
{
    static const double nows[] = {0, 1.7e9, 253402300799.0};
    for (size_t i = 0; i < sizeof nows / sizeof *nows; i++) {
        double s = -1, num, date;
        if (!fleet_parse_retry_after(v, len, nows[i], &s)) {
            FUZZ_CHECK(!fleet_parse_number(v, len, &num) && !fleet_parse_http_date(v, len, &date),
                       "fleet_parse_retry_after refused a number or a date");
            continue;
        }
        FUZZ_CHECK(isfinite(s) && s >= 0, "fleet_parse_retry_after gave %g seconds", s);
        if (fleet_parse_number(v, len, &num))
            FUZZ_CHECK(s == num, "retry-after %g for the number %g", s, num);
        else if (fleet_parse_http_date(v, len, &date))
            FUZZ_CHECK(s == (date > nows[i] ? date - nows[i] : 0), "retry-after %g for the date %g at %g", s, date,
                       nows[i]);
        else
            fuzz_fail("fleet_parse_retry_after accepted what is neither a number nor a date");
    }
}

static void check_value(const char *v, size_t len)
{
    check_number(v, len);
    check_date(v, len);
    check_retry_after(v, len);
}

/* The last line "name:value" (name matched without case), value trimmed. */
static const char *naive_find(const char *b, size_t blen, const char *name, size_t *vlen)
{
    size_t nlen = strlen(name);
    const char *found = NULL;
    size_t start = 0;
    while (start < blen) {
        size_t end = start;
        while (end < blen && b[end] != '\n')
            end++;
        if (end - start > nlen && b[start + nlen] == ':' && strncasecmp(b + start, name, nlen) == 0) {
            size_t a = start + nlen + 1, z = end;
            while (a < z && is_trim(b[a]))
                a++;
            while (z > a && is_trim(b[z - 1]))
                z--;
            found = b + a;
            *vlen = z - a;
        }
        start = end + 1;
    }
    return found;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *block = (const char *)data;
    check_value(block, size);

    static const char *const names[] = {"retry-after", "x-ratelimit-reset", "ratelimit-reset",
                                        "x-ratelimit-remaining", "link", "date", "etag"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        size_t len = 12345, ref_len = 0;
        const char *v = fleet_header_find(block, size, names[i], &len);
        const char *ref = naive_find(block, size, names[i], &ref_len);
        FUZZ_CHECK(v == ref, "fleet_header_find(%s) at offset %td, the naive lookup at %td", names[i],
                   v ? v - block : -1, ref ? ref - block : -1);
        if (!v)
            continue;
        FUZZ_CHECK(len == ref_len, "fleet_header_find(%s): length %zu, expected %zu", names[i], len, ref_len);
        FUZZ_CHECK(v >= block && v <= block + size && len <= (size_t)(block + size - v),
                   "fleet_header_find(%s): value outside the block", names[i]);
        FUZZ_CHECK(!memchr(v, '\n', len), "fleet_header_find(%s): value spans lines", names[i]);
        FUZZ_CHECK(len == 0 || (!is_trim(v[0]) && !is_trim(v[len - 1])), "fleet_header_find(%s): untrimmed",
                   names[i]);
        check_value(v, len);
    }
    return 0;
}
