/* Open addressing with linear probing, kept at most half full. */
#include "strmap.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fleet_strmap_slot {
    char *key; /* NULL: free */
    size_t len;
    uint64_t hash;
    void *value;
};

static uint64_t hash_of(const char *key, size_t len)
{
    uint64_t h = 14695981039346656037u; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)key[i]) * 1099511628211u;
    return h;
}

static struct fleet_strmap_slot *find(const struct fleet_strmap *m, const char *key, size_t len, uint64_t h)
{
    size_t mask = m->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        struct fleet_strmap_slot *s = &m->slots[i];
        if (!s->key || (s->hash == h && s->len == len && memcmp(s->key, key, len) == 0))
            return s;
    }
}

void *fleet_strmap_get(const struct fleet_strmap *m, const char *key, size_t len)
{
    if (!m->cap)
        return NULL;
    struct fleet_strmap_slot *s = find(m, key, len, hash_of(key, len));
    return s->key ? s->value : NULL;
}

static void out_of_memory(void)
{
    fputs("gitfleet: error: out of memory\n", stderr);
    exit(70);
}

static void grow(struct fleet_strmap *m)
{
    struct fleet_strmap old = *m;
    m->cap = old.cap ? 2 * old.cap : 16;
    m->slots = calloc(m->cap, sizeof *m->slots);
    if (!m->slots)
        out_of_memory();
    for (size_t i = 0; i < old.cap; i++)
        if (old.slots[i].key)
            *find(m, old.slots[i].key, old.slots[i].len, old.slots[i].hash) = old.slots[i];
    free(old.slots);
}

void fleet_strmap_put(struct fleet_strmap *m, const char *key, size_t len, void *value)
{
    if (2 * (m->count + 1) > m->cap)
        grow(m);
    uint64_t h = hash_of(key, len);
    struct fleet_strmap_slot *s = find(m, key, len, h);
    if (!s->key) {
        s->key = malloc(len ? len : 1);
        if (!s->key)
            out_of_memory();
        memcpy(s->key, key, len);
        s->len = len;
        s->hash = h;
        m->count++;
    }
    s->value = value;
}

void fleet_strmap_free(struct fleet_strmap *m)
{
    for (size_t i = 0; i < m->cap; i++)
        free(m->slots[i].key);
    free(m->slots);
    m->slots = NULL;
    m->cap = m->count = 0;
}
