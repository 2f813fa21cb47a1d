/* Deflate and inflate for the cache's bodies (see zpack.h). */
#include "zpack.h"

#include <stdint.h>
#include <stdlib.h>

#include <zlib.h>

/* Level 1, chosen by measurement on the 542 bodies (206 MB of JSON) of
 * the 200-owner job: levels 1-3 cost about the same CPU (1: the least) and
 * give 18.1, 16.9 and 16.4 MB; from level 4 on the CPU grows by a third
 * and more (6: 1.8x) for 15.0-13.7 MB. Level 1 keeps the file within 1.3x
 * of the gzip bodies the provider would have sent.
 *
 * Raw deflate (no zlib header and no Adler-32): the cache's own checksum
 * covers the stored bytes, and inflating must give exactly plain_len. */
#ifndef FLEET_ZPACK_LEVEL
#define FLEET_ZPACK_LEVEL 1
#endif

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
    if (deflateInit2(&z, FLEET_ZPACK_LEVEL, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
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
