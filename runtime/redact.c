/* Redaction of registered secrets in one pass over the text.
 *
 * Every response body is redacted before anything reads it, so the cost
 * per byte must not grow with the number of secrets: a pool of 10,000
 * tokens (20,000 secrets with their Basic forms) searched one secret at a
 * time would scan each page 20,000 times.
 *
 * How: the text is read 8 bytes at a time at every STEP-th position (a
 * probe). A secret of L >= STEP + 7 bytes that occurs at i holds exactly
 * one probe j with j - i among its last STEP offsets that can start 8
 * bytes (L - STEP - 7 ... L - 8): the last probe that ends inside it. So
 * each such secret enters an index under those STEP 8-byte keys, with
 * their offsets; a probe whose key is in the index is checked against the
 * whole secrets it was taken from. Keys come from the secret's tail, not
 * its head: the Basic forms of one user's tokens share their first bytes
 * (base64 of "user:"), their tails are the tokens'. Shorter secrets (4 to
 * 14 bytes: a password, perhaps) are searched one by one with memmem, and
 * so is every secret when there are only a few.
 *
 * Occurrences are found in the text as it came and starred at the end, so
 * one secret overlapping another is covered whole. */
#include "redact.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STEP 8
#define KEY_BYTES 8
#define MIN_INDEXED (STEP + KEY_BYTES - 1)
#define MIN_SECRET 4
/* Up to this many secrets, a memmem pass each is faster than the probes
 * (for one token and its Basic form, 139 against 200 us per MiB; for six
 * secrets, 343 against 195: spec/support/redact_probe.c many N). */
#define ONE_BY_ONE 3

struct secret {
    char *bytes;
    size_t len;
};

/* The index: one slot per distinct 8-byte key, holding the list of the
 * (secret, offset) places it was taken from. A key many secrets share
 * (tokens of one made-up pattern) is then one slot, and a probe of text
 * that matches no key stops at an empty slot however many share it. */
struct slot {
    uint64_t key;
    uint32_t first; /* into places; NONE for a free slot */
};
struct place {
    uint32_t secret, offset, next; /* next: into places, or NONE */
};
#define NONE UINT32_MAX

static struct secret *secrets;
static size_t nsecrets, secrets_cap;
static struct slot *slots; /* open addressing, linear probing */
static size_t slots_cap, slots_used; /* cap: 0 or a power of two */
static int slot_bits;
static struct place *places;
static size_t nplaces, places_cap;
/* A filter in front of the slots, one bit per 8 bits of slots (so 16
 * bits or more per key): a probe whose bit is clear touches nothing
 * else. With 10,000 tokens the slots are megabytes, where a probe of
 * every 8 bytes of text would wait on memory; the filter stays in cache. */
static uint8_t *filter;
static uint32_t *short_ones; /* secrets below MIN_INDEXED, for memmem */
static size_t nshort, short_cap;

static void out_of_memory(void)
{
    /* Refuse to run rather than risk text that is not redacted. */
    fputs("gitfleet: error: out of memory\n", stderr);
    exit(70);
}

static void *grow(void *p, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return p;
    size_t n = *cap ? 2 * *cap : 16;
    while (n < need)
        n *= 2;
    void *q = realloc(p, n * size);
    if (!q)
        out_of_memory();
    *cap = n;
    return q;
}

static uint64_t load_key(const char *p)
{
    uint64_t k;
    memcpy(&k, p, sizeof k);
    return k;
}

static uint64_t mix(uint64_t key)
{
    return key * 0x9E3779B97F4A7C15ull;
}

static size_t slot_of(uint64_t key)
{
    return (size_t)(mix(key) >> (64 - slot_bits));
}

/* The filter has 8 * slots_cap bits, indexed by 3 bits more of mix. */
static void filter_add(uint64_t key)
{
    size_t bit = (size_t)(mix(key) >> (64 - slot_bits - 3));
    filter[bit >> 3] |= (uint8_t)(1u << (bit & 7));
}

/* The slot holding key, or the free slot where it would go. */
static struct slot *find_slot(uint64_t key)
{
    size_t mask = slots_cap - 1, s = slot_of(key);
    while (slots[s].first != NONE && slots[s].key != key)
        s = (s + 1) & mask;
    return &slots[s];
}

/* Keeps the slots at most half full, so a probe of text that holds no
 * secret usually meets a free slot at once. */
static void reserve_slots(size_t more)
{
    if (2 * (slots_used + more) <= slots_cap)
        return;
    size_t cap = slots_cap ? slots_cap : 64;
    while (2 * (slots_used + more) > cap)
        cap *= 2;
    struct slot *old = slots;
    size_t old_cap = slots_cap;
    slots = malloc(cap * sizeof *slots);
    free(filter);
    filter = calloc(cap, 1);
    if (!slots || !filter)
        out_of_memory();
    for (size_t i = 0; i < cap; i++)
        slots[i].first = NONE;
    slots_cap = cap;
    slot_bits = __builtin_ctzll(cap);
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].first != NONE) {
            *find_slot(old[i].key) = old[i];
            filter_add(old[i].key);
        }
    if (old)
        explicit_bzero(old, old_cap * sizeof *old); /* keys are pieces of secrets */
    free(old);
}

static void index_put(uint64_t key, uint32_t secret, uint32_t offset)
{
    places = grow(places, &places_cap, nplaces + 1, sizeof *places);
    struct slot *sl = find_slot(key);
    if (sl->first == NONE) {
        sl->key = key;
        slots_used++;
        filter_add(key);
    }
    places[nplaces] = (struct place){secret, offset, sl->first};
    sl->first = (uint32_t)nplaces++;
}

