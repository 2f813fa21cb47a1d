/* Deflate and inflate for the cache's bodies (see zpack.h). */
#include "zpack.h"

#include <stdint.h>
#include <stdlib.h>

#include <libdeflate.h>

/* Compression is libdeflate's, level 1, and so is inflating (raw deflate:
 * entries written by zlib before read back the same). Measured on
 * the 542 bodies (206 MB of JSON) of the 200-owner job, a cold-cache run
 * against a provider that sends plain bodies (bench (coldcache), medians
 * of 5, whole process):
 *
 *   zlib level 2, memLevel 5   1.98 s CPU, 1.17x the wall of --no-cache   18.0 MB
 *   libdeflate level 1         1.58 / 1.34 s CPU, 1.12x / 0.86x           19.5 MB
 *
 * The zlib choice was already the best of its levels and memLevels; the
 * write thread's CPU competes with the network's on a small machine, and
 * libdeflate's single-buffer compressor does the same work in less.
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
    size_t cap = len - len / 8; /* worth it only if it saves an eighth */
    unsigned char *buf = malloc(cap);
    if (!buf)
        return false;
    /* A compressor per body: the allocation is small next to the work, and
     * nothing outlives the call (the writer thread may end at any time). */
    struct libdeflate_compressor *c = libdeflate_alloc_compressor(FLEET_ZPACK_LEVEL);
    size_t n = c ? libdeflate_deflate_compress(c, b, len, buf, cap) : 0;
    if (c)
        libdeflate_free_compressor(c);
    if (n == 0) { /* out of room (it does not shrink enough), or no memory */
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
    struct libdeflate_decompressor *d = libdeflate_alloc_decompressor();
    if (!d)
        return false;
    size_t used = 0, got = 0;
    enum libdeflate_result rc = libdeflate_deflate_decompress_ex(d, in, len, out, plain_len, &used, &got);
    libdeflate_free_decompressor(d);
    return rc == LIBDEFLATE_SUCCESS && used == len && got == plain_len;
}
