/* A test driver for runtime/cache.c, built and run by
 * spec/cache_unit_spec.lua (the cache cannot be reached in-process from
 * busted). Each subcommand is one scenario over a cache in DIR; it checks
 * what it can itself and prints "ok ..." lines, or "FAIL: ..." and exits 1.
 * Warnings go to stderr as the runtime writes them, for the spec to count.
 *
 *   cache_probe basic DIR SECRET        hit, miss, replace, persistence, modes
 *   cache_probe evict DIR               LRU order and the size cap
 *   cache_probe corrupt DIR MODE        MODE: middle | header | body
 *   cache_probe readonly DIR            read-only file: lookups, one warning
 *   cache_probe readonly-dir DIR        read-only folder: no crash
 *   cache_probe unreadable DIR          unreadable file: set aside
 *   cache_probe diskfull DIR            writes fail mid-run: one warning
 *   cache_probe twoproc DIR N           two processes share one file
 *   cache_probe locked DIR              writes while another connection holds the lock
 *   cache_probe salt DIR                salts differ between files
 *   cache_probe foreign DIR             another program's database is left alone
 *   cache_probe clear DIR               stats and clear
 *   cache_probe bench DIR N SIZE        µs per lookup / store
 *   cache_probe sha256 -                the NIST vectors' digests, one a line
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "cache.h"
#include "log.h"
#include "sha256.h"

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("FAIL: ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
    exit(1);
}

#define CHECK(cond, ...)                                                                                       \
    do {                                                                                                       \
        if (!(cond))                                                                                           \
            fail(__VA_ARGS__);                                                                                 \
    } while (0)

static char *path_in(const char *dir, const char *name)
{
    char *p = NULL;
    if (asprintf(&p, "%s/%s", dir, name) < 0)
        fail("out of memory");
    return p;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The body stored for key i of size n: recognisable, not repetitive. */
static char *make_body(const char *tag, int i, size_t n)
{
    char *b = malloc(n + 1);
    CHECK(b, "out of memory");
    unsigned x = (unsigned)i * 2654435761u + 12345u;
    for (size_t k = 0; k < n; k++) {
        x = x * 1103515245u + 12345u;
        b[k] = (char)('a' + (x >> 16) % 26);
    }
    size_t t = strlen(tag);
    if (n >= t)
        memcpy(b, tag, t);
    b[n] = 0;
    return b;
}

/* A body that starts like gzip: the cache stores it as it came, without
 * deflating it, so that sizes in the file are the ones given here. */
static char *make_raw_body(const char *tag, int i, size_t n)
{
    char *b = make_body(tag, i, n);
    if (n >= 2)
        b[0] = '\x1f', b[1] = '\x8b';
    return b;
}

static char *url_of(const char *kind, int i)
{
    char *u = NULL;
    if (asprintf(&u, "https://api.example.test/%s/%d?per_page=100", kind, i) < 0)
        fail("out of memory");
    return u;
}

static void store_simple(struct fleet_cache *c, const char *url, const char *cred, const char *etag, const char *body,
                         size_t len)
{
    static const char headers[] = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n";
    fleet_cache_store(c, url, cred, etag, NULL, headers, sizeof headers - 1, body, len);
}

/* Waits until the writer thread has put every queued write in the file:
 * fleet_cache_flush gives up after a few seconds, and a sanitizer build on
 * a busy machine may need more. */
static void flush_all(struct fleet_cache *c)
{
    int tries = 0;
    while (!fleet_cache_flush(c))
        CHECK(++tries < 60, "the queue was not written in %d tries", tries);
}

/* Looks url up: 1 with the expected body and etag, 0 on a miss; fails on
 * a hit with anything else (a wrong answer). */
static int lookup_is(struct fleet_cache *c, const char *url, const char *cred, const char *etag, const char *body,
                     size_t len)
{
    struct fleet_cache_entry e;
    if (!fleet_cache_lookup(c, url, cred, &e))
        return 0;
    CHECK(e.body_len == len && memcmp(e.body, body, len) == 0, "%s: wrong body (%zu bytes, want %zu)", url,
          e.body_len, len);
    CHECK(etag ? e.etag && strcmp(e.etag, etag) == 0 : e.etag == NULL, "%s: wrong etag %s", url,
          e.etag ? e.etag : "(none)");
    fleet_cache_entry_free(&e);
    return 1;
}

/* ------------------------------------------------------------ basic */

