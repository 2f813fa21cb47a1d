/* A test driver for runtime/gunzip.c and runtime/zpack.c's inflating,
 * built and run by spec/gunzip_unit_spec.lua. Each case builds its input
 * with zlib (an independent encoder), decodes it, and prints "ok NAME ..."
 * or "FAIL NAME: ..."; the exit code is the number of failures.
 *
 *   gunzip_probe FILE.gz     the cases, FILE.gz being a real page */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "gunzip.h"
#include "zpack.h"

static int failures;

static void bytes_free(struct fleet_bytes *b)
{
    free(b->data);
    *b = (struct fleet_bytes){0};
}

static void check(int ok, const char *name, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf(ok ? "ok %s: " : "FAIL %s: ", name);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    failures += !ok;
}

/* in, compressed by zlib: wrap 16 = gzip, 0 = zlib, -1 = raw deflate. */
static unsigned char *squeeze(const void *in, size_t len, int wrap, size_t *out_len)
{
    z_stream z = {0};
    if (deflateInit2(&z, 6, Z_DEFLATED, wrap < 0 ? -15 : 15 + wrap, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        abort();
    size_t cap = deflateBound(&z, (uLong)len) + 64;
    unsigned char *buf = malloc(cap);
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)len;
    z.next_out = buf;
    z.avail_out = (uInt)cap;
    if (!buf || deflate(&z, Z_FINISH) != Z_STREAM_END)
        abort();
    *out_len = cap - z.avail_out;
    deflateEnd(&z);
    return buf;
}

/* Decodes in with fleet_gunzip; returns its result, the reason in *why. */
static int decode(const void *in, size_t len, long long max, struct fleet_bytes *out, const char **why)
{
    *why = "";
    bytes_free(out);
    return fleet_gunzip(in, len, max, out, why);
}

static int same(const struct fleet_bytes *out, const void *want, size_t len)
{
    return out->len == len && memcmp(out->data, want, len) == 0 && out->data[len] == 0;
}

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    FILE *f = fopen(argv[1], "rb");
    if (!f)
        return 2;
    static unsigned char page_gz[1 << 22];
    size_t page_gz_len = fread(page_gz, 1, sizeof page_gz, f);
    fclose(f);
    const long long MAX = 64 << 20;
    struct fleet_bytes out = {0}, page = {0};
    const char *why;

    /* A real page (gzip as a server sent it) decodes; zlib agrees. */
    int rc = decode(page_gz, page_gz_len, MAX, &out, &why);
    check(rc == 0 && out.len > 0 && out.data[0] == '[', "page", "%zu gzip bytes -> %zu (%s)", page_gz_len,
          out.len, why);
    /* A page of 100 repositories is some 400 KB: the page, 100 times over. */
    page.cap = out.len * 100 + 1;
    page.data = malloc(page.cap);
    for (int i = 0; i < 100; i++)
        memcpy(page.data + page.len, out.data, out.len), page.len += out.len;
    page.data[page.len] = 0;
    size_t n;
    unsigned char *gz = squeeze(page.data, page.len, 16, &n);
    rc = decode(gz, n, MAX, &out, &why);
    check(rc == 0 && same(&out, page.data, page.len), "zlib-gzip", "re-encoded by zlib, decodes the same");

    /* The same in a zlib wrapper (Content-Encoding: deflate). */
    size_t nz;
    unsigned char *zl = squeeze(page.data, page.len, 0, &nz);
    rc = decode(zl, nz, MAX, &out, &why);
    check(rc == 0 && same(&out, page.data, page.len), "zlib-wrapper", "%s", why);
    free(zl);

    /* Two members one after the other decode to both (RFC 1952, 2.2). */
    size_t half = page.len / 2, n1, n2;
    unsigned char *m1 = squeeze(page.data, half, 16, &n1), *m2 = squeeze(page.data + half, page.len - half, 16, &n2);
    unsigned char *two = malloc(n1 + n2);
    memcpy(two, m1, n1);
    memcpy(two + n1, m2, n2);
    rc = decode(two, n1 + n2, MAX, &out, &why);
    check(rc == 0 && same(&out, page.data, page.len), "two-members", "%zu bytes (%s)", out.len, why);
    free(two);
    free(m1);
    free(m2);

    /* 10,000 empty members, then the page. */
    size_t ne;
    unsigned char *empty = squeeze("", 0, 16, &ne);
    size_t many_len = ne * 10000 + n;
    unsigned char *many = malloc(many_len);
    for (int i = 0; i < 10000; i++)
        memcpy(many + (size_t)i * ne, empty, ne);
    memcpy(many + ne * 10000, gz, n);
    rc = decode(many, many_len, MAX, &out, &why);
    check(rc == 0 && same(&out, page.data, page.len), "many-members", "%s", why);
    free(many);

    /* An empty member alone is an empty body. */
    rc = decode(empty, ne, MAX, &out, &why);
    check(rc == 0 && out.len == 0 && out.data && out.data[0] == 0, "empty-member", "%s", why);
    free(empty);

    /* Bytes after the member that are not a member are ignored, as gzip(1)
     * does (with a warning there). */
    unsigned char *tail = malloc(n + 5);
    memcpy(tail, gz, n);
    memcpy(tail + n, "junk\n", 5);
    rc = decode(tail, n + 5, MAX, &out, &why);
    check(rc == 0 && same(&out, page.data, page.len), "trailing-bytes", "%s", why);
    free(tail);

    /* A trailer whose length lies, up or down, or whose CRC is wrong: corrupt,
     * never a body of the claimed size. */
    static const struct {
        const char *name;
        int at;      /* bytes from the end */
        long delta;
    } lies[] = {{"isize-high", 4, 1000}, {"isize-low", 4, -1000}, {"isize-huge", 1, 0x7f}, {"crc", 8, 1}};
    for (size_t i = 0; i < sizeof lies / sizeof *lies; i++) {
        unsigned char *bad = malloc(n);
        memcpy(bad, gz, n);
        if (lies[i].at == 4) {
            unsigned long isize = (unsigned long)page.len + (unsigned long)lies[i].delta;
            for (int k = 0; k < 4; k++)
                bad[n - 4 + k] = (unsigned char)(isize >> (8 * k));
        } else {
            bad[n - lies[i].at] ^= (unsigned char)lies[i].delta;
        }
        rc = decode(bad, n, MAX, &out, &why);
        check(rc != 0 && strcmp(why, "corrupt") == 0, lies[i].name, "rc %d, %s", rc, why);
        free(bad);
    }

    /* Cut short anywhere: truncated (or corrupt), never accepted. */
    int cut_ok = 1;
    for (size_t cut = 0; cut < n; cut += cut < 64 ? 1 : 997) {
        rc = decode(gz, cut, MAX, &out, &why);
        if (rc == 0 || (strcmp(why, "truncated") != 0 && strcmp(why, "corrupt") != 0)) {
            cut_ok = 0;
            printf("  cut at %zu: rc %d, %s\n", cut, rc, why);
        }
    }
    check(cut_ok, "truncated", "every cut of the %zu bytes fails", n);

    /* A bomb: 256 MB of zeros in about 250 KB, against a 16 MB cap. */
    size_t zeros = 256u << 20;
    unsigned char *z0 = calloc(zeros, 1);
    size_t nb;
    unsigned char *bomb = squeeze(z0, zeros, 16, &nb);
    free(z0);
    rc = decode(bomb, nb, 16 << 20, &out, &why);
    check(rc != 0 && strcmp(why, "too large") == 0 && out.cap <= (16u << 20) + 2, "bomb",
          "%zu bytes: rc %d, %s, buffer %zu", nb, rc, why, out.cap);
    free(bomb);

    /* At exactly the cap it decodes; one byte over, too large. */
    rc = decode(gz, n, (long long)page.len, &out, &why);
    check(rc == 0 && same(&out, page.data, page.len), "at-cap", "%s", why);
    rc = decode(gz, n, (long long)page.len - 1, &out, &why);
    check(rc != 0 && strcmp(why, "too large") == 0, "over-cap", "%s", why);
    /* At the cap and followed by an empty member, or by the start of a
     * member cut short: the one decodes, the other is truncated. */
    size_t ne2;
    unsigned char *empty2 = squeeze("", 0, 16, &ne2);
    unsigned char *then = malloc(n + ne2);
    memcpy(then, gz, n);
    memcpy(then + n, empty2, ne2);
    rc = decode(then, n + ne2, (long long)page.len, &out, &why);
    check(rc == 0 && same(&out, page.data, page.len), "at-cap-then-empty", "%s", why);
    rc = decode(then, n + 3, (long long)page.len, &out, &why);
    check(rc != 0 && strcmp(why, "truncated") == 0, "at-cap-then-cut", "rc %d, %s", rc, why);
    free(then);
    free(empty2);

    /* Not compressed at all. */
    rc = decode(page.data, page.len, MAX, &out, &why);
    check(rc != 0 && strcmp(why, "corrupt") == 0, "plain", "%s", why);
    free(gz);

    /* The cache's raw deflate: back exactly; a wrong length or extra bytes fail. */
    size_t nr;
    unsigned char *raw = squeeze(page.data, page.len, -1, &nr);
    char *back = malloc(page.len + 1);
    check(fleet_zunpack(raw, nr, back, page.len) && memcmp(back, page.data, page.len) == 0, "zunpack-zlib",
          "raw deflate by zlib reads back");
    check(!fleet_zunpack(raw, nr, back, page.len - 1), "zunpack-short", "a shorter plain_len fails");
    check(!fleet_zunpack(raw, nr - 1, back, page.len), "zunpack-cut", "a cut stream fails");
    free(raw);
    unsigned char *packed = NULL;
    size_t packed_len = 0;
    int packs = fleet_zpack(page.data, page.len, &packed, &packed_len);
    check(packs && fleet_zunpack(packed, packed_len, back, page.len) && memcmp(back, page.data, page.len) == 0,
          "zpack-round-trip", "%zu -> %zu -> back", page.len, packed_len);
    unsigned char *longer = malloc(packed_len + 1);
    memcpy(longer, packed, packed_len);
    longer[packed_len] = 0;
    check(!fleet_zunpack(longer, packed_len + 1, back, page.len), "zunpack-extra", "bytes after the stream fail");
    free(longer);
    free(packed);
    free(back);
    bytes_free(&out);
    bytes_free(&page);
    return failures;
}
