/* The record encoders of output.h on arbitrary bytes.
 *
 * - fleet_json_string: the output is one valid JSON string (checked by an
 *   independent strict parser, which also requires valid UTF-8) whose
 *   decoded text is the input with each maximal ill-formed UTF-8 subpart
 *   replaced by U+FFFD (computed independently, in fuzz_check.h).
 * - fleet_csv_field: the output parses as exactly one RFC 4180 field equal
 *   to that same text, and is quoted exactly when output.h says it is.
 * - A row: the input split at 0x1E into fields, joined with ',' and ended
 *   with CRLF, parses back into the same fields; the same fields as a JSON
 *   array are valid JSON, and go through fleet_out to a memfd unchanged.
 * - fleet_utf8_valid_prefix agrees with the independent decoder.
 * - fleet_csv_field(NULL, 0), an empty cell, writes nothing.
 * - The first 8 bytes as a long long and as a double: fleet_json_integer
 *   is "%lld"; fleet_json_float is a JSON number that reads back as the
 *   same double, or null for NaN and infinities (where fleet_number_text
 *   writes nothing).
 * Encoders append after whatever the buffer holds: a few bytes are put
 * there first, and must be left alone. */
#include <math.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz_check.h"
#include "output.h"

#define MAX_FIELDS 64

static int memfd = -1;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    memfd = memfd_create("fuzz-output", MFD_CLOEXEC);
    if (memfd < 0)
        fuzz_fail("memfd_create failed");
    return 0;
}

/* A buffer that already holds prefix bytes of junk. */
static void start(struct fleet_buf *b, size_t prefix)
{
    fleet_buf_reset(b);
    for (size_t i = 0; i < prefix; i++)
        fleet_buf_putc(b, (char)('a' + i % 26));
}

static void check_prefix(const struct fleet_buf *b, size_t prefix, const char *what)
{
    FUZZ_CHECK(!b->failed, "%s: the buffer failed", what);
    FUZZ_CHECK(b->len >= prefix, "%s: the buffer shrank", what);
    for (size_t i = 0; i < prefix; i++)
        FUZZ_CHECK(b->data[i] == (char)('a' + i % 26), "%s: byte %zu before the output changed", what, i);
}

static bool csv_needs_quotes(const unsigned char *s, size_t len)
{
    if (len && (s[0] == ' ' || s[0] == '\t' || s[len - 1] == ' ' || s[len - 1] == '\t'))
        return true;
    for (size_t i = 0; i < len; i++)
        if (s[i] == ',' || s[i] == '"' || s[i] == '\r' || s[i] == '\n')
            return true;
    return false;
}

static void check_json_string(struct fleet_buf *b, const unsigned char *s, size_t len, size_t prefix)
{
    start(b, prefix);
    fleet_json_string(b, (const char *)s, len);
    check_prefix(b, prefix, "fleet_json_string");
    const unsigned char *out = (const unsigned char *)b->data + prefix;
    size_t outlen = b->len - prefix;
    const char *why = NULL;
    FUZZ_CHECK(fz_json_text(out, outlen, &why), "fleet_json_string output is not one JSON string: %s", why);
    FUZZ_CHECK(outlen >= 2 && out[0] == '"', "fleet_json_string output is not a string");
    struct fz_json j = {.p = out, .end = out + outlen};
    struct fz_vec got = {0}, want = {0};
    FUZZ_CHECK(fz_json_string(&j, &got), "fleet_json_string output does not decode");
    fz_utf8_sanitize(s, len, &want);
    FUZZ_CHECK(fz_equals(&got, want.p, want.len),
               "fleet_json_string decodes to %zu bytes other than the %zu expected", got.len, want.len);
    fz_free(&got);
    fz_free(&want);
}