static int cmd_basic(const char *dir, const char *secret)
{
    char *path = path_in(dir, "new/sub/c.sqlite");
    struct fleet_cache *c = fleet_cache_open(path, 1 << 20);
    CHECK(c, "open failed");
    struct stat st;
    char *sub = path_in(dir, "new/sub");
    CHECK(stat(sub, &st) == 0 && (st.st_mode & 0777) == 0700, "folder mode %o", st.st_mode & 0777);
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600, "file mode %o", st.st_mode & 0777);

    char a[65], b[65], a2[65], anon[65];
    fleet_cache_credential(c, secret, strlen(secret), a);
    fleet_cache_credential(c, "another-token-0123456789", 24, b);
    fleet_cache_credential(c, secret, strlen(secret), a2);
    fleet_cache_credential(c, NULL, 0, anon);
    CHECK(strlen(a) == 64 && strcmp(a, a2) == 0, "credential hash not stable");
    CHECK(strcmp(a, b) != 0, "two secrets, one hash");
    CHECK(anon[0] == 0, "anonymous credential should be \"\"");

    const char *u1 = "https://api.github.test/orgs/acme/repos?per_page=100";
    struct fleet_cache_entry e;
    CHECK(!fleet_cache_lookup(c, u1, a, &e), "hit in an empty cache");
    store_simple(c, u1, a, "\"e1\"", "[1]", 3);
    CHECK(lookup_is(c, u1, a, "\"e1\"", "[1]", 3), "miss after store");
    CHECK(!fleet_cache_lookup(c, u1, b, &e), "hit for another credential");
    CHECK(!fleet_cache_lookup(c, u1, anon, &e), "hit for the anonymous credential");
    CHECK(!fleet_cache_lookup(c, "https://api.github.test/orgs/acme/repos", a, &e), "hit for another url");
    printf("ok hit after store, miss for another credential\n");

    store_simple(c, u1, a, "\"e2\"", "[1,2]", 5);
    CHECK(lookup_is(c, u1, a, "\"e2\"", "[1,2]", 5), "replace: old entry served");
    store_simple(c, u1, anon, "\"e3\"", "[]", 2);
    CHECK(lookup_is(c, u1, anon, "\"e3\"", "[]", 2), "anonymous entry");
    CHECK(lookup_is(c, u1, a, "\"e2\"", "[1,2]", 5), "anonymous store replaced the credential's entry");
    struct fleet_cache_stats s;
    CHECK(fleet_cache_stats(c, &s) == 0 && s.entries == 2, "entries %lld, want 2", s.entries);
    printf("ok replace on store\n");

    char creds[4][65];
    int n = fleet_cache_credentials_for(c, u1, creds, 4);
    CHECK(n == 2, "credentials_for: %d", n);
    CHECK((strcmp(creds[0], a) == 0 || strcmp(creds[1], a) == 0), "credentials_for misses the credential");

    /* Validators: none (not stored), Last-Modified only, binary bodies. */
    const char *u2 = "https://api.github.test/user";
    fleet_cache_store(c, u2, a, NULL, NULL, "h", 1, "x", 1);
    CHECK(!fleet_cache_lookup(c, u2, a, &e), "stored without validators");
    static const char bin[] = {'{', 0, 1, 2, '\xff', 0, '}'};
    fleet_cache_store(c, u2, a, NULL, "Wed, 21 Oct 2015 07:28:00 GMT", "h", 1, bin, sizeof bin);
    CHECK(fleet_cache_lookup(c, u2, a, &e), "Last-Modified only: miss");
    CHECK(e.etag == NULL && strcmp(e.last_modified, "Wed, 21 Oct 2015 07:28:00 GMT") == 0, "validators");
    CHECK(e.body_len == sizeof bin && memcmp(e.body, bin, sizeof bin) == 0, "binary body");
    CHECK(e.headers_len == 1 && e.headers[0] == 'h', "headers");
    fleet_cache_entry_free(&e);
    fleet_cache_store(c, u2, b, "\"empty\"", NULL, NULL, 0, NULL, 0);
    CHECK(fleet_cache_lookup(c, u2, b, &e) && e.body_len == 0 && e.body && e.body[0] == 0, "empty body");
    fleet_cache_entry_free(&e);
    fleet_cache_touch(c, u1, a);
    fleet_cache_touch(c, "https://nowhere.test/", a);
    printf("ok validators, binary and empty bodies\n");

    /* No cache at all: every call is a harmless no-op. */
    CHECK(!fleet_cache_lookup(NULL, u1, a, &e), "NULL cache hit");
    fleet_cache_store(NULL, u1, a, "x", NULL, NULL, 0, "x", 1);
    fleet_cache_touch(NULL, u1, a);
    fleet_cache_close(NULL);

    fleet_cache_close(c);
    c = fleet_cache_open(path, 1 << 20);
    CHECK(c, "reopen failed");
    fleet_cache_credential(c, secret, strlen(secret), a2);
    CHECK(strcmp(a, a2) == 0, "credential hash changed on reopen");
    CHECK(lookup_is(c, u1, a, "\"e2\"", "[1,2]", 5), "entry lost on reopen");
    fleet_cache_close(c);
    printf("ok persists across open\n");
    printf("path %s\n", path);
    free(path);
    free(sub);
    return 0;
}

/* ------------------------------------------------------------ evict */

static int cmd_evict(const char *dir)
{
    char *path = path_in(dir, "evict.sqlite");
    const long long max = 10000;
    struct fleet_cache *c = fleet_cache_open(path, max);
    CHECK(c, "open failed");
    const char *cred = "";
    /* Each entry: 100 bytes of headers + 1900 of body = 2000. */
    char headers[100];
    memset(headers, 'h', sizeof headers);
    char *urls[8], *bodies[8];
    for (int i = 0; i < 8; i++) {
        urls[i] = url_of("evict", i);
        bodies[i] = make_raw_body("evict", i, 1900);
    }
    for (int i = 0; i < 5; i++)
        fleet_cache_store(c, urls[i], cred, "\"v\"", NULL, headers, 100, bodies[i], 1900);
    struct fleet_cache_stats s;
    CHECK(fleet_cache_stats(c, &s) == 0 && s.entries == 5 && s.bytes == 10000, "5 entries: %lld, %lld bytes",
          s.entries, s.bytes);
    /* Entry 0 is used again (a 304): now entry 1 is the least recent. */
    fleet_cache_touch(c, urls[0], cred);
    struct fleet_cache_entry e;
    CHECK(fleet_cache_lookup(c, urls[1], cred, &e), "entry 1 missing");
    fleet_cache_entry_free(&e); /* a lookup alone does not count as use */
    fleet_cache_store(c, urls[5], cred, "\"v\"", NULL, headers, 100, bodies[5], 1900);
    flush_all(c); /* the writer thread evicts as it stores */
    /* 12000 > 10000: evict oldest until <= 9000: entries 1 and 2 go. */
    int present[8];
    for (int i = 0; i < 6; i++)
        present[i] = lookup_is(c, urls[i], cred, "\"v\"", bodies[i], 1900);
    CHECK(present[0] && !present[1] && !present[2] && present[3] && present[4] && present[5],
          "eviction order: present %d%d%d%d%d%d, want 100111", present[0], present[1], present[2], present[3],
          present[4], present[5]);
    CHECK(fleet_cache_stats(c, &s) == 0 && s.entries == 4 && s.bytes == 8000, "after eviction: %lld, %lld bytes",
          s.entries, s.bytes);
    printf("ok LRU eviction order\n");

    /* An entry larger than max_size alone is not stored, and the stale
     * entry it would have replaced goes. */
    char *big = make_raw_body("big", 99, 20000);
    fleet_cache_store(c, urls[3], cred, "\"big\"", NULL, headers, 100, big, 20000);
    flush_all(c);
    CHECK(!fleet_cache_lookup(c, urls[3], cred, &e), "an entry over max_size was stored (or the old one kept)");
    CHECK(lookup_is(c, urls[4], cred, "\"v\"", bodies[4], 1900), "an oversized store evicted others");
    /* One of 9500 bytes (over the 90 %% mark, under the cap) stays, alone. */
    fleet_cache_store(c, urls[6], cred, "\"nine\"", NULL, headers, 100, big, 9400);
    flush_all(c);
    CHECK(lookup_is(c, urls[6], cred, "\"nine\"", big, 9400), "a 9500-byte entry was evicted by its own store");
    CHECK(fleet_cache_stats(c, &s) == 0 && s.entries == 1 && s.bytes == 9500, "after the big one: %lld, %lld",
          s.entries, s.bytes);
    /* Many stores: the cap always holds. */
    for (int i = 0; i < 200; i++) {
        char *u = url_of("many", i);
        char *b = make_raw_body("m", i, (size_t)(100 + (i * 37) % 3000));
        fleet_cache_store(c, u, cred, "\"m\"", NULL, headers, 100, b, strlen(b));
        CHECK(fleet_cache_stats(c, &s) == 0 && s.bytes <= max, "over the cap: %lld bytes", s.bytes);
        free(u);
        free(b);
    }
    printf("ok size cap (%lld entries, %lld bytes)\n", s.entries, s.bytes);
    fleet_cache_close(c);

    /* Reopened with a smaller cap: the next store brings it under. */
    c = fleet_cache_open(path, 4000);
    CHECK(c, "reopen failed");
    fleet_cache_store(c, urls[7], cred, "\"v\"", NULL, headers, 100, bodies[7], 1900);
    CHECK(fleet_cache_stats(c, &s) == 0 && s.bytes <= 4000, "smaller cap not applied: %lld", s.bytes);
    CHECK(lookup_is(c, urls[7], cred, "\"v\"", bodies[7], 1900), "newest entry evicted");
    fleet_cache_close(c);
    printf("ok smaller cap on reopen\n");
    for (int i = 0; i < 8; i++) {
        free(urls[i]);
        free(bodies[i]);
    }
    free(big);
    free(path);
    return 0;
}

