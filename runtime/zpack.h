/* Response bodies kept compressed in the cache: raw deflate at a fast
 * level (libdeflate, both ways) for the bodies that came plain (a provider
 * or proxy that does not gzip sends JSON about eight times larger than it
 * needs to be stored). */
#ifndef FLEET_ZPACK_H
#define FLEET_ZPACK_H

#include <stdbool.h>
#include <stddef.h>

/* Compresses in[0..len) into a new buffer (*out, *out_len; free with
 * free). Returns false, with nothing allocated, when the body is better
 * kept as it is: already gzip-compressed, too small to gain, or not
 * shrinking by at least an eighth (or out of memory). */
bool fleet_zpack(const void *in, size_t len, unsigned char **out, size_t *out_len);

/* Decompresses in[0..len) into out[0..plain_len), which must be exactly
 * what fleet_zpack was given. Returns false on any mismatch. */
bool fleet_zunpack(const void *in, size_t len, void *out, size_t plain_len);

#endif