static void check_csv_field(struct fleet_buf *b, const unsigned char *s, size_t len, size_t prefix)
{
    start(b, prefix);
    fleet_csv_field(b, (const char *)s, len);
    check_prefix(b, prefix, "fleet_csv_field");
    const unsigned char *out = (const unsigned char *)b->data + prefix;
    size_t outlen = b->len - prefix, pos = 0;
    struct fz_vec fields[2] = {{0}}, want = {0};
    const char *why = NULL;
    int n = fz_csv_record(out, outlen, &pos, fields, 2, &why);
    FUZZ_CHECK(n == 1 && pos == outlen, "fleet_csv_field output is not one RFC 4180 field: %s",
               n < 0 ? why : "more than one field");
    fz_utf8_sanitize(s, len, &want);
    FUZZ_CHECK(fz_equals(&fields[0], want.p, want.len),
               "fleet_csv_field reads back as %zu bytes other than the %zu expected", fields[0].len, want.len);
    bool quoted = outlen > 0 && out[0] == '"';
    FUZZ_CHECK(quoted == csv_needs_quotes(s, len), "fleet_csv_field %s a field that %s quotes",
               quoted ? "quoted" : "did not quote", quoted ? "needs no" : "needs");
    fz_free(&fields[0]);
    fz_free(&fields[1]);
    fz_free(&want);
}

static void check_row(struct fleet_buf *b, const unsigned char *s, size_t len)
{
    const unsigned char *field[MAX_FIELDS];
    size_t flen[MAX_FIELDS];
    int n = 0;
    for (size_t i = 0, from = 0; i <= len && n < MAX_FIELDS; i++) {
        if (i == len || s[i] == 0x1E) {
            field[n] = s + from;
            flen[n++] = i - from;
            from = i + 1;
        }
    }

    /* CSV */
    start(b, 0);
    for (int i = 0; i < n; i++) {
        if (i)
            fleet_buf_putc(b, ',');
        fleet_csv_field(b, (const char *)field[i], flen[i]);
    }
    fleet_buf_literal(b, "\r\n");
    FUZZ_CHECK(!b->failed, "the CSV row failed");
    struct fz_vec parsed[MAX_FIELDS + 1] = {{0}};
    size_t pos = 0;
    const char *why = NULL;
    int got = fz_csv_record((const unsigned char *)b->data, b->len, &pos, parsed, MAX_FIELDS + 1, &why);
    FUZZ_CHECK(got == n && pos == b->len, "a CSV row of %d fields read back as %d (%s)", n, got,
               got < 0 ? why : "wrong count");
    for (int i = 0; i < n; i++) {
        struct fz_vec want = {0};
        fz_utf8_sanitize(field[i], flen[i], &want);
        FUZZ_CHECK(fz_equals(&parsed[i], want.p, want.len),
                   "CSV field %d of the row reads back changed", i);
        fz_free(&want);
    }
    for (int i = 0; i <= MAX_FIELDS; i++)
        fz_free(&parsed[i]);

    /* JSON, through the record writer into a memfd */
    struct fleet_out o;
    if (ftruncate(memfd, 0) != 0 || lseek(memfd, 0, SEEK_SET) != 0)
        fuzz_fail("cannot reset the memfd");
    fleet_out_init(&o, memfd, false);
    fleet_out_begin(&o);
    fleet_buf_putc(&o.buf, '[');
    for (int i = 0; i < n; i++) {
        if (i)
            fleet_buf_putc(&o.buf, ',');
        fleet_json_string(&o.buf, (const char *)field[i], flen[i]);
    }
    fleet_buf_literal(&o.buf, "]\n");
    FUZZ_CHECK(fleet_out_commit(&o) == 0, "fleet_out_commit failed");
    /* An abandoned record must never reach the file. */
    fleet_out_begin(&o);
    fleet_buf_literal(&o.buf, "{\"abandoned\":");
    fleet_out_abort(&o);
    size_t committed = o.committed;
    struct fz_vec copy = {0};
    fz_add(&copy, o.buf.data, committed);
    FUZZ_CHECK(fleet_out_close(&o) == 0, "fleet_out_close failed");
    FUZZ_CHECK(o.written == committed, "wrote %llu bytes of %zu", o.written, committed);
    struct fz_vec back = {0};
    fz_add(&back, "", 0);
    char chunk[4096];
    ssize_t k;
    off_t off = 0;
    while ((k = pread(memfd, chunk, sizeof chunk, off)) > 0) {
        fz_add(&back, chunk, (size_t)k);
        off += k;
    }
    FUZZ_CHECK(fz_equals(&back, copy.p, copy.len), "the memfd holds other bytes");
    FUZZ_CHECK(back.len >= 1 && back.p[back.len - 1] == '\n', "the record lost its newline");
    FUZZ_CHECK(fz_json_text(back.p, back.len - 1, &why), "the JSON array of the row is invalid: %s", why);
    fz_free(&copy);
    fz_free(&back);
}