/* ------------------------------------------------------------ corrupt */

static void fill_for_corruption(const char *path, int n)
{
    struct fleet_cache *c = fleet_cache_open(path, 64 << 20);
    CHECK(c, "open failed");
    for (int i = 0; i < n; i++) {
        char *u = url_of("corrupt", i);
        char *b = make_body("c", i, (size_t)(200 + (i * 997) % 9000));
        char etag[32];
        snprintf(etag, sizeof etag, "\"%d\"", i);
        store_simple(c, u, "", etag, b, strlen(b));
        free(u);
        free(b);
    }
    fleet_cache_close(c); /* checkpoints: everything is in the main file */
}

/* After damage: every lookup is a miss or the right answer; then the cache
 * works again. */
static void verify_after_damage(const char *path, int n)
{
    struct fleet_cache *c = fleet_cache_open(path, 64 << 20);
    CHECK(c, "open after damage failed");
    int hits = 0;
    for (int i = 0; i < n; i++) {
        char *u = url_of("corrupt", i);
        char *b = make_body("c", i, (size_t)(200 + (i * 997) % 9000));
        char etag[32];
        snprintf(etag, sizeof etag, "\"%d\"", i);
        hits += lookup_is(c, u, "", etag, b, strlen(b));
        free(u);
        free(b);
    }
    store_simple(c, "https://after.test/", "", "\"a\"", "after", 5);
    CHECK(lookup_is(c, "https://after.test/", "", "\"a\"", "after", 5), "no cache after recovery");
    fleet_cache_close(c);
    c = fleet_cache_open(path, 64 << 20);
    CHECK(c, "reopen after recovery failed");
    CHECK(lookup_is(c, "https://after.test/", "", "\"a\"", "after", 5), "the new file lost its entry");
    fleet_cache_close(c);
    printf("ok after damage: %d of %d entries served, all correct; the new file works\n", hits, n);
}

static void overwrite(const char *path, off_t at, const void *bytes, size_t n)
{
    int fd = open(path, O_WRONLY);
    CHECK(fd >= 0, "open %s: %s", path, strerror(errno));
    CHECK(pwrite(fd, bytes, n, at) == (ssize_t)n, "pwrite: %s", strerror(errno));
    close(fd);
}

static int cmd_corrupt(const char *dir, const char *mode)
{
    char *path = path_in(dir, "corrupt.sqlite");
    const int n = 300;
    if (strcmp(mode, "body") == 0) {
        /* Damage inside one body only: SQLite's checks cannot see it; the
         * entry's checksum must. */
        struct fleet_cache *c = fleet_cache_open(path, 64 << 20);
        CHECK(c, "open failed");
        char *b = malloc(100001);
        memset(b, 'Q', 100000);
        b[0] = '\x1f', b[1] = '\x8b'; /* as if gzipped: stored as it came, to be found */
        b[100000] = 0;
        store_simple(c, "https://body.test/", "", "\"q\"", b, 100000);
        fleet_cache_close(c);
        int fd = open(path, O_RDWR);
        struct stat st;
        fstat(fd, &st);
        char *all = malloc((size_t)st.st_size);
        CHECK(read(fd, all, (size_t)st.st_size) == st.st_size, "read");
        char run[2048]; /* a stretch of one overflow page */
        memset(run, 'Q', sizeof run);
        char *at = memmem(all, (size_t)st.st_size, run, sizeof run);
        CHECK(at, "body not found in the file");
        close(fd);
        overwrite(path, (off_t)(at - all) + 1000, "QQQQZQQQ", 8);
        free(all);
        c = fleet_cache_open(path, 64 << 20);
        CHECK(c, "open after damage failed");
        int hit = lookup_is(c, "https://body.test/", "", "\"q\"", b, 100000);
        CHECK(!hit, "a damaged body was served");
        store_simple(c, "https://after.test/", "", "\"a\"", "after", 5);
        CHECK(lookup_is(c, "https://after.test/", "", "\"a\"", "after", 5), "no cache after recovery");
        fleet_cache_close(c);
        free(b);
        printf("ok damaged body detected, not served\n");
    } else {
        fill_for_corruption(path, n);
        struct stat st;
        CHECK(stat(path, &st) == 0, "no file");
        char garbage[16384];
        unsigned x = 42;
        for (size_t i = 0; i < sizeof garbage; i++) {
            x = x * 1103515245u + 12345u;
            garbage[i] = (char)(x >> 16);
        }
        if (strcmp(mode, "header") == 0)
            overwrite(path, 0, garbage, 100);
        else
            overwrite(path, st.st_size / 2 - (off_t)sizeof garbage / 2, garbage, sizeof garbage);
        verify_after_damage(path, n);
    }
    free(path);
    return 0;
}

/* -------------------------------------------------- read-only, full */

/* As root, permissions do not bind: the scenario runs as nobody, on files
 * given to nobody. The folders above DIR must let nobody through (the spec
 * makes its temporary folder 0711); nothing above DIR is changed here. */