static bool same(uint32_t i, const char *bytes, size_t len)
{
    return secrets[i].len == len && memcmp(secrets[i].bytes, bytes, len) == 0;
}

static bool registered(const char *secret, size_t len)
{
    if (len < MIN_INDEXED) {
        for (size_t i = 0; i < nshort; i++)
            if (same(short_ones[i], secret, len))
                return true;
        return false;
    }
    if (!slots_cap)
        return false;
    uint32_t offset = (uint32_t)(len - KEY_BYTES);
    for (uint32_t p = find_slot(load_key(secret + offset))->first; p != NONE; p = places[p].next)
        if (places[p].offset == offset && same(places[p].secret, secret, len))
            return true;
    return false;
}

void fleet_log_add_secret(const char *secret, size_t len)
{
    if (len < MIN_SECRET || len > UINT32_MAX || registered(secret, len))
        return;
    secrets = grow(secrets, &secrets_cap, nsecrets + 1, sizeof *secrets);
    char *copy = malloc(len);
    if (!copy)
        out_of_memory();
    memcpy(copy, secret, len);
    uint32_t id = (uint32_t)nsecrets++;
    secrets[id] = (struct secret){copy, len};
    if (len < MIN_INDEXED) {
        short_ones = grow(short_ones, &short_cap, nshort + 1, sizeof *short_ones);
        short_ones[nshort++] = id;
        return;
    }
    reserve_slots(STEP);
    for (size_t o = len - MIN_INDEXED; o <= len - KEY_BYTES; o++)
        index_put(load_key(copy + o), id, (uint32_t)o);
}

void fleet_log_forget_secrets(void)
{
    for (size_t i = 0; i < nsecrets; i++) {
        explicit_bzero(secrets[i].bytes, secrets[i].len);
        free(secrets[i].bytes);
    }
    if (slots)
        explicit_bzero(slots, slots_cap * sizeof *slots); /* keys are pieces of secrets */
    free(secrets);
    free(slots);
    free(filter);
    free(places);
    free(short_ones);
    secrets = NULL;
    slots = NULL;
    filter = NULL;
    places = NULL;
    short_ones = NULL;
    nsecrets = secrets_cap = slots_cap = slots_used = nplaces = places_cap = nshort = short_cap = 0;
    slot_bits = 0;
}

/* The occurrences found, as ranges to star; one that touches the last is
 * merged into it, so text made of one secret repeated stays one range. */
struct ranges {
    size_t (*at)[2];
    size_t n, cap, found;
    size_t local[16][2];
};

static void add_range(struct ranges *r, size_t from, size_t to)
{
    r->found++;
    if (r->n && from <= r->at[r->n - 1][1] && to >= r->at[r->n - 1][0]) {
        if (from < r->at[r->n - 1][0])
            r->at[r->n - 1][0] = from;
        if (to > r->at[r->n - 1][1])
            r->at[r->n - 1][1] = to;
        return;
    }
    if (r->n == r->cap) {
        size_t cap = 2 * r->cap;
        void *grown = r->at == r->local ? malloc(cap * sizeof *r->at) : realloc(r->at, cap * sizeof *r->at);
        if (!grown)
            out_of_memory();
        if (r->at == r->local)
            memcpy(grown, r->local, sizeof r->local);
        r->at = grown;
        r->cap = cap;
    }
    r->at[r->n][0] = from;
    r->at[r->n][1] = to;
    r->n++;
}

static void find_indexed(const char *buf, size_t len, struct ranges *r)
{
    if (!slots_used || len < MIN_INDEXED)
        return;
    /* Kept in locals: the calls on a hit would make the compiler load
     * the globals again on every probe. */
    const uint8_t *bits = filter;
    const int filter_shift = 64 - slot_bits - 3;
    for (size_t j = 0; j + KEY_BYTES <= len; j += STEP) {
        uint64_t key = load_key(buf + j);
        size_t bit = (size_t)(mix(key) >> filter_shift);
        if (!(bits[bit >> 3] & (1u << (bit & 7))))
            continue;
        for (uint32_t p = find_slot(key)->first; p != NONE; p = places[p].next) {
            const struct place *pl = &places[p];
            if (pl->offset > j)
                continue;
            size_t at = j - pl->offset, n = secrets[pl->secret].len;
            if (n <= len - at && memcmp(buf + at, secrets[pl->secret].bytes, n) == 0)
                add_range(r, at, at + n);
        }
    }
}

/* Each secret searched with memmem, which skips ahead by the secret's
 * length: the secrets ids[0..n), or the first n when ids is NULL. */
static void find_each(const char *buf, size_t len, struct ranges *r, const uint32_t *ids, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct secret *s = &secrets[ids ? ids[i] : i];
        const char *p = buf, *end = buf + len, *hit;
        while ((size_t)(end - p) >= s->len && (hit = memmem(p, (size_t)(end - p), s->bytes, s->len))) {
            add_range(r, (size_t)(hit - buf), (size_t)(hit - buf) + s->len);
            p = hit + 1; /* overlapping occurrences too: "abab" twice in "ababab" */
        }
    }
}

size_t fleet_redact(char *buf, size_t len)
{
    if (!nsecrets || !buf)
        return 0;
    struct ranges r = {.cap = 16};
    r.at = r.local;
    if (nsecrets <= ONE_BY_ONE) {
        find_each(buf, len, &r, NULL, nsecrets);
    } else {
        find_indexed(buf, len, &r);
        find_each(buf, len, &r, short_ones, nshort);
    }
    for (size_t i = 0; i < r.n; i++)
        memset(buf + r.at[i][0], '*', r.at[i][1] - r.at[i][0]);
    if (r.at != r.local)
        free(r.at);
    return r.found;
}
