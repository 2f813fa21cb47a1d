/* A map from byte strings to pointers, for lookups that must not grow
 * with the number of entries: tokens by label, budgets by their key,
 * labels seen in a configuration list. Keys are copied; values are not
 * owned. */
#ifndef FLEET_STRMAP_H
#define FLEET_STRMAP_H

#include <stddef.h>

struct fleet_strmap {
    struct fleet_strmap_slot *slots; /* open addressing; NULL until the first put */
    size_t cap, count;                /* cap: 0 or a power of two */
};

/* The value under key[0..len), or NULL. */
void *fleet_strmap_get(const struct fleet_strmap *m, const char *key, size_t len);

/* Sets the value under key[0..len), replacing any; exits on out of memory,
 * as the rest of the host does. */
void fleet_strmap_put(struct fleet_strmap *m, const char *key, size_t len, void *value);

void fleet_strmap_free(struct fleet_strmap *m);

#endif