static void become_nobody(const char *dir, const char *const *files)
{
    if (geteuid() != 0)
        return;
    CHECK(chown(dir, 65534, 65534) == 0, "chown %s: %s", dir, strerror(errno));
    for (; *files; files++)
        if (chown(*files, 65534, 65534) != 0 && errno != ENOENT)
            fail("chown %s: %s", *files, strerror(errno));
    CHECK(setgroups(0, NULL) == 0 && setgid(65534) == 0 && setuid(65534) == 0, "cannot drop privileges");
    CHECK(access(dir, X_OK) == 0, "%s cannot be reached as nobody: its parent folders must be traversable", dir);
}

static int cmd_readonly(const char *dir, bool whole_dir)
{
    char *path = path_in(dir, "ro.sqlite");
    char *wal = path_in(dir, "ro.sqlite-wal"), *shm = path_in(dir, "ro.sqlite-shm");
    struct fleet_cache *c = fleet_cache_open(path, 1 << 20);
    CHECK(c, "open failed");
    store_simple(c, "https://ro.test/1", "", "\"1\"", "one", 3);
    fleet_cache_close(c);
    const char *files[] = {path, wal, shm, NULL};
    become_nobody(dir, files);
    CHECK(chmod(path, 0400) == 0, "chmod: %s", strerror(errno));
    if (whole_dir)
        CHECK(chmod(dir, 0500) == 0, "chmod: %s", strerror(errno));
    CHECK(access(path, W_OK) != 0, "the file is still writable");

    c = fleet_cache_open(path, 1 << 20);
    if (c) {
        int hit = lookup_is(c, "https://ro.test/1", "", "\"1\"", "one", 3);
        for (int i = 0; i < 5; i++) {
            store_simple(c, "https://ro.test/2", "", "\"2\"", "two", 3);
            fleet_cache_touch(c, "https://ro.test/1", "");
        }
        struct fleet_cache_entry e;
        CHECK(!fleet_cache_lookup(c, "https://ro.test/2", "", &e), "a store reached a read-only file");
        CHECK(fleet_cache_clear(c) != 0, "clear succeeded on a read-only file");
        fleet_cache_close(c);
        printf("ok read-only: opened, lookup %s, stores refused\n", hit ? "hit" : "missed");
        if (!whole_dir)
            CHECK(hit, "a read-only file in a writable folder should still serve lookups");
    } else {
        CHECK(whole_dir, "a read-only file in a writable folder could not be opened");
        printf("ok read-only: no cache\n");
    }
    chmod(dir, 0700);
    free(path);
    free(wal);
    free(shm);
    return 0;
}

static int cmd_unreadable(const char *dir)
{
    char *path = path_in(dir, "unreadable.sqlite");
    struct fleet_cache *c = fleet_cache_open(path, 1 << 20);
    CHECK(c, "open failed");
    store_simple(c, "https://u.test/1", "", "\"1\"", "one", 3);
    fleet_cache_close(c);
    /* Owned by root (or by us), mode 0: nobody else can read it. */
    const char *files[] = {NULL};
    if (geteuid() == 0) {
        CHECK(chmod(path, 0) == 0, "chmod");
        become_nobody(dir, files); /* the folder is nobody's, the file root's */
    } else {
        CHECK(chmod(path, 0) == 0, "chmod");
    }
    CHECK(access(path, R_OK) != 0, "the file is still readable");
    c = fleet_cache_open(path, 1 << 20);
    CHECK(c, "no cache after an unreadable file");
    struct fleet_cache_entry e;
    CHECK(!fleet_cache_lookup(c, "https://u.test/1", "", &e), "hit in a new file");
    store_simple(c, "https://u.test/2", "", "\"2\"", "two", 3);
    CHECK(lookup_is(c, "https://u.test/2", "", "\"2\"", "two", 3), "the new file does not work");
    fleet_cache_close(c);
    printf("ok unreadable file set aside\n");
    free(path);
    return 0;
}

static int cmd_diskfull(const char *dir)
{
    char *path = path_in(dir, "full.sqlite");
    struct fleet_cache *c = fleet_cache_open(path, 64 << 20);
    CHECK(c, "open failed");
    store_simple(c, "https://full.test/0", "", "\"0\"", "zero", 4);
    CHECK(lookup_is(c, "https://full.test/0", "", "\"0\"", "zero", 4), "miss before the disk fills");
    flush_all(c); /* in the file before it fills */
    /* No file may grow past 64 KiB from now on: writes fail as on a full
     * disk (EFBIG rather than ENOSPC, and SIGXFSZ is ignored). */
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim = {64 << 10, 64 << 10};
    CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0, "setrlimit");
    char *big = make_body("full", 1, 300000);
    for (int i = 1; i <= 10; i++) {
        char *u = url_of("full", i);
        store_simple(c, u, "", "\"big\"", big, 300000);
        fleet_cache_touch(c, "https://full.test/0", "");
        free(u);
    }
    /* What was stored before is still served. */
    CHECK(lookup_is(c, "https://full.test/0", "", "\"0\"", "zero", 4), "miss after the disk filled");
    struct fleet_cache_entry e;
    for (int i = 1; i <= 10; i++) {
        char *u = url_of("full", i);
        if (fleet_cache_lookup(c, u, "", &e)) {
            CHECK(e.body_len == 300000 && memcmp(e.body, big, 300000) == 0, "wrong body after a failed store");
            fleet_cache_entry_free(&e);
        }
        free(u);
    }
    fleet_cache_close(c);
    printf("ok disk full: lookups go on, stores stop\n");
    free(big);
    free(path);
    return 0;
}

/* ------------------------------------------------------------ sharing */

static int child(const char *path, int id, int n, int go)
{
    struct fleet_cache *c = fleet_cache_open(path, 256 << 20);
    CHECK(c, "child %d: open failed", id);
    char start;
    CHECK(read(go, &start, 1) == 1, "child %d: no start signal", id); /* both start together */
    int other = 1 - id, seen = 0;
    for (int i = 0; i < n; i++) {
        char key[64];
        snprintf(key, sizeof key, "p%d", id);
        char *u = url_of(key, i);
        char *b = make_body(key, i, (size_t)(1000 + (i * 131) % 20000));
        store_simple(c, u, "", "\"x\"", b, strlen(b));
        CHECK(lookup_is(c, u, "", "\"x\"", b, strlen(b)), "child %d: own entry %d missing", id, i);
        free(u);
        free(b);
        /* Read what the other one has stored so far. */
        snprintf(key, sizeof key, "p%d", other);
        u = url_of(key, i);
        b = make_body(key, i, (size_t)(1000 + (i * 131) % 20000));
        seen += lookup_is(c, u, "", "\"x\"", b, strlen(b));
        free(u);
        free(b);
    }
    fleet_cache_close(c);
    printf("ok child %d stored %d, saw %d of the other's\n", id, n, seen);
    fflush(stdout);
    return 0;
}

