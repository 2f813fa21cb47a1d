/* Decoding gzip bodies with zlib (see gunzip.h). */
#include "gunzip.h"

#include <stdlib.h>
#include <strings.h>

#include <zlib.h>

#include "transport.h"

bool fleet_gunzip_handles(const char *encoding, size_t len)
{
    return (len == 4 && strncasecmp(encoding, "gzip", 4) == 0) ||
           (len == 6 && strncasecmp(encoding, "x-gzip", 6) == 0) ||
           (len == 7 && strncasecmp(encoding, "deflate", 7) == 0);
}

int fleet_gunzip(const char *in, size_t len, long long max, struct fleet_bytes *out, const char **err)
{
    z_stream z = {0};
    /* 15 + 32: a gzip or a zlib header, whichever the body has. */
    if (inflateInit2(&z, 15 + 32) != Z_OK) {
        *err = "out of memory";
        return -1;
    }
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)len;
    out->len = 0;
    /* JSON compresses about eightfold: start there, grow as needed. */
    size_t guess = len * 8 + 4096;
    int rc = Z_OK;
    while (rc != Z_STREAM_END) {
        if (out->cap - out->len < 4096) {
            size_t want = out->cap ? out->cap * 2 : guess;
            if ((long long)want > max + 1)
                want = (size_t)max + 1;
            if (want <= out->len + 1) {
                *err = "too large";
                inflateEnd(&z);
                return -1;
            }
            char *grown = realloc(out->data, want);
            if (!grown) {
                *err = "out of memory";
                inflateEnd(&z);
                return -1;
            }
            out->data = grown;
            out->cap = want;
        }
        z.next_out = (Bytef *)out->data + out->len;
        z.avail_out = (uInt)(out->cap - out->len - 1);
        rc = inflate(&z, Z_NO_FLUSH);
        out->len = out->cap - 1 - z.avail_out;
        if ((long long)out->len > max) {
            *err = "too large";
            inflateEnd(&z);
            return -1;
        }
        if (rc == Z_BUF_ERROR && z.avail_in == 0) {
            *err = "truncated";
            inflateEnd(&z);
            return -1;
        }
        if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) {
            *err = rc == Z_MEM_ERROR ? "out of memory" : "corrupt";
            inflateEnd(&z);
            return -1;
        }
    }
    inflateEnd(&z);
    out->data[out->len] = 0;
    return 0;
}
