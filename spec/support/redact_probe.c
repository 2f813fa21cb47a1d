/* Checks runtime/redact.c against the plain definition: every byte of
 * every occurrence of every registered secret, overlapping ones included,
 * becomes '*', and nothing else changes. Built and run by
 * spec/redact_unit_spec.lua.
 *
 *   redact_probe random SEED ROUNDS   secrets and texts made to collide
 *   redact_probe many N               N tokens and their Basic forms over
 *                                     1 MiB of text; prints the time per MiB,
 *                                     and that of one secret at a time
 *   redact_probe forget               nothing is redacted after forgetting
 *
 * Prints "FAIL: ..." and exits 1 on the first difference. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "redact.h"

static uint64_t rng_state;

static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state % n);
}

struct secret {
    char *bytes;
    size_t len;
};

static struct secret *kept;
static size_t nkept;

static void add(const char *bytes, size_t len)
{
    fleet_log_add_secret(bytes, len);
    if (len < 4)
        return;
    kept = realloc(kept, (nkept + 1) * sizeof *kept);
    kept[nkept].bytes = malloc(len);
    memcpy(kept[nkept].bytes, bytes, len);
    kept[nkept].len = len;
    nkept++;
}

/* The plain definition: every occurrence of every secret, found one
 * secret at a time (memmem from each hit's next byte, so overlapping
 * ones too), all starred in the end. */
static size_t reference(const char *text, char *out, size_t len)
{
    size_t found = 0;
    memcpy(out, text, len);
    for (size_t s = 0; s < nkept; s++) {
        /* a secret registered twice is one secret */
        size_t d = 0;
        while (d < s && !(kept[d].len == kept[s].len && memcmp(kept[d].bytes, kept[s].bytes, kept[s].len) == 0))
            d++;
        if (d < s)
            continue;
        const char *p = text, *end = text + len, *hit;
        while ((size_t)(end - p) >= kept[s].len && (hit = memmem(p, (size_t)(end - p), kept[s].bytes, kept[s].len))) {
            memset(out + (hit - text), '*', kept[s].len);
            found++;
            p = hit + 1;
        }
    }
    return found;
}

static int compare(const char *text, size_t len, const char *what)
{
    char *want = malloc(len + 1), *got = malloc(len + 1);
    size_t want_n = reference(text, want, len);
    memcpy(got, text, len);
    size_t got_n = fleet_redact(got, len);
    int bad = 0;
    if (memcmp(want, got, len) != 0) {
        size_t i = 0;
        while (want[i] == got[i])
            i++;
        printf("FAIL: %s: byte %zu of %zu is '%c', expected '%c'\n", what, i, len, got[i], want[i]);
        bad = 1;
    } else if (want_n != got_n) {
        printf("FAIL: %s: %zu occurrences reported, %zu expected\n", what, got_n, want_n);
        bad = 1;
    }
    free(want);
    free(got);
    return bad;
}

static void forget(void)
{
    fleet_log_forget_secrets();
    for (size_t i = 0; i < nkept; i++)
        free(kept[i].bytes);
    free(kept);
    kept = NULL;
    nkept = 0;
}

/* Secrets over a small alphabet, with shared heads, shared tails, one
 * inside another and one made of a repeated piece, so that keys collide
 * and occurrences overlap; texts made of the same alphabet and of pieces
 * of the secrets. */
static int random_rounds(unsigned seed, int rounds)
{
    rng_state = 0x9E3779B97F4A7C15ull ^ seed;
    static const char alphabet[] = "ab0_";
    char buf[4096];
    for (int round = 0; round < rounds; round++) {
        int nsecrets = 1 + (int)rnd(12);
        for (int s = 0; s < nsecrets; s++) {
            size_t len = 1 + rnd(40);
            int shape = (int)rnd(5);
            if (shape == 0 && nkept > 0) { /* a head of another */
                struct secret *o = &kept[rnd((uint32_t)nkept)];
                size_t l = len < o->len ? len : o->len;
                memcpy(buf, o->bytes, l);
                for (size_t i = l; i < len; i++)
                    buf[i] = alphabet[rnd(4)];
            } else if (shape == 1 && nkept > 0) { /* a tail of another, with a new head */
                struct secret *o = &kept[rnd((uint32_t)nkept)];
                size_t l = len < o->len ? len : o->len;
                for (size_t i = 0; i < len - l; i++)
                    buf[i] = alphabet[rnd(4)];
                memcpy(buf + len - l, o->bytes + o->len - l, l);
            } else if (shape == 2) { /* a repeated piece */
                size_t piece = 1 + rnd(3);
                for (size_t i = 0; i < len; i++)
                    buf[i] = i < piece ? alphabet[rnd(4)] : buf[i - piece];
            } else {
                for (size_t i = 0; i < len; i++)
                    buf[i] = alphabet[rnd(4)];
            }
            add(buf, len);
        }
        size_t len = rnd(sizeof buf);
        for (size_t i = 0; i < len;) {
            if (nkept && rnd(3) == 0) {
                struct secret *o = &kept[rnd((uint32_t)nkept)];
                size_t from = rnd(2) ? 0 : rnd((uint32_t)o->len); /* whole, or a tail of it */
                for (size_t k = from; k < o->len && i < len; k++)
                    buf[i++] = o->bytes[k];
            } else {
                buf[i++] = alphabet[rnd(4)];
            }
        }
        char what[64];
        snprintf(what, sizeof what, "seed %u round %d", seed, round);
        if (compare(buf, len, what))
            return 1;
        if (rnd(4) == 0)
            forget();
    }
    forget();
    return 0;
}