static int cmd_twoproc(const char *dir, int n)
{
    char *path = path_in(dir, "shared.sqlite");
    pid_t pids[2];
    int go[2];
    CHECK(pipe(go) == 0, "pipe");
    for (int id = 0; id < 2; id++) {
        fflush(stdout);
        pids[id] = fork();
        CHECK(pids[id] >= 0, "fork");
        if (pids[id] == 0) {
            close(go[1]);
            _exit(child(path, id, n, go[0]));
        }
    }
    close(go[0]);
    usleep(100000);
    CHECK(write(go[1], "GG", 2) == 2, "start");
    close(go[1]);
    for (int id = 0; id < 2; id++) {
        int status;
        CHECK(waitpid(pids[id], &status, 0) == pids[id], "waitpid");
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child %d failed", id);
    }
    struct fleet_cache *c = fleet_cache_open(path, 256 << 20);
    CHECK(c, "open failed");
    for (int id = 0; id < 2; id++)
        for (int i = 0; i < n; i++) {
            char key[64];
            snprintf(key, sizeof key, "p%d", id);
            char *u = url_of(key, i);
            char *b = make_body(key, i, (size_t)(1000 + (i * 131) % 20000));
            CHECK(lookup_is(c, u, "", "\"x\"", b, strlen(b)), "entry %s missing after both finished", u);
            free(u);
            free(b);
        }
    struct fleet_cache_stats s;
    CHECK(fleet_cache_stats(c, &s) == 0 && s.entries == 2 * n, "entries %lld, want %d", s.entries, 2 * n);
    fleet_cache_close(c);
    printf("ok both processes' %d entries present\n", 2 * n);
    free(path);
    return 0;
}

/* ----------------------------------------------------------- locked */

/* Rows in entries with url, seen by another connection. */
static int rows_for(sqlite3 *db, const char *url)
{
    sqlite3_stmt *q;
    int n = -1;
    if (sqlite3_prepare_v2(db, "SELECT count(*) FROM entries WHERE url = ?1", -1, &q, NULL) == SQLITE_OK) {
        sqlite3_bind_text(q, 1, url, -1, SQLITE_STATIC);
        if (sqlite3_step(q) == SQLITE_ROW)
            n = sqlite3_column_int(q, 0);
        sqlite3_finalize(q);
    }
    return n;
}

/* Another process holding the write lock must not make a store wait (or
 * lose it): the store is kept in memory, this process's lookups see it,
 * and it reaches the file with the next write after the lock is free, or
 * at close. */
static int cmd_locked(const char *dir)
{
    char *path = path_in(dir, "locked.sqlite");
    struct fleet_cache *c = fleet_cache_open(path, 256 << 20);
    CHECK(c, "open failed");
    sqlite3 *other;
    CHECK(sqlite3_open(path, &other) == SQLITE_OK, "second connection");
    char *u1 = url_of("locked", 1), *u2 = url_of("locked", 2), *u3 = url_of("locked", 3);
    char *b1 = make_body("one", 1, 5000), *b2 = make_body("two", 2, 7000), *b3 = make_body("three", 3, 300);

    CHECK(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK, "lock");
    store_simple(c, u1, "", "\"1\"", b1, strlen(b1));
    fleet_cache_memo_set(c, "owner:locked", "user");
    CHECK(lookup_is(c, u1, "", "\"1\"", b1, strlen(b1)), "own pending store not seen");
    CHECK(rows_for(other, u1) == 0, "the store reached the file while it was locked");
    char queued[32];
    CHECK(fleet_cache_memo_get(c, "owner:locked", 3600, queued, sizeof queued) && strcmp(queued, "user") == 0,
          "own queued memo not seen");
    printf("ok a store under another process's lock is kept and seen by its own lookups\n");

    CHECK(sqlite3_exec(other, "COMMIT", NULL, NULL, NULL) == SQLITE_OK, "unlock");
    store_simple(c, u2, "", "\"2\"", b2, strlen(b2));
    flush_all(c); /* the writer thread puts them in as soon as it can */
    CHECK(rows_for(other, u1) == 1 && rows_for(other, u2) == 1, "pending stores not written after the lock");
    char memo[32];
    CHECK(fleet_cache_memo_get(c, "owner:locked", 3600, memo, sizeof memo) && strcmp(memo, "user") == 0,
          "pending memo not written");
    printf("ok the next write puts the pending ones in the file\n");

    CHECK(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK, "lock again");
    store_simple(c, u3, "", "\"3\"", b3, strlen(b3));
    CHECK(sqlite3_exec(other, "COMMIT", NULL, NULL, NULL) == SQLITE_OK, "unlock again");
    fleet_cache_close(c);
    CHECK(rows_for(other, u3) == 1, "a pending store was lost at close");
    printf("ok close writes what is pending\n");

    sqlite3_close(other);
    free(u1), free(u2), free(u3), free(b1), free(b2), free(b3);
    free(path);
    return 0;
}

/* ------------------------------------------------------------ queue */

/* While another process holds the write lock, the writer cannot write:
 * the queue (64 MiB) fills, and its oldest stores give way to the newest
 * instead of the caller waiting; the drops are counted in the file. A
 * close under a lock that is never released gives up after its bounded
 * wait and says how many responses were not stored. */
