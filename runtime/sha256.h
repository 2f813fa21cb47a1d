/* SHA-256 (FIPS 180-4): one-shot and incremental. */
#ifndef FLEET_SHA256_H
#define FLEET_SHA256_H

#include <stddef.h>
#include <stdint.h>

struct fleet_sha256 {
    uint32_t h[8];
    uint64_t bytes;          /* message length so far */
    unsigned char buf[64];   /* a partial block */
    size_t buflen;
};

void fleet_sha256_init(struct fleet_sha256 *s);
void fleet_sha256_update(struct fleet_sha256 *s, const void *data, size_t len);
/* Writes the digest and wipes the state. */
void fleet_sha256_final(struct fleet_sha256 *s, unsigned char out[32]);

void fleet_sha256(const void *data, size_t len, unsigned char out[32]);

#endif