static void token(char *out, size_t len)
{
    static const char b62[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    memcpy(out, "ghp_", 4);
    for (size_t i = 4; i < len; i++)
        out[i] = b62[rnd(62)];
}

static void base64(const char *in, size_t n, char *out, size_t *outlen)
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)(unsigned char)in[i] << 16 | (i + 1 < n ? (unsigned)(unsigned char)in[i + 1] << 8 : 0) |
                     (i + 2 < n ? (unsigned char)in[i + 2] : 0);
        out[o++] = b64[v >> 18 & 63];
        out[o++] = b64[v >> 12 & 63];
        out[o++] = i + 1 < n ? b64[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? b64[v & 63] : '=';
    }
    *outlen = o;
}

/* N tokens of 40 bytes and the Basic form of each for one user: JSON-like
 * text with a few of them in it, checked against the plain definition. */
static int many(int n)
{
    rng_state = 42;
    char tok[40], basic[64 + 16], enc[128];
    for (int i = 0; i < n; i++) {
        token(tok, sizeof tok);
        add(tok, sizeof tok);
        memcpy(basic, "x-access-token:", 15);
        memcpy(basic + 15, tok, sizeof tok);
        size_t elen;
        base64(basic, 15 + sizeof tok, enc, &elen);
        add(enc, elen);
    }
    size_t len = 1 << 20;
    char *text = malloc(len);
    static const char filler[] = "{\"id\":12345,\"name\":\"repo-name\",\"full_name\":\"owner/repo-name\","
                                 "\"private\":false,\"html_url\":\"https://github.com/owner/repo-name\"},";
    for (size_t i = 0; i < len; i++)
        text[i] = filler[i % (sizeof filler - 1)];
    for (int k = 0; k < 50; k++) { /* some tokens and Basic forms, anywhere */
        struct secret *s = &kept[rnd((uint32_t)nkept)];
        size_t at = rnd((uint32_t)(len - s->len));
        memcpy(text + at, s->bytes, s->len);
    }
    if (compare(text, len, "many"))
        return 1;
    char *copy = malloc(len);
    struct timespec t0, t1;
    int runs = 20;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int r = 0; r < runs; r++) {
        memcpy(copy, text, len);
        fleet_redact(copy, len);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double us = ((double)(t1.tv_sec - t0.tv_sec) * 1e6 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e3) / runs;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    reference(text, copy, len);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double one_by_one = (double)(t1.tv_sec - t0.tv_sec) * 1e6 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e3;
    printf("%d tokens (%zu secrets): %.0f us per MiB; one secret at a time: %.0f us\n", n, nkept, us, one_by_one);
    free(copy);
    free(text);
    forget();
    return 0;
}

static int forgotten(void)
{
    const char *s = "ghp_ForgetMe0123456789abcdefghijklmnopq";
    add(s, strlen(s));
    add("pass", 4);
    char text[200];
    snprintf(text, sizeof text, "a %s and a pass", s);
    char copy[200];
    strcpy(copy, text);
    if (fleet_redact(copy, strlen(copy)) != 2 || strstr(copy, "ForgetMe") || strstr(copy, "pass")) {
        printf("FAIL: not redacted before forgetting: %s\n", copy);
        return 1;
    }
    forget();
    strcpy(copy, text);
    if (fleet_redact(copy, strlen(copy)) != 0 || strcmp(copy, text) != 0) {
        printf("FAIL: redacted after forgetting: %s\n", copy);
        return 1;
    }
    add(s, strlen(s)); /* and registering again works */
    strcpy(copy, text);
    if (fleet_redact(copy, strlen(copy)) != 1) {
        printf("FAIL: not redacted after registering again: %s\n", copy);
        return 1;
    }
    forget();
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "random") == 0)
        return random_rounds((unsigned)atoi(argv[2]), atoi(argv[3]));
    if (argc == 3 && strcmp(argv[1], "many") == 0)
        return many(atoi(argv[2]));
    if (argc == 2 && strcmp(argv[1], "forget") == 0)
        return forgotten();
    fprintf(stderr, "usage: redact_probe random SEED ROUNDS | many N | forget\n");
    return 2;
}