static int cmd_queue(const char *dir)
{
    char *path = path_in(dir, "queue.sqlite");
    struct fleet_cache *c = fleet_cache_open(path, 1LL << 30);
    CHECK(c, "open failed");
    sqlite3 *other;
    CHECK(sqlite3_open(path, &other) == SQLITE_OK, "second connection");
    CHECK(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK, "lock");
    enum { N = 100 };
    const size_t size = 1 << 20; /* 100 MiB in all: more than the queue holds */
    char *urls[N], *b = make_raw_body("queue", 0, size);
    for (int i = 0; i < N; i++) {
        urls[i] = url_of("queue", i);
        store_simple(c, urls[i], "", "\"q\"", b, size);
    }
    CHECK(lookup_is(c, urls[N - 1], "", "\"q\"", b, size), "the newest store is not seen");
    int missing = 0;
    for (int i = 0; i < N; i++)
        missing += !lookup_is(c, urls[i], "", "\"q\"", b, size);
    CHECK(missing >= N - 64 && missing < N, "%d of %d stores dropped, want at least %d", missing, N, N - 64);
    CHECK(rows_for(other, urls[N - 1]) == 0, "a store reached the locked file");
    printf("ok a full queue dropped %d of %d stores instead of waiting\n", missing, N);

    CHECK(sqlite3_exec(other, "COMMIT", NULL, NULL, NULL) == SQLITE_OK, "unlock");
    flush_all(c);
    struct fleet_cache_stats st;
    CHECK(fleet_cache_stats(c, &st) == 0 && st.entries == N - missing && st.dropped == missing,
          "after the lock: %lld entries, %lld dropped; want %d, %d", st.entries, st.dropped, N - missing, missing);
    CHECK(rows_for(other, urls[N - 1]) == 1, "the newest store is not in the file after the lock");
    printf("ok the kept ones are written once the lock is free, the drops counted\n");

    CHECK(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK, "lock again");
    char *late = url_of("late", 0);
    store_simple(c, late, "", "\"l\"", "late", 4);
    fleet_cache_close(c); /* gives up: the lock is never released in time */
    CHECK(rows_for(other, late) == 0, "a store reached the locked file at close");
    CHECK(sqlite3_exec(other, "COMMIT", NULL, NULL, NULL) == SQLITE_OK, "unlock again");
    printf("ok close under a lock returns\n");

    c = fleet_cache_open(path, 1LL << 30);
    CHECK(c, "reopen failed");
    CHECK(fleet_cache_stats(c, &st) == 0 && st.dropped >= missing, "the drops were not kept: %lld", st.dropped);
    CHECK(fleet_cache_clear(c) == 0 && fleet_cache_stats(c, &st) == 0 && st.dropped == 0,
          "clear kept the drop count: %lld", st.dropped);
    fleet_cache_close(c);
    sqlite3_close(other);
    for (int i = 0; i < N; i++)
        free(urls[i]);
    free(late);
    free(b);
    free(path);
    return 0;
}

/* ----------------------------------------------------------- deflate */

/* A plain body is stored deflated and comes back byte for byte; one that
 * came gzipped, and one that does not shrink, are stored as they came. */
static int cmd_deflate(const char *dir)
{
    char *path = path_in(dir, "deflate.sqlite");
    struct fleet_cache *c = fleet_cache_open(path, 256 << 20);
    CHECK(c, "open failed");
    const size_t n = 300000;
    char *json = malloc(n + 1);
    CHECK(json, "out of memory");
    for (size_t i = 0; i < n; i++)
        json[i] = "[{\"id\": 1, \"name\": \"repo\", \"private\": false},\n"[i % 47];
    json[n] = 0;
    char *gz = make_raw_body("gz", 1, n);
    unsigned char *noise = malloc(n);
    CHECK(noise, "out of memory");
    unsigned x = 7;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        noise[i] = (unsigned char)(x >> 16);
    }
    noise[0] = '['; /* not the gzip magic: it is the size that keeps it as is */
    store_simple(c, "https://z.test/json", "", "\"j\"", json, n);
    store_simple(c, "https://z.test/gz", "", "\"g\"", gz, n);
    store_simple(c, "https://z.test/noise", "", "\"n\"", (const char *)noise, n);
    store_simple(c, "https://z.test/empty", "", "\"e\"", "", 0);
    flush_all(c);
    sqlite3 *db;
    CHECK(sqlite3_open(path, &db) == SQLITE_OK, "second connection");
    sqlite3_stmt *q;
    CHECK(sqlite3_prepare_v2(db, "SELECT url, codec, plain_size, length(b.body) FROM entries e JOIN bodies b"
                                 " ON b.id = e.id ORDER BY url", -1, &q, NULL) == SQLITE_OK, "query");
    while (sqlite3_step(q) == SQLITE_ROW) {
        const char *url = (const char *)sqlite3_column_text(q, 0);
        int codec = sqlite3_column_int(q, 1);
        long long plain = sqlite3_column_int64(q, 2), stored = sqlite3_column_int64(q, 3);
        bool deflated = strcmp(url, "https://z.test/json") == 0;
        CHECK(codec == deflated, "%s: codec %d", url, codec);
        if (deflated)
            CHECK(stored < plain / 20, "%s: %lld bytes stored for %lld", url, stored, plain);
        else
            CHECK(stored == plain, "%s: %lld bytes stored for %lld", url, stored, plain);
    }
    sqlite3_finalize(q);
    sqlite3_close(db);
    fleet_cache_close(c);
    c = fleet_cache_open(path, 256 << 20);
    CHECK(c, "reopen failed");
    CHECK(lookup_is(c, "https://z.test/json", "", "\"j\"", json, n), "deflated body lost");
    CHECK(lookup_is(c, "https://z.test/gz", "", "\"g\"", gz, n), "gzip body lost");
    CHECK(lookup_is(c, "https://z.test/noise", "", "\"n\"", (const char *)noise, n), "incompressible body lost");
    CHECK(lookup_is(c, "https://z.test/empty", "", "\"e\"", "", 0), "empty body lost");
    fleet_cache_close(c);
    printf("ok plain bodies deflated, gzip and incompressible ones kept as they came, all read back\n");

    /* A deflated entry that does not inflate to its recorded size (the
     * checksum covers the stored bytes, not plain_size) is damage: never
     * served, the file set aside. */
    CHECK(sqlite3_open(path, &db) == SQLITE_OK, "second connection");
    CHECK(sqlite3_exec(db, "UPDATE entries SET plain_size = plain_size + 1 WHERE codec = 1", NULL, NULL, NULL) ==
              SQLITE_OK && sqlite3_changes(db) == 1,
          "cannot change plain_size");
    sqlite3_close(db);
    c = fleet_cache_open(path, 256 << 20);
    CHECK(c, "open after the change failed");
    CHECK(!lookup_is(c, "https://z.test/json", "", "\"j\"", json, n), "a body of the wrong size was served");
    fleet_cache_close(c);
    printf("ok a deflated body of the wrong size is not served\n");

    /* Ten thousand small stores and memos: all in the file, all read back. */
    c = fleet_cache_open(path, 256 << 20);
    CHECK(c, "reopen failed");
    for (int i = 0; i < 10000; i++) {
        char *u = url_of("many", i), key[32], value[32];
        char *b = make_body("many", i, (size_t)(300 + i % 700));
        store_simple(c, u, "", "\"m\"", b, strlen(b));
        snprintf(key, sizeof key, "k%d", i);
        snprintf(value, sizeof value, "v%d", i);
        fleet_cache_memo_set(c, key, value);
        free(u);
        free(b);
    }
    flush_all(c);
    struct fleet_cache_stats st;
    CHECK(fleet_cache_stats(c, &st) == 0 && st.entries == 10000 && st.dropped == 0, "%lld entries, %lld dropped",
          st.entries, st.dropped);
    fleet_cache_close(c);
    c = fleet_cache_open(path, 256 << 20);
    CHECK(c, "reopen failed");
    for (int i = 0; i < 10000; i += 97) {
        char *u = url_of("many", i), key[32], want[32], got[32];
        char *b = make_body("many", i, (size_t)(300 + i % 700));
        CHECK(lookup_is(c, u, "", "\"m\"", b, strlen(b)), "%s missing", u);
        snprintf(key, sizeof key, "k%d", i);
        snprintf(want, sizeof want, "v%d", i);
        CHECK(fleet_cache_memo_get(c, key, 3600, got, sizeof got) && strcmp(got, want) == 0, "memo %s lost", key);
        free(u);
        free(b);
    }
    fleet_cache_close(c);
    printf("ok ten thousand stores and memos\n");
    free(json);
    free(gz);
    free(noise);
    free(path);
    return 0;
}

