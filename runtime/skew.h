/* Clock skew per origin: how far this machine's clock is from a provider's,
 * learned from the Date header of its responses, so that a rate-limit reset
 * the provider gives on its own clock (an epoch) is read on ours. */
#ifndef FLEET_SKEW_H
#define FLEET_SKEW_H

#include <stddef.h>

struct fleet_skew;

struct fleet_skew *fleet_skew_new(void);
void fleet_skew_free(struct fleet_skew *skew);

/* Takes the Date header of a response from origin, received at now (our
 * clock), into that origin's estimate. Headers without a valid Date are
 * ignored. */
void fleet_skew_observe(struct fleet_skew *skew, const char *origin, const char *headers, size_t len, double now);

/* Seconds to add to a time on origin's clock to get it on ours: 0 until a
 * Date was seen, and while the difference is within what a Date header can
 * tell (its one-second resolution and a response's time in transit). */
double fleet_skew_offset(const struct fleet_skew *skew, const char *origin);

#endif
