/* Clock skew per origin (skew.h).
 *
 * A Date header is the provider's clock when it made the response, cut to
 * the second; we read it after the response travelled. So "our clock at
 * receipt minus Date" is never below the true offset, and is above it by up
 * to a second plus the time in transit: it errs late, and a reset moved by
 * it is never earlier than the provider's, so no request goes out on a
 * budget the provider still counts as spent.
 *
 * The first response's difference is kept, not refined with every later
 * one: the pool tells one window from the next by its reset time, and a
 * reset that moved by half a second between two responses of one window
 * would look like another window. Only a difference smaller by more than
 * SKEW_REVISE (the first response was very slow, or its Date stale) replaces
 * it. */
#include "skew.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "headers.h"

/* Below this, a difference is what the Date header cannot resolve, and the
 * configured reset margin covers it: resets are taken as given. */
#define SKEW_NOISE 2.0

/* A clock further off than this is a broken or hostile Date header, not a
 * skew to correct: it is ignored. */
#define SKEW_IMPLAUSIBLE 86400.0

/* A later difference this much smaller replaces the one kept. */
#define SKEW_REVISE 10.0

/* Origins are the configured providers' (a handful), so a short list. */
struct origin_skew {
    char *origin;
    double difference; /* our clock minus the provider's, as kept */
};

struct fleet_skew {
    struct origin_skew *v;
    size_t n, cap;
};

struct fleet_skew *fleet_skew_new(void) { return calloc(1, sizeof(struct fleet_skew)); }

void fleet_skew_free(struct fleet_skew *skew)
{
    if (!skew)
        return;
    for (size_t i = 0; i < skew->n; i++)
        free(skew->v[i].origin);
    free(skew->v);
    free(skew);
}

static struct origin_skew *find(const struct fleet_skew *skew, const char *origin)
{
    for (size_t i = 0; skew && origin && i < skew->n; i++)
        if (strcmp(skew->v[i].origin, origin) == 0)
            return &skew->v[i];
    return NULL;
}

void fleet_skew_observe(struct fleet_skew *skew, const char *origin, const char *headers, size_t len, double now)
{
    size_t n;
    double date;
    const char *v = headers ? fleet_header_find(headers, len, "date", &n) : NULL;
    if (!skew || !origin || !v || !fleet_parse_http_date(v, n, &date))
        return;
    double difference = now - date;
    if (!(fabs(difference) <= SKEW_IMPLAUSIBLE))
        return;
    struct origin_skew *o = find(skew, origin);
    if (o) {
        if (difference < o->difference - SKEW_REVISE)
            o->difference = difference;
        return;
    }
    if (skew->n == skew->cap) {
        size_t cap = skew->cap ? 2 * skew->cap : 4;
        struct origin_skew *grown = realloc(skew->v, cap * sizeof *grown);
        if (!grown)
            return; /* without an estimate, resets are taken as given */
        skew->v = grown;
        skew->cap = cap;
    }
    char *copy = strdup(origin);
    if (!copy)
        return;
    skew->v[skew->n++] = (struct origin_skew){copy, difference};
}

double fleet_skew_offset(const struct fleet_skew *skew, const char *origin)
{
    const struct origin_skew *o = find(skew, origin);
    if (!o || fabs(o->difference) < SKEW_NOISE)
        return 0;
    return o->difference;
}