static int read_salt(const char *path, unsigned char out[32])
{
    sqlite3 *db;
    sqlite3_stmt *s;
    int ok = 0;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key = 'salt'", -1, &s, NULL) == SQLITE_OK) {
        if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_bytes(s, 0) == 32) {
            memcpy(out, sqlite3_column_blob(s, 0), 32);
            ok = 1;
        }
        sqlite3_finalize(s);
    }
    sqlite3_close(db);
    return ok;
}

static int cmd_salt(const char *dir)
{
    char *p1 = path_in(dir, "salt1.sqlite"), *p2 = path_in(dir, "salt2.sqlite");
    struct fleet_cache *c1 = fleet_cache_open(p1, 1 << 20), *c2 = fleet_cache_open(p2, 1 << 20);
    CHECK(c1 && c2, "open failed");
    char h1[65], h2[65];
    fleet_cache_credential(c1, "ghp_same_secret_for_both", 24, h1);
    fleet_cache_credential(c2, "ghp_same_secret_for_both", 24, h2);
    CHECK(strcmp(h1, h2) != 0, "one secret hashes alike in two cache files");
    fleet_cache_close(c1);
    fleet_cache_close(c2);
    unsigned char s1[32], s2[32], zero[32] = {0};
    CHECK(read_salt(p1, s1) && read_salt(p2, s2), "no 32-byte salt in the file");
    CHECK(memcmp(s1, s2, 32) != 0 && memcmp(s1, zero, 32) != 0, "salts equal (or zero)");
    printf("ok salts differ\n");
    free(p1);
    free(p2);
    return 0;
}

static int cmd_foreign(const char *dir)
{
    char *path = path_in(dir, "other.sqlite");
    sqlite3 *db;
    CHECK(sqlite3_open(path, &db) == SQLITE_OK, "sqlite3_open");
    CHECK(sqlite3_exec(db, "CREATE TABLE notes(t TEXT); INSERT INTO notes VALUES('keep me');", NULL, NULL, NULL) ==
              SQLITE_OK,
          "create");
    sqlite3_close(db);
    struct fleet_cache *c = fleet_cache_open(path, 1 << 20);
    CHECK(!c, "another program's database was taken for a cache");
    CHECK(sqlite3_open(path, &db) == SQLITE_OK, "sqlite3_open");
    sqlite3_stmt *s;
    CHECK(sqlite3_prepare_v2(db, "SELECT (SELECT t FROM notes), (SELECT count(*) FROM sqlite_schema)", -1, &s,
                             NULL) == SQLITE_OK &&
              sqlite3_step(s) == SQLITE_ROW,
          "query");
    CHECK(strcmp((const char *)sqlite3_column_text(s, 0), "keep me") == 0 && sqlite3_column_int(s, 1) == 1,
          "the database was changed");
    sqlite3_finalize(s);
    CHECK(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW,
          "query");
    CHECK(strcmp((const char *)sqlite3_column_text(s, 0), "delete") == 0, "its journal mode was changed");
    sqlite3_finalize(s);
    sqlite3_close(db);
    printf("ok another program's database left alone\n");
    free(path);
    return 0;
}

static int cmd_clear(const char *dir)
{
    char *path = path_in(dir, "clear.sqlite");
    struct fleet_cache *c = fleet_cache_open(path, 64 << 20);
    CHECK(c, "open failed");
    char *b = make_raw_body("clear", 0, 50000);
    for (int i = 0; i < 40; i++) {
        char *u = url_of("clear", i);
        store_simple(c, u, "", "\"c\"", b, 50000);
        free(u);
    }
    struct fleet_cache_stats s;
    CHECK(fleet_cache_stats(c, &s) == 0 && s.entries == 40 && s.bytes > 40 * 50000 && s.file_size >= s.bytes,
          "stats before clear: %lld entries, %lld bytes, file %lld", s.entries, s.bytes, s.file_size);
    long long before = s.file_size;
    CHECK(fleet_cache_clear(c) == 0, "clear failed: %s", fleet_cache_error(c));
    CHECK(fleet_cache_stats(c, &s) == 0 && s.entries == 0 && s.bytes == 0, "stats after clear");
    CHECK(s.file_size < before / 10, "file not shrunk: %lld -> %lld", before, s.file_size);
    char *u = url_of("clear", 0);
    struct fleet_cache_entry e;
    CHECK(!fleet_cache_lookup(c, u, "", &e), "hit after clear");
    store_simple(c, u, "", "\"c\"", b, 50000);
    CHECK(lookup_is(c, u, "", "\"c\"", b, 50000), "store after clear");
    fleet_cache_close(c);
    printf("ok clear: file %lld -> %lld bytes\n", before, s.file_size);
    free(u);
    free(b);
    free(path);
    return 0;
}

/* ------------------------------------------------------------ sha256 */

static void print_digest(const unsigned char d[32])
{
    for (int i = 0; i < 32; i++)
        printf("%02x", d[i]);
    printf("\n");
}

/* "", "abc", the 448- and 896-bit messages, a million 'a' (one shot), and
 * the million again fed in uneven pieces through the incremental API. */
