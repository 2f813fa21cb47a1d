/* Compressed response bodies. gitfleet asks for gzip and decodes it itself
 * rather than letting libcurl do it, so the cache can keep the compressed
 * bytes (JSON shrinks about eightfold: less to write, more that fits). */
#ifndef FLEET_GUNZIP_H
#define FLEET_GUNZIP_H

#include <stdbool.h>
#include <stddef.h>

#include "http.h"

/* True if a Content-Encoding value is one fleet_gunzip decodes. */
bool fleet_gunzip_handles(const char *encoding, size_t len);

/* Decodes a gzip body (of one member or several, one after the other) or
 * a zlib one into out, at most max bytes of it.
 * Returns 0, or -1 with *err set: "truncated", "corrupt", "too large",
 * "out of memory". */
int fleet_gunzip(const char *in, size_t len, long long max, struct fleet_bytes *out, const char **err);

#endif
