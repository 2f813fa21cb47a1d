/* Deflate and inflate for the cache's bodies (see zpack.h). */
#include "zpack.h"

#include <stdint.h>
#include <stdlib.h>

#include <zlib.h>

/* Level 2 with memLevel 5, chosen by measurement on the 542 bodies (206 MB
 * of JSON) of the 200-owner job, CPU per pass over all of them, medians of
 * five on a loaded two-CPU machine (relative figures are what count):
 *
 *   level 1, memLevel 8 (zlib's default)  1.20 s  18.1 MB
 *   level 1, memLevel 5                   0.80 s  18.6 MB
 *   level 2, memLevel 5                   0.79 s  17.1 MB
 *   level 3, memLevel 5                   0.92 s  16.6 MB
 *   level 4 / 6, memLevel 8               1.3 / 1.8x level 1's CPU, 15.0 / 13.7 MB
 *
 * A smaller hash table (memLevel 5) stays in the CPU's cache and costs a
 * third less for almost the same size; smaller windows than 32 KiB lose
 * most of the gain (these pages repeat at longer distances). The gzip
 * bodies of the same job take 14.6 MB.
 *
 * Raw deflate (no zlib header and no Adler-32): the cache's own checksum
 * covers the stored bytes, and inflating must give exactly plain_len. */
#ifndef FLEET_ZPACK_LEVEL
#define FLEET_ZPACK_LEVEL 2
#endif
#define ZPACK_MEM_LEVEL 5

/* Below this, the row overhead dwarfs what compression saves. */
#define ZPACK_MIN 256

bool fleet_zpack(const void *in, size_t len, unsigned char **out, size_t *out_len)
{
    const unsigned char *b = in;
    *out = NULL;
    *out_len = 0;
    if (len < ZPACK_MIN || len > UINT32_MAX || (b[0] == 0x1f && b[1] == 0x8b))
        return false; /* small, huge, or gzip already: stored as it came */
    uLongf cap = compressBound((uLong)len);
    size_t want = len - len / 8; /* worth it only if it saves an eighth */
    if (cap > want)
        cap = want;
    unsigned char *buf = malloc(cap);
    if (!buf)
        return false;
    z_stream z = {0};
    if (deflateInit2(&z, FLEET_ZPACK_LEVEL, Z_DEFLATED, -15, ZPACK_MEM_LEVEL, Z_DEFAULT_STRATEGY) != Z_OK) {
        free(buf);
        return false;
    }
    z.next_in = (Bytef *)(uintptr_t)b;
    z.avail_in = (uInt)len;
    z.next_out = buf;
    z.avail_out = (uInt)cap;
    int rc = deflate(&z, Z_FINISH);
    size_t n = cap - z.avail_out;
    deflateEnd(&z);
    if (rc != Z_STREAM_END) { /* out of room: it does not shrink enough */
        free(buf);
        return false;
    }
    *out = buf;
    *out_len = n;
    return true;
}

bool fleet_zunpack(const void *in, size_t len, void *out, size_t plain_len)
{
    if (len > UINT32_MAX || plain_len > UINT32_MAX)
        return false;
    z_stream z = {0};
    if (inflateInit2(&z, -15) != Z_OK)
        return false;
    z.next_in = (Bytef *)(uintptr_t)in;
    z.avail_in = (uInt)len;
    z.next_out = out;
    z.avail_out = (uInt)plain_len;
    int rc = inflate(&z, Z_FINISH);
    bool ok = rc == Z_STREAM_END && z.avail_out == 0 && z.avail_in == 0;
    inflateEnd(&z);
    return ok;
}
