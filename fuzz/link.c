/* fleet_parse_link on arbitrary bytes (a server's Link header).
 *
 * Checks: every reported rel and url lies inside the input; a rel is
 * non-empty and holds no space or tab (relation types are split on them);
 * a url is framed by '<' before it and '>' after it and holds no '>'; the
 * count returned is the number of callbacks. Then the links are written
 * back as a canonical header, which must parse to exactly the same list. */
#include <stdint.h>

#include "fuzz_check.h"
#include "headers.h"

struct link {
    const char *rel, *url;
    size_t rellen, urllen;
};

struct links {
    const char *buf;
    size_t len;
    struct link *items;
    size_t n, cap;
};

static bool inside(const struct links *ls, const char *p, size_t n)
{
    return p >= ls->buf && p <= ls->buf + ls->len && n <= (size_t)(ls->buf + ls->len - p);
}

static void on_link(const char *rel, size_t rellen, const char *url, size_t urllen, void *ud)
{
    struct links *ls = ud;
    FUZZ_CHECK(inside(ls, rel, rellen), "rel outside the input (offset %td, length %zu of %zu)", rel - ls->buf,
               rellen, ls->len);
    FUZZ_CHECK(inside(ls, url, urllen), "url outside the input (offset %td, length %zu of %zu)", url - ls->buf,
               urllen, ls->len);
    FUZZ_CHECK(rellen > 0, "an empty rel was reported");
    FUZZ_CHECK(!memchr(rel, ' ', rellen) && !memchr(rel, '\t', rellen), "a rel holds a space or a tab");
    FUZZ_CHECK(url > ls->buf && url[-1] == '<', "a url not preceded by '<'");
    FUZZ_CHECK(url + urllen < ls->buf + ls->len && url[urllen] == '>', "a url not followed by '>'");
    FUZZ_CHECK(!memchr(url, '>', urllen), "a url holds '>'");
    if (ls->n == ls->cap) {
        ls->cap = ls->cap ? 2 * ls->cap : 8;
        ls->items = realloc(ls->items, ls->cap * sizeof *ls->items);
        if (!ls->items)
            abort();
    }
    ls->items[ls->n++] = (struct link){rel, url, rellen, urllen};
}

/* <url>; rel="type", ... — quoted unless the type holds a quote, which only
 * an unquoted value can (and then it holds no ',', ';' or space). */
static void canonical(const struct links *ls, struct fz_vec *out)
{
    for (size_t i = 0; i < ls->n; i++) {
        const struct link *l = &ls->items[i];
        if (i)
            fz_add(out, ", ", 2);
        fz_addc(out, '<');
        fz_add(out, l->url, l->urllen);
        fz_add(out, ">; rel=", 7);
        bool quote = !memchr(l->rel, '"', l->rellen);
        if (quote)
            fz_addc(out, '"');
        fz_add(out, l->rel, l->rellen);
        if (quote)
            fz_addc(out, '"');
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct links first = {.buf = (const char *)data, .len = size};
    int count = fleet_parse_link(first.buf, size, on_link, &first);
    FUZZ_CHECK(count >= 0 && (size_t)count == first.n, "returned %d for %zu links reported", count, first.n);

    struct fz_vec text = {0};
    canonical(&first, &text);
    /* The canonical text in a buffer of its own size, so ASan sees any
     * read past it. */
    char *copy = malloc(text.len ? text.len : 1);
    if (!copy)
        abort();
    if (text.len)
        memcpy(copy, text.p, text.len);
    struct links again = {.buf = copy, .len = text.len};
    count = fleet_parse_link(copy, text.len, on_link, &again);
    FUZZ_CHECK((size_t)count == first.n && again.n == first.n,
               "the canonical header gave %zu links instead of %zu", again.n, first.n);
    for (size_t i = 0; i < first.n; i++) {
        const struct link *a = &first.items[i], *b = &again.items[i];
        FUZZ_CHECK(a->rellen == b->rellen && memcmp(a->rel, b->rel, a->rellen) == 0,
                   "link %zu: rel changed in the canonical header", i);
        FUZZ_CHECK(a->urllen == b->urllen && memcmp(a->url, b->url, a->urllen) == 0,
                   "link %zu: url changed in the canonical header", i);
    }
    free(copy);
    fz_free(&text);
    free(first.items);
    free(again.items);
    return 0;
}
