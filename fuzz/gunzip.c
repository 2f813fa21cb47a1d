/* fleet_gunzip (runtime/gunzip.c) on arbitrary bytes: a server's gzip
 * body. Checks: it never reads or writes out of bounds (ASan), reports a
 * reason on failure, keeps within the size cap, and — the input gzipped by
 * zlib, whole or as two gzip members — gives the input back exactly. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "fuzz_check.h"
#include "gunzip.h"
#include "transport.h"

enum { CAP = 1 << 20 };

static void bytes_free(struct fleet_bytes *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* data gzipped by zlib, in a new buffer. */
static unsigned char *gzip(const uint8_t *data, size_t size, size_t *gzlen)
{
    z_stream z = {0};
    if (deflateInit2(&z, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        abort();
    uLong bound = deflateBound(&z, (uLong)size) + 32;
    unsigned char *gz = malloc(bound);
    if (!gz)
        abort();
    z.next_in = (Bytef *)data;
    z.avail_in = (uInt)size;
    z.next_out = gz;
    z.avail_out = (uInt)bound;
    FUZZ_CHECK(deflate(&z, Z_FINISH) == Z_STREAM_END, "zlib could not compress the input");
    *gzlen = bound - z.avail_out;
    deflateEnd(&z);
    return gz;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fleet_bytes out = {0};
    const char *why = NULL;
    if (fleet_gunzip((const char *)data, size, CAP, &out, &why) == 0) {
        FUZZ_CHECK(out.len <= CAP, "%zu bytes decoded past the cap", out.len);
        FUZZ_CHECK(out.data[out.len] == 0, "the decoded body is not NUL-terminated");
    } else {
        FUZZ_CHECK(why && *why, "a failure without a reason");
    }
    bytes_free(&out);

    /* Round trip: gzip the input, decode it back. */
    size_t gzlen;
    unsigned char *gz = gzip(data, size, &gzlen);
    int rc = fleet_gunzip((const char *)gz, gzlen, CAP, &out, &why);
    if (size <= CAP) {
        FUZZ_CHECK(rc == 0, "a valid gzip body failed: %s", why);
        FUZZ_CHECK(out.len == size && memcmp(out.data, data, size) == 0, "the round trip changed the bytes");
    }
    bytes_free(&out);
    /* The same as two members, split in the middle: both come back. */
    size_t len1, len2;
    unsigned char *m1 = gzip(data, size / 2, &len1), *m2 = gzip(data + size / 2, size - size / 2, &len2);
    unsigned char *two = malloc(len1 + len2);
    if (!two)
        abort();
    memcpy(two, m1, len1);
    memcpy(two + len1, m2, len2);
    rc = fleet_gunzip((const char *)two, len1 + len2, CAP, &out, &why);
    if (size <= CAP) {
        FUZZ_CHECK(rc == 0, "a valid body of two members failed: %s", why);
        FUZZ_CHECK(out.len == size && memcmp(out.data, data, size) == 0, "two members did not give the input back");
    }
    bytes_free(&out);
    free(m1);
    free(m2);
    free(two);
    /* Cut short, it must fail as truncated, not succeed. */
    if (gzlen > 10) {
        rc = fleet_gunzip((const char *)gz, gzlen - 9, CAP, &out, &why);
        FUZZ_CHECK(rc != 0, "a truncated gzip body was accepted");
        bytes_free(&out);
    }
    free(gz);
    return 0;
}