static void check_numbers(struct fleet_buf *b, const unsigned char *s, size_t len)
{
    if (len < 8)
        return;
    long long i;
    double d;
    memcpy(&i, s, 8);
    memcpy(&d, s, 8);
    char want[64];

    start(b, 3);
    fleet_json_integer(b, i);
    check_prefix(b, 3, "fleet_json_integer");
    int n = snprintf(want, sizeof want, "%lld", i);
    FUZZ_CHECK(b->len - 3 == (size_t)n && memcmp(b->data + 3, want, (size_t)n) == 0,
               "fleet_json_integer(%lld) wrote %.*s", i, (int)(b->len - 3), b->data + 3);

    start(b, 5);
    fleet_json_float(b, d);
    check_prefix(b, 5, "fleet_json_float");
    size_t outlen = b->len - 5;
    const unsigned char *out = (const unsigned char *)b->data + 5;
    if (!isfinite(d)) {
        FUZZ_CHECK(outlen == 4 && memcmp(out, "null", 4) == 0, "fleet_json_float(%g) is not null", d);
        start(b, 1);
        FUZZ_CHECK(!fleet_number_text(b, d) && b->len == 1, "fleet_number_text wrote a non-finite number");
        return;
    }
    const char *why = NULL;
    FUZZ_CHECK(fz_json_text(out, outlen, &why) && out[0] != '"' && out[0] != 'n' && out[0] != 't' &&
                   out[0] != 'f' && out[0] != '[' && out[0] != '{',
               "fleet_json_float(%.17g) is not a JSON number: %.*s", d, (int)outlen, (const char *)out);
    FUZZ_CHECK(outlen < sizeof want, "fleet_json_float is too long");
    memcpy(want, out, outlen);
    want[outlen] = 0;
    double back = strtod(want, NULL);
    FUZZ_CHECK(back == d && signbit(back) == signbit(d), "fleet_json_float(%.17g) reads back as %.17g", d, back);
    start(b, 0);
    FUZZ_CHECK(fleet_number_text(b, d) && b->len == outlen && memcmp(b->data, want, outlen) == 0,
               "fleet_number_text differs from fleet_json_float");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct fleet_buf b;
    const unsigned char *s = data;
    size_t prefix = size ? s[0] % 11 : 0;

    /* An empty field may come as (NULL, 0): loutput.c flattens an empty
     * list into a scratch buffer that was never allocated. */
    start(&b, prefix);
    fleet_csv_field(&b, NULL, 0);
    check_prefix(&b, prefix, "fleet_csv_field(NULL, 0)");
    FUZZ_CHECK(b.len == prefix, "fleet_csv_field(NULL, 0) wrote %zu bytes", b.len - prefix);

    check_json_string(&b, s, size, prefix);
    check_json_string(&b, s, size, 0);
    check_csv_field(&b, s, size, prefix);
    check_row(&b, s, size);
    check_numbers(&b, s, size);
    size_t got = fleet_utf8_valid_prefix((const char *)s, size), want = fz_utf8_prefix(s, size);
    FUZZ_CHECK(got == want, "fleet_utf8_valid_prefix says %zu, the decoder %zu", got, want);

    /* Keep a big input's buffer from staying big. */
    if (b.cap > (1u << 20))
        fleet_buf_free(&b);
    return 0;
}