static int cmd_sha256(void)
{
    static const char *const msgs[] = {
        "",
        "abc",
        "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
        "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
    };
    unsigned char d[32];
    for (size_t i = 0; i < sizeof msgs / sizeof *msgs; i++) {
        fleet_sha256(msgs[i], strlen(msgs[i]), d);
        print_digest(d);
    }
    char *a = malloc(1000000);
    CHECK(a, "out of memory");
    memset(a, 'a', 1000000);
    fleet_sha256(a, 1000000, d);
    print_digest(d);
    struct fleet_sha256 s;
    fleet_sha256_init(&s);
    for (size_t off = 0, step = 1; off < 1000000; off += step, step = step % 97 + 1)
        fleet_sha256_update(&s, a + off, off + step > 1000000 ? 1000000 - off : step);
    fleet_sha256_final(&s, d);
    print_digest(d);
    free(a);
    return 0;
}

/* ------------------------------------------------------------ bench */

static int cmd_bench(const char *dir, int n, size_t size)
{
    char *path = path_in(dir, "bench.sqlite");
    struct fleet_cache *c = fleet_cache_open(path, 256LL << 20);
    CHECK(c, "open failed");
    char cred[65];
    fleet_cache_credential(c, "ghp_benchmarktoken0123456789", 28, cred);
    char *body = make_body("bench", 0, size);
    char headers[600];
    memset(headers, 'h', sizeof headers);
    /* Some neighbours, so that lookups are not in an empty table. */
    for (int i = 0; i < 1000; i++) {
        char *u = url_of("neighbour", i);
        char *b = make_body("n", i, 2000);
        fleet_cache_store(c, u, cred, "\"n\"", NULL, headers, sizeof headers, b, 2000);
        free(u);
        free(b);
    }
    const char *url = "https://api.github.test/orgs/acme/repos?per_page=100&page=7";

    double t0 = now();
    for (int i = 0; i < n; i++)
        fleet_cache_store(c, url, cred, "W/\"0123456789abcdef\"", NULL, headers, sizeof headers, body, size);
    double store_same = (now() - t0) / n * 1e6;

    /* The same key, a body of another size each time (a changed page). */
    t0 = now();
    for (int i = 0; i < n; i++)
        fleet_cache_store(c, url, cred, "W/\"0123456789abcdef\"", NULL, headers, sizeof headers, body,
                          size - (size_t)(i % 2) * (size / 10));
    double store_resized = (now() - t0) / n * 1e6;

    t0 = now();
    struct fleet_cache_entry e;
    for (int i = 0; i < n; i++) {
        CHECK(fleet_cache_lookup(c, url, cred, &e), "miss");
        fleet_cache_entry_free(&e);
    }
    double lookup = (now() - t0) / n * 1e6;

    t0 = now();
    for (int i = 0; i < n; i++)
        CHECK(!fleet_cache_lookup(c, "https://api.github.test/absent", cred, &e), "hit");
    double miss = (now() - t0) / n * 1e6;

    t0 = now();
    for (int i = 0; i < n; i++)
        fleet_cache_touch(c, url, cred);
    double touch = (now() - t0) / n * 1e6;

    /* New keys until the cap evicts: the crawler's steady state. */
    int m = n;
    t0 = now();
    for (int i = 0; i < m; i++) {
        char u[128];
        snprintf(u, sizeof u, "https://api.github.test/repos/acme/r%d?page=1", i);
        fleet_cache_store(c, u, cred, "\"x\"", NULL, headers, sizeof headers, body, size);
    }
    double store_new = (now() - t0) / m * 1e6;
    struct fleet_cache_stats s;
    fleet_cache_stats(c, &s);

    t0 = now();
    fleet_cache_close(c);
    double close_ms = (now() - t0) * 1e3;
    t0 = now();
    c = fleet_cache_open(path, 256LL << 20);
    double open_ms = (now() - t0) * 1e3;
    fleet_cache_close(c);

    printf("body %zu bytes, %d calls each\n", size, n);
    printf("lookup (hit)        %9.1f us/call\n", lookup);
    printf("lookup (miss)       %9.1f us/call\n", miss);
    printf("store (same key)    %9.1f us/call  (same size: SQLite overwrites in place)\n", store_same);
    printf("store (same key)    %9.1f us/call  (size changing between stores)\n", store_resized);
    printf("store (new keys)    %9.1f us/call  (with eviction; %lld entries, %lld bytes at the end)\n", store_new,
           s.entries, s.bytes);
    printf("touch               %9.1f us/call\n", touch);
    printf("open (quick_check)  %9.1f ms for a %.0f MiB file; close %.1f ms\n", open_ms,
           (double)s.file_size / (1 << 20), close_ms);
    free(body);
    free(path);
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (getenv("CACHE_PROBE_DEBUG"))
        fleet_log_set_level(FLEET_LOG_DEBUG);
    if (argc < 3) {
        fprintf(stderr, "usage: cache_probe COMMAND DIR [ARGS]\n");
        return 2;
    }
    const char *cmd = argv[1], *dir = argv[2];
    if (strcmp(cmd, "basic") == 0 && argc == 4)
        return cmd_basic(dir, argv[3]);
    if (strcmp(cmd, "evict") == 0)
        return cmd_evict(dir);
    if (strcmp(cmd, "corrupt") == 0 && argc == 4)
        return cmd_corrupt(dir, argv[3]);
    if (strcmp(cmd, "readonly") == 0)
        return cmd_readonly(dir, false);
    if (strcmp(cmd, "readonly-dir") == 0)
        return cmd_readonly(dir, true);
    if (strcmp(cmd, "unreadable") == 0)
        return cmd_unreadable(dir);
    if (strcmp(cmd, "diskfull") == 0)
        return cmd_diskfull(dir);
    if (strcmp(cmd, "twoproc") == 0 && argc == 4)
        return cmd_twoproc(dir, atoi(argv[3]));
    if (strcmp(cmd, "locked") == 0)
        return cmd_locked(dir);
    if (strcmp(cmd, "queue") == 0)
        return cmd_queue(dir);
    if (strcmp(cmd, "deflate") == 0)
        return cmd_deflate(dir);
    if (strcmp(cmd, "salt") == 0)
        return cmd_salt(dir);
    if (strcmp(cmd, "clear") == 0)
        return cmd_clear(dir);
    if (strcmp(cmd, "foreign") == 0)
        return cmd_foreign(dir);
    if (strcmp(cmd, "sha256") == 0)
        return cmd_sha256();
    if (strcmp(cmd, "bench") == 0 && argc == 5)
        return cmd_bench(dir, atoi(argv[3]), (size_t)strtoul(argv[4], NULL, 10));
    fprintf(stderr, "cache_probe: unknown command or arguments\n");
    return 2;
}
