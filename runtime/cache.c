/* The response cache on SQLite (see cache.h).
 *
 * One file, in WAL mode so that several gitfleet processes share it:
 *
 *   meta(key, value)   'salt' (32 random bytes, made once per file),
 *                      'bytes' (sum of entries.size, kept by triggers so
 *                      that every process sharing the file sees the same
 *                      total, read in O(1) inside each store's transaction:
 *                      eviction never scans), 'created_at', 'dropped'
 *                      (stores runs could not write in time), memos
 *   entries(...)       one row per (method, url, credential): validators,
 *                      size, stored_at, used_at (indexed, for LRU),
 *                      checksum, codec and plain_size (a body that came
 *                      plain is stored deflated: see zpack.h)
 *   bodies(id, headers, body)   the two blobs of entry id, apart: SQLite
 *                      rewrites a whole record on any update, and marking
 *                      a 500 KB entry used must not rewrite 500 KB
 *
 * PRAGMA application_id marks the file as ours and PRAGMA user_version is
 * the schema version. Each row carries a 64-bit checksum (XXH64) over its
 * key, validators, headers and body as stored: SQLite does not check the
 * content of pages, and a damaged body must never be served as an answer.
 *
 * Failures: a file that is damaged (not a database, SQLITE_CORRUPT, a
 * failing quick_check, a checksum mismatch) or that cannot be read is moved
 * aside to PATH.corrupt-EPOCH and a new one is started; this happens at
 * open, and once more at most during a run. A write that fails (disk full,
 * read-only file, I/O error) stops all writing for the run, with one
 * warning; lookups go on while they work. Writes happen on a writer
 * thread with its own connection, never on the caller's (see "writes").
 * Nothing here ever fails a request: at worst it misses. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "cache.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>
#include <threads.h>

#include "log.h"
#include "sha256.h"
#include "zpack.h"

#define APP_ID 0x47664c74        /* "GfLt" */
#define SCHEMA_VERSION 2 /* 2: bodies may be deflated (entries.codec) */
#define BUSY_TIMEOUT_MS 2000
#define DEFAULT_MAX_SIZE (256LL << 20)
#define EVICT_BATCH 256

static const char *const SCHEMA =
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;"
    "CREATE TABLE entries("
    " id INTEGER PRIMARY KEY,"
    " method TEXT NOT NULL, url TEXT NOT NULL, credential TEXT NOT NULL,"
    " etag TEXT, last_modified TEXT,"
    " size INTEGER NOT NULL, stored_at REAL NOT NULL, used_at REAL NOT NULL,"
    " checksum INTEGER NOT NULL,"
    /* codec 1: the body is stored deflated (zpack.h), plain_size long
     * once inflated; 0: stored as it came. size counts stored bytes. */
    " codec INTEGER NOT NULL DEFAULT 0, plain_size INTEGER NOT NULL DEFAULT 0,"
    " UNIQUE(method, url, credential));"
    /* Covers eviction (oldest first) and the sum of sizes. */
    "CREATE INDEX entries_used_at ON entries(used_at, size);"
    /* The blobs apart: marking an entry used rewrites a small row, not
     * the body (SQLite rewrites a whole record on any update). */
    "CREATE TABLE bodies(id INTEGER PRIMARY KEY, headers BLOB NOT NULL, body BLOB NOT NULL);"
    "CREATE TRIGGER entries_insert AFTER INSERT ON entries BEGIN"
    " UPDATE meta SET value = value + NEW.size WHERE key = 'bytes'; END;"
    "CREATE TRIGGER entries_delete AFTER DELETE ON entries BEGIN"
    " UPDATE meta SET value = value - OLD.size WHERE key = 'bytes';"
    " DELETE FROM bodies WHERE id = OLD.id; END;"
    "CREATE TRIGGER entries_update_size AFTER UPDATE OF size ON entries BEGIN"
    " UPDATE meta SET value = value - OLD.size + NEW.size WHERE key = 'bytes'; END;";

enum {
    ST_LOOKUP,
    ST_STORE,
    ST_BODY,
    ST_TOUCH,
    ST_DELETE,
    ST_CREDS,
    ST_TOTAL,
    ST_VICTIMS,
    ST_EVICT,
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_MEMO_GET,
    ST_MEMO_SET,
    ST_DROPPED,
    NSTMT
};

static const char *const STMT_SQL[NSTMT] = {
    /* length() of a blob reads no content: a large body is not loaded
     * here but read into the caller's buffer (see fleet_cache_lookup). */
    [ST_LOOKUP] = "SELECT e.id, e.etag, e.last_modified, e.checksum, b.headers, length(b.body),"
                  " CASE WHEN length(b.body) <= 16384 THEN b.body END, b.id, e.codec, e.plain_size"
                  " FROM entries e LEFT JOIN bodies b ON b.id = e.id"
                  " WHERE e.method = 'GET' AND e.url = ?1 AND e.credential = ?2",
    [ST_STORE] = "INSERT INTO entries(method, url, credential, etag, last_modified, size, stored_at, used_at,"
                 " checksum, codec, plain_size) VALUES('GET', ?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8, ?9)"
                 " ON CONFLICT(method, url, credential) DO UPDATE SET etag = excluded.etag,"
                 " last_modified = excluded.last_modified, size = excluded.size,"
                 " stored_at = excluded.stored_at, used_at = excluded.used_at, checksum = excluded.checksum,"
                 " codec = excluded.codec, plain_size = excluded.plain_size"
                 " RETURNING id",
    [ST_BODY] = "INSERT INTO bodies(id, headers, body) VALUES(?1, ?2, ?3)"
                " ON CONFLICT(id) DO UPDATE SET headers = excluded.headers, body = excluded.body",
    [ST_TOUCH] = "UPDATE entries SET used_at = ?3 WHERE method = 'GET' AND url = ?1 AND credential = ?2",
    [ST_DELETE] = "DELETE FROM entries WHERE method = 'GET' AND url = ?1 AND credential = ?2",
    [ST_CREDS] = "SELECT credential FROM entries WHERE method = 'GET' AND url = ?1"
                 " ORDER BY used_at DESC LIMIT ?2",
    [ST_TOTAL] = "SELECT value FROM meta WHERE key = 'bytes'",
    [ST_VICTIMS] = "SELECT id, size FROM entries ORDER BY used_at, id LIMIT ?1",
    [ST_EVICT] = "DELETE FROM entries WHERE id = ?1",
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_MEMO_GET] = "SELECT value FROM meta WHERE key = 'memo:' || ?1",
    [ST_MEMO_SET] = "INSERT OR REPLACE INTO meta(key, value) VALUES('memo:' || ?1, ?2)",
    [ST_DROPPED] = "INSERT INTO meta(key, value) VALUES('dropped', ?1)"
                   " ON CONFLICT(key) DO UPDATE SET value = value + excluded.value",
};

struct fleet_cache {
    char *path;
    long long max_size;
    sqlite3 *db;
    sqlite3_stmt *st[NSTMT];
    unsigned char salt[32];
    dev_t dev; /* the file this connection opened, to tell whether PATH */
    ino_t ino; /* still names it before moving it aside */

    double last_used; /* used_at handed out last: strictly increasing */

    bool no_writes;   /* a write failed (or the file is read-only) */
    bool write_warned; /* ... and the one warning about it was given */
    bool dead;        /* nothing works any more: every call misses */
    bool recovered;   /* a damaged file was replaced during this run */
    bool keep_salt;   /* a replacement takes over c->salt: the credential
                         hashes already handed out stay valid */
    char error[256];  /* the last failure, for fleet_cache_error */

    /* Writes not yet in the file (see "writes" below). Everything from
     * here on is shared with the writer thread, under lock. */
    mtx_t lock;
    cnd_t wake_writer; /* work queued, or time to stop */
    cnd_t written;         /* a batch went in (or failed) */
    struct pending *pending, **pending_tail; /* queued, oldest first */
    struct pending *writing;   /* the batch the writer has taken: still
                                  seen by lookups until it is in the file */
    size_t queued_bytes;       /* of pending and writing together */
    struct fleet_cache *writer_conn; /* the writer's own connection */
    thrd_t writer;
    bool writer_started;
    bool stopping;             /* close: write what is left, then end */
    bool abandon;              /* close waited long enough: end now */
    unsigned generation;       /* bumped when the file was replaced: the
                                  writer reopens its connection */
    long long dropped;         /* stores dropped this run (queue full, or
                                  left over at close) */
    long long dropped_saved;   /* ... of which counted in the file */
    struct spare_block {
        char *data;
        size_t cap;
    } spares[16];              /* data blocks written out, for new stores */
    int nspares;
    size_t spare_bytes;
    int writer_rc;             /* a failed batch's code, for the caller's
                                  thread to act on (log, recover) */
    char writer_why[256];
};

struct pending;
static void file_replaced(struct fleet_cache *c);
static void settle_writer(struct fleet_cache *c);
static void stop_writer(struct fleet_cache *c);
static void discard_queue(struct fleet_cache *c);
static int add_dropped(struct fleet_cache *c, long long n);
static int lookup_pending(struct fleet_cache *c, const char *url, const char *cred, struct fleet_cache_entry *e);

/* ------------------------------------------------------------ helpers */

static double now_epoch(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A used_at later than every one this process handed out, so that the
 * order of use is exact even within one clock tick. */
static double next_use(struct fleet_cache *c)
{
    double t = now_epoch();
    if (t <= c->last_used)
        t = c->last_used + 1e-6;
    c->last_used = t;
    return t;
}

static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    return s;
}

static void set_error(struct fleet_cache *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(struct fleet_cache *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->error, sizeof c->error, fmt, ap);
    va_end(ap);
}

static const char *db_message(struct fleet_cache *c, int rc)
{
    const char *m = c->db ? sqlite3_errmsg(c->db) : NULL;
    return m && *m ? m : sqlite3_errstr(rc);
}

/* ---------------------------------------------------- XXH64 checksum */

#define P1 0x9E3779B185EBCA87ULL
#define P2 0xC2B2AE3D27D4EB4FULL
#define P3 0x165667B19E3779F9ULL
#define P4 0x85EBCA77C2B2AE63ULL
#define P5 0x27D4EB2F165667C5ULL

static inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static inline uint64_t read64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

static inline uint32_t read32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap32(v);
#endif
    return v;
}

static inline uint64_t xxh_round(uint64_t acc, uint64_t in)
{
    acc += in * P2;
    acc = rotl64(acc, 31);
    return acc * P1;
}

static inline uint64_t xxh_merge(uint64_t acc, uint64_t v)
{
    acc ^= xxh_round(0, v);
    return acc * P1 + P4;
}

static uint64_t xxh64(const void *data, size_t len, uint64_t seed)
{
    const unsigned char *p = data, *end = p + len;
    uint64_t h;
    if (len >= 32) {
        uint64_t v1 = seed + P1 + P2, v2 = seed + P2, v3 = seed, v4 = seed - P1;
        do {
            v1 = xxh_round(v1, read64(p));
            v2 = xxh_round(v2, read64(p + 8));
            v3 = xxh_round(v3, read64(p + 16));
            v4 = xxh_round(v4, read64(p + 24));
            p += 32;
        } while (end - p >= 32);
        h = rotl64(v1, 1) + rotl64(v2, 7) + rotl64(v3, 12) + rotl64(v4, 18);
        h = xxh_merge(h, v1);
        h = xxh_merge(h, v2);
        h = xxh_merge(h, v3);
        h = xxh_merge(h, v4);
    } else {
        h = seed + P5;
    }
    h += (uint64_t)len;
    /* Compare what is left, never form a pointer past the end. */
    for (; end - p >= 8; p += 8) {
        h ^= xxh_round(0, read64(p));
        h = rotl64(h, 27) * P1 + P4;
    }
    if (end - p >= 4) {
        h ^= (uint64_t)read32(p) * P1;
        h = rotl64(h, 23) * P2 + P3;
        p += 4;
    }
    for (; p < end; p++) {
        h ^= (uint64_t)*p * P5;
        h = rotl64(h, 11) * P1;
    }
    h ^= h >> 33;
    h *= P2;
    h ^= h >> 29;
    h *= P3;
    h ^= h >> 32;
    return h;
}

/* Chained over every field, each hash seeding the next; an absent field
 * hashes differently from an empty one. */
static uint64_t field_hash(uint64_t seed, const void *p, size_t len, bool present)
{
    return present ? xxh64(p, len, seed) : xxh64("\xff", 1, seed ^ P3);
}

static int64_t entry_checksum(const char *url, const char *cred, const char *etag, size_t etag_len,
                              const char *lm, size_t lm_len, const void *headers, size_t headers_len,
                              const void *body, size_t body_len)
{
    uint64_t h = SCHEMA_VERSION;
    h = field_hash(h, url, strlen(url), true);
    h = field_hash(h, cred, strlen(cred), true);
    h = field_hash(h, etag, etag_len, etag != NULL);
    h = field_hash(h, lm, lm_len, lm != NULL);
    h = field_hash(h, headers, headers_len, true);
    h = field_hash(h, body, body_len, true);
    int64_t s;
    memcpy(&s, &h, sizeof s);
    return s;
}

/* ------------------------------------------------------ error classes */

enum err_class { E_OK, E_CORRUPT, E_WRITE, E_BUSY, E_OTHER };

static enum err_class classify(int rc)
{
    if (rc == SQLITE_IOERR_SHORT_READ)
        return E_CORRUPT; /* a truncated file */
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_ROW:
    case SQLITE_DONE:
        return E_OK;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return E_CORRUPT;
    case SQLITE_FULL:
    case SQLITE_READONLY:
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
    case SQLITE_AUTH:
    case SQLITE_NOLFS:
    case SQLITE_PROTOCOL:
        return E_WRITE;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return E_BUSY;
    default:
        return E_OTHER;
    }
}

/* ------------------------------------------------------- file system */

/* Creates the folders leading to path (mode 0700 for those it makes). */
static int make_parents(const char *path)
{
    char *dir = strdup(path);
    if (!dir)
        return -1;
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir) {
        free(dir);
        return 0;
    }
    *slash = 0;
    struct stat st;
    if (stat(dir, &st) == 0) {
        free(dir);
        return S_ISDIR(st.st_mode) ? 0 : (errno = ENOTDIR, -1);
    }
    for (char *p = dir + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
            int e = errno;
            free(dir);
            errno = e;
            return -1;
        }
        *p = '/';
    }
    int rc = mkdir(dir, 0700) != 0 && errno != EEXIST ? -1 : 0;
    int e = errno;
    free(dir);
    errno = e;
    return rc;
}

static bool dir_writable(const char *path)
{
    char *dir = strdup(path);
    if (!dir)
        return false;
    char *slash = strrchr(dir, '/');
    bool ok;
    if (!slash)
        ok = faccessat(AT_FDCWD, ".", W_OK | X_OK, AT_EACCESS) == 0;
    else if (slash == dir)
        ok = faccessat(AT_FDCWD, "/", W_OK | X_OK, AT_EACCESS) == 0;
    else {
        *slash = 0;
        ok = faccessat(AT_FDCWD, dir, W_OK | X_OK, AT_EACCESS) == 0;
    }
    free(dir);
    return ok;
}

static long long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size : 0;
}

/* Moves the damaged file (and its WAL and journal) to PATH.corrupt-EPOCH,
 * and drops its shared-memory index. Returns the new name (malloc'd), or
 * "" (malloc'd) if PATH no longer names the file this connection opened
 * (another process already replaced it), or NULL on failure. */
static char *set_aside(struct fleet_cache *c)
{
    struct stat st;
    if (stat(c->path, &st) != 0)
        return errno == ENOENT ? strdup("") : NULL;
    if (c->ino && (st.st_dev != c->dev || st.st_ino != c->ino))
        return strdup("");
    long long epoch = (long long)time(NULL);
    char *aside = NULL;
    for (int n = 0; n < 100; n++) {
        free(aside);
        aside = n ? xasprintf("%s.corrupt-%lld.%d", c->path, epoch, n) : xasprintf("%s.corrupt-%lld", c->path, epoch);
        if (!aside)
            return NULL;
        if (access(aside, F_OK) != 0)
            break;
    }
    if (rename(c->path, aside) != 0) {
        int e = errno;
        free(aside);
        errno = e;
        return NULL;
    }
    static const char *const sidecars[] = {"-wal", "-journal"};
    for (size_t i = 0; i < sizeof sidecars / sizeof *sidecars; i++) {
        char *from = xasprintf("%s%s", c->path, sidecars[i]);
        char *to = xasprintf("%s%s", aside, sidecars[i]);
        if (from && to && rename(from, to) != 0 && errno != ENOENT)
            unlink(from); /* it must not be applied to the new file */
        free(from);
        free(to);
    }
    char *shm = xasprintf("%s-shm", c->path);
    if (shm)
        unlink(shm);
    free(shm);
    return aside;
}

/* ------------------------------------------------------ opening */

/* OPEN_UNREADABLE: the file exists but cannot be read; it is set aside
 * like a damaged one. */
enum open_result { OPEN_OK, OPEN_DAMAGED, OPEN_UNREADABLE, OPEN_BUSY, OPEN_FAILED };

static void close_db(struct fleet_cache *c)
{
    for (int i = 0; i < NSTMT; i++) {
        sqlite3_finalize(c->st[i]);
        c->st[i] = NULL;
    }
    if (c->db)
        sqlite3_close_v2(c->db);
    c->db = NULL;
}

/* Runs one statement that returns at most one row; the first column of
 * that row as an integer in *out (if out), or as text into text. */
static int query1(struct fleet_cache *c, const char *sql, long long *out, char *text, size_t textlen)
{
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(c->db, sql, -1, &s, NULL);
    if (rc != SQLITE_OK)
        return rc;
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        if (out)
            *out = sqlite3_column_int64(s, 0);
        if (text) {
            const unsigned char *t = sqlite3_column_text(s, 0);
            snprintf(text, textlen, "%s", t ? (const char *)t : "");
        }
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        rc = SQLITE_OK;
    }
    sqlite3_finalize(s);
    return rc;
}

static int fill_random(unsigned char *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = getrandom(buf + got, len - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        got += (size_t)n;
    }
    if (got == len)
        return 0;
    /* No getrandom (old kernel, seccomp): the device. */
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    got = 0;
    while (got < len) {
        ssize_t n = read(fd, buf + got, len - got);
        if (n <= 0) {
            if (n < 0 && errno == EINTR)
                continue;
            break;
        }
        got += (size_t)n;
    }
    close(fd);
    return got == len ? 0 : -1;
}

/* The file's application id, schema version and number of schema objects,
 * read in one statement so that they come from one snapshot (another
 * process may be creating the schema meanwhile). */
static int read_identity(struct fleet_cache *c, long long *appid, long long *version, long long *tables)
{
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(c->db,
                                "SELECT (SELECT application_id FROM pragma_application_id),"
                                " (SELECT user_version FROM pragma_user_version),"
                                " (SELECT count(*) FROM sqlite_schema)",
                                -1, &s, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        *appid = sqlite3_column_int64(s, 0);
        *version = sqlite3_column_int64(s, 1);
        *tables = sqlite3_column_int64(s, 2);
        rc = SQLITE_OK;
    }
    sqlite3_finalize(s);
    return rc;
}

/* Creates the schema in a new file (or one of an older schema version),
 * under the write lock, unless another process did it meanwhile. */
static int create_schema(struct fleet_cache *c, bool *damaged)
{
    int rc = sqlite3_exec(c->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return rc;
    long long version = 0, appid = 0, tables = 0;
    if ((rc = read_identity(c, &appid, &version, &tables)) != SQLITE_OK)
        goto fail;
    if (appid == APP_ID && version == SCHEMA_VERSION) {
        rc = sqlite3_exec(c->db, "COMMIT", NULL, NULL, NULL);
        goto done;
    }
    if (appid == APP_ID && version < SCHEMA_VERSION) {
        /* An older layout of our own: its entries are dropped. */
        rc = sqlite3_exec(c->db,
                          "DROP TABLE IF EXISTS entries; DROP TABLE IF EXISTS bodies; DROP TABLE IF EXISTS meta;",
                          NULL, NULL, NULL);
        if (rc != SQLITE_OK)
            goto fail;
    } else if (tables != 0 || appid != 0 || version != 0) {
        set_error(c, "it is not a gitfleet cache");
        rc = SQLITE_ERROR;
        goto fail;
    }
    unsigned char salt[32];
    if (c->keep_salt)
        memcpy(salt, c->salt, sizeof salt);
    else if (fill_random(salt, sizeof salt) != 0) {
        set_error(c, "no random bytes for the cache's salt");
        rc = SQLITE_ERROR;
        goto fail;
    }
    char pragmas[128];
    snprintf(pragmas, sizeof pragmas, "PRAGMA application_id = %d; PRAGMA user_version = %d;", APP_ID,
             SCHEMA_VERSION);
    if ((rc = sqlite3_exec(c->db, SCHEMA, NULL, NULL, NULL)) != SQLITE_OK ||
        (rc = sqlite3_exec(c->db, pragmas, NULL, NULL, NULL)) != SQLITE_OK)
        goto fail;
    sqlite3_stmt *s = NULL;
    rc = sqlite3_prepare_v2(c->db,
                            "INSERT INTO meta(key, value) VALUES('salt', ?1), ('bytes', 0), ('created_at', ?2)",
                            -1, &s, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_blob(s, 1, salt, sizeof salt, SQLITE_TRANSIENT);
        sqlite3_bind_double(s, 2, now_epoch());
        rc = sqlite3_step(s);
        rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
    }
    sqlite3_finalize(s);
    explicit_bzero(salt, sizeof salt);
    if (rc != SQLITE_OK)
        goto fail;
    rc = sqlite3_exec(c->db, "COMMIT", NULL, NULL, NULL);
done:
    if (rc != SQLITE_OK)
        goto fail;
    return SQLITE_OK;
fail:
    if (classify(rc) == E_CORRUPT)
        *damaged = true;
    if (!c->error[0])
        set_error(c, "%s", db_message(c, rc));
    sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

/* Opens c->path into c->db, checks it and readies the statements. */
static enum open_result open_db_once(struct fleet_cache *c)
{
    c->error[0] = 0;
    c->ino = 0;
    c->dev = 0;
    struct stat st;
    bool existed = stat(c->path, &st) == 0;
    if (!existed) {
        /* Made here, so that it is private from the start: SQLite would
         * create it 0644, and its WAL and shm files take its mode. */
        int fd = open(c->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd >= 0)
            close(fd);
        else if (errno != EEXIST) {
            set_error(c, "cannot create %s: %s", c->path, strerror(errno));
            return OPEN_FAILED;
        }
    } else if (!S_ISREG(st.st_mode)) {
        set_error(c, "%s is not a regular file", c->path);
        return OPEN_FAILED;
    }

    int rc = sqlite3_open_v2(c->path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK)
        goto fail;
    if (stat(c->path, &st) == 0) {
        c->dev = st.st_dev;
        c->ino = st.st_ino;
    }
    sqlite3_extended_result_codes(c->db, 1);
    sqlite3_busy_timeout(c->db, BUSY_TIMEOUT_MS);

    /* Whose file is it? (A file that is not a database fails here.) A
     * database of something else is left as it is, not even switched to
     * WAL: the path is probably a mistake. */
    long long version = 0, appid = 0, tables = 0;
    if ((rc = read_identity(c, &appid, &version, &tables)) != SQLITE_OK)
        goto fail;
    if (appid != APP_ID) {
        if (appid != 0 || version != 0 || tables != 0) {
            set_error(c, "it is not a gitfleet cache");
            close_db(c);
            return OPEN_FAILED;
        }
    } else if (version > SCHEMA_VERSION) {
        set_error(c, "it was made by a newer gitfleet (cache schema %lld)", version);
        close_db(c);
        return OPEN_FAILED;
    }

    char mode[32] = "";
    if ((rc = query1(c, "PRAGMA journal_mode = WAL", NULL, mode, sizeof mode)) != SQLITE_OK)
        goto fail;
    /* NORMAL: in WAL mode a commit is durable at the next checkpoint, and
     * the file cannot be damaged by a crash. secure_delete FAST: Debian
     * builds SQLite with it ON, which writes every freed page over with
     * zeros (an eviction then costs as many writes as a store); FAST still
     * clears freed content where that costs no extra write. The WAL is
     * cut back to 16 MiB after a large transaction (clear, VACUUM). */
    if ((rc = sqlite3_exec(c->db,
                           "PRAGMA synchronous = NORMAL; PRAGMA secure_delete = FAST;"
                           " PRAGMA journal_size_limit = 16777216;",
                           NULL, NULL, NULL)) != SQLITE_OK)
        goto fail;
    bool readonly = sqlite3_db_readonly(c->db, "main") == 1;

    /* The structure check: of the whole file while it is not (yet) a cache
     * of ours, else of the small tables and indexes only. Checking the
     * bodies table would read every page of the file (~0.1 s per 256 MiB
     * when cached, seconds when not); damage there is caught when it is
     * read, by SQLite or by the entry's checksum. */
    static const char *const checks_ours[] = {"PRAGMA quick_check(entries)", "PRAGMA quick_check(meta)", NULL};
    static const char *const checks_other[] = {"PRAGMA quick_check", NULL};
    const char *const *checks = appid == APP_ID && version == SCHEMA_VERSION ? checks_ours : checks_other;
    for (; *checks; checks++) {
        char check[256] = "";
        if ((rc = query1(c, *checks, NULL, check, sizeof check)) != SQLITE_OK)
            goto fail;
        if (strcmp(check, "ok") != 0) {
            for (char *nl = check; (nl = strchr(nl, '\n'));)
                *nl = ' ';
            set_error(c, "quick_check: %s", check);
            close_db(c);
            return OPEN_DAMAGED;
        }
    }
    if (appid != APP_ID || version != SCHEMA_VERSION) {
        if (readonly) {
            set_error(c, "%s is read-only and holds no gitfleet cache", c->path);
            close_db(c);
            return OPEN_FAILED;
        }
        bool damaged = false;
        rc = create_schema(c, &damaged);
        if (rc != SQLITE_OK) {
            close_db(c);
            return damaged ? OPEN_DAMAGED : classify(rc) == E_BUSY ? OPEN_BUSY : OPEN_FAILED;
        }
    }

    /* The salt: 32 bytes, or the file is not in a state we wrote. */
    sqlite3_stmt *s = NULL;
    rc = sqlite3_prepare_v2(c->db, "SELECT value FROM meta WHERE key = 'salt'", -1, &s, NULL);
    if (rc != SQLITE_OK)
        goto fail;
    rc = sqlite3_step(s);
    bool salt_ok = rc == SQLITE_ROW && sqlite3_column_type(s, 0) == SQLITE_BLOB &&
                   sqlite3_column_bytes(s, 0) == (int)sizeof c->salt;
    if (salt_ok)
        memcpy(c->salt, sqlite3_column_blob(s, 0), sizeof c->salt);
    sqlite3_finalize(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        goto fail;
    if (!salt_ok) {
        set_error(c, "the cache has no valid salt");
        close_db(c);
        return OPEN_DAMAGED;
    }

    for (int i = 0; i < NSTMT; i++)
        if ((rc = sqlite3_prepare_v3(c->db, STMT_SQL[i], -1, SQLITE_PREPARE_PERSISTENT, &c->st[i], NULL)) !=
            SQLITE_OK)
            goto fail;
    /* The byte count the triggers keep: every process sharing the file
     * reads it inside its store's transaction, so eviction never scans. */
    rc = sqlite3_step(c->st[ST_TOTAL]);
    sqlite3_reset(c->st[ST_TOTAL]);
    if (rc != SQLITE_ROW) {
        if (rc == SQLITE_DONE) {
            set_error(c, "the cache has no byte count");
            close_db(c);
            return OPEN_DAMAGED;
        }
        goto fail;
    }
    c->no_writes = c->no_writes || readonly;
    return OPEN_OK;

fail:
    if (!c->error[0])
        set_error(c, "%s", db_message(c, rc));
    close_db(c);
    if (classify(rc) == E_CORRUPT)
        return OPEN_DAMAGED;
    if (classify(rc) == E_BUSY)
        return OPEN_BUSY;
    /* A file that exists but cannot be opened or read, in a folder we may
     * write to: unreadable, and set aside like a damaged one. A folder we
     * cannot write to (no room for the WAL), a busy file: no cache. */
    int primary = rc & 0xff;
    if (existed && (primary == SQLITE_CANTOPEN || primary == SQLITE_PERM || primary == SQLITE_AUTH) &&
        faccessat(AT_FDCWD, c->path, R_OK | W_OK, AT_EACCESS) != 0 && dir_writable(c->path))
        return OPEN_UNREADABLE;
    return OPEN_FAILED;
}

/* open_db_once, again while the file is busy, for up to the busy timeout:
 * SQLite's busy handler does not cover every wait at open (switching a new
 * file to WAL while another process does the same, for one, fails at once
 * rather than risk a deadlock). */
static enum open_result open_db(struct fleet_cache *c)
{
    struct timespec start, now, pause = {0, 20 * 1000000L};
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        enum open_result r = open_db_once(c);
        if (r != OPEN_BUSY)
            return r;
        clock_gettime(CLOCK_MONOTONIC, &now);
        double waited = (double)(now.tv_sec - start.tv_sec) + (double)(now.tv_nsec - start.tv_nsec) / 1e9;
        if (waited * 1000 >= BUSY_TIMEOUT_MS)
            return OPEN_FAILED;
        nanosleep(&pause, NULL);
    }
}

/* Moves the damaged file aside (why: what is wrong with it) and opens a
 * new one in its place. */
static enum open_result replace_damaged(struct fleet_cache *c, const char *why_in, bool unreadable)
{
    char why[sizeof c->error];
    snprintf(why, sizeof why, "%s", why_in);
    close_db(c);
    char *aside = set_aside(c);
    if (!aside) {
        set_error(c, "it is damaged (%s) and cannot be moved aside: %s", why, strerror(errno));
        return OPEN_FAILED;
    }
    if (*aside)
        fleet_log(FLEET_LOG_WARN, "cache file %s %s; moved it to %s and started a new one", c->path,
                  unreadable ? "cannot be read" : "is damaged", aside);
    fleet_log(FLEET_LOG_DEBUG, "cache file %s: %s", c->path, why);
    free(aside);
    enum open_result r = open_db(c);
    return r == OPEN_OK ? r : OPEN_FAILED;
}

/* Opens, and on a damaged file moves it aside and opens a new one. */
static enum open_result open_or_replace(struct fleet_cache *c)
{
    enum open_result r = open_db(c);
    if (r == OPEN_DAMAGED || r == OPEN_UNREADABLE)
        r = replace_damaged(c, c->error, r == OPEN_UNREADABLE);
    return r;
}

static void free_cache(struct fleet_cache *c)
{
    for (int i = 0; i < c->nspares; i++)
        free(c->spares[i].data);
    explicit_bzero(c->salt, sizeof c->salt);
    mtx_destroy(&c->lock);
    cnd_destroy(&c->wake_writer);
    cnd_destroy(&c->written);
    free(c->path);
    free(c);
}

struct fleet_cache *fleet_cache_open(const char *path, long long max_size)
{
    if (!path || !*path) {
        fleet_log(FLEET_LOG_WARN, "no cache path; running without a cache");
        return NULL;
    }
    struct fleet_cache *c = calloc(1, sizeof *c);
    if (!c || !(c->path = strdup(path))) {
        free(c);
        fleet_log(FLEET_LOG_WARN, "out of memory opening the cache; running without one");
        return NULL;
    }
    c->max_size = max_size > 0 ? max_size : DEFAULT_MAX_SIZE;
    c->pending_tail = &c->pending;
    mtx_init(&c->lock, mtx_plain);
    cnd_init(&c->wake_writer);
    cnd_init(&c->written);
    if (make_parents(path) != 0) {
        fleet_log(FLEET_LOG_WARN, "cannot create the folder of cache file %s (%s); running without a cache", path,
                  strerror(errno));
        free_cache(c);
        return NULL;
    }
    if (open_or_replace(c) != OPEN_OK) {
        fleet_log(FLEET_LOG_WARN, "cannot use cache file %s (%s); running without a cache", path, c->error);
        free_cache(c);
        return NULL;
    }
    return c;
}

void fleet_cache_close(struct fleet_cache *c)
{
    if (!c)
        return;
    stop_writer(c);
    /* Stores dropped since the writer's last batch: counted now. */
    long long unsaved = c->dropped - c->dropped_saved;
    if (unsaved > 0 && c->db && !c->dead && !c->no_writes && add_dropped(c, unsaved) != SQLITE_DONE)
        fleet_log(FLEET_LOG_DEBUG, "cache file %s: cannot count dropped stores: %s", c->path, sqlite3_errmsg(c->db));
    if (c->dropped > 0)
        fleet_log(FLEET_LOG_INFO,
                  "cache: %lld response%s not stored (the disk fell behind the network, or the file stayed"
                  " locked); they are fetched in full next time",
                  c->dropped, c->dropped == 1 ? " was" : "s were");
    close_db(c);
    free_cache(c);
}

/* ------------------------------------------------- failures mid-run */

/* The file turned out damaged during the run: replaced once, after which
 * a second damage turns the cache off. */
static void recover(struct fleet_cache *c, const char *why)
{
    if (c->recovered) {
        close_db(c);
        c->dead = true;
        fleet_log(FLEET_LOG_WARN, "cache file %s is damaged again (%s); not using it for the rest of this run",
                  c->path, why);
        return;
    }
    c->recovered = true;
    c->keep_salt = true;
    enum open_result r = replace_damaged(c, why, false);
    c->keep_salt = false;
    file_replaced(c);
    if (r != OPEN_OK) {
        close_db(c);
        c->dead = true;
        fleet_log(FLEET_LOG_WARN, "cannot use cache file %s (%s); running without a cache", c->path, c->error);
    }
}

/* Writes stop for the rest of the run; the first time, with a warning. */
static void stop_writes(struct fleet_cache *c, const char *why)
{
    c->no_writes = true;
    if (c->write_warned)
        return;
    c->write_warned = true;
    fleet_log(FLEET_LOG_WARN, "cannot write to cache file %s (%s); responses are not stored for the rest of this run",
              c->path, why);
}

/* A statement of op failed with rc (msg: SQLite's message, taken before
 * any rollback). writing: the statement was meant to change the file. */
static void failed(struct fleet_cache *c, int rc, const char *msg, const char *op, bool writing)
{
    char why[sizeof c->error];
    snprintf(why, sizeof why, "%s: %s", op, msg);
    set_error(c, "%s", why);
    if (rc == SQLITE_READONLY_DBMOVED && !c->recovered) {
        /* Another process found the file damaged and moved it aside: the
         * new file at the same path is the one to use. */
        c->recovered = true;
        close_db(c);
        file_replaced(c);
        if (open_db(c) != OPEN_OK) {
            close_db(c);
            c->dead = true;
            fleet_log(FLEET_LOG_WARN, "cannot use cache file %s (%s); running without a cache", c->path, c->error);
        }
        return;
    }
    switch (classify(rc)) {
    case E_CORRUPT:
        recover(c, why);
        break;
    case E_WRITE:
        if (writing)
            stop_writes(c, msg);
        else /* a read that fails is a miss */
            fleet_log(FLEET_LOG_DEBUG, "cache file %s: %s", c->path, why);
        break;
    default:
        fleet_log(FLEET_LOG_DEBUG, "cache file %s: %s", c->path, why);
        break;
    }
}

/* Steps a statement that returns no row and resets it. */
static int run(sqlite3_stmt *s)
{
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    return rc == SQLITE_ROW ? SQLITE_DONE : rc;
}

static void rollback(struct fleet_cache *c)
{
    if (c->db && !sqlite3_get_autocommit(c->db))
        run(c->st[ST_ROLLBACK]);
}

/* ------------------------------------------------------------ keys */

static void to_hex(const unsigned char *d, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[d[i] >> 4];
        out[2 * i + 1] = digits[d[i] & 15];
    }
    out[2 * n] = 0;
}

void fleet_cache_credential(struct fleet_cache *c, const char *secret, size_t len, char out[65])
{
    out[0] = 0;
    if (!c || !secret || len == 0)
        return; /* anonymous */
    struct fleet_sha256 s;
    unsigned char d[32];
    fleet_sha256_init(&s);
    fleet_sha256_update(&s, c->salt, sizeof c->salt);
    fleet_sha256_update(&s, secret, len);
    fleet_sha256_final(&s, d);
    to_hex(d, sizeof d, out);
    explicit_bzero(d, sizeof d);
}

/* ------------------------------------------------------------ lookups */

static char *copy_bytes(const void *p, size_t n)
{
    char *s = malloc(n + 1);
    if (s) {
        if (n)
            memcpy(s, p, n);
        s[n] = 0;
    }
    return s;
}

void fleet_cache_entry_free(struct fleet_cache_entry *e)
{
    if (!e)
        return;
    free(e->etag);
    free(e->last_modified);
    free(e->body);
    free(e->headers);
    memset(e, 0, sizeof *e);
}

bool fleet_cache_lookup(struct fleet_cache *c, const char *url, const char *credential, struct fleet_cache_entry *e)
{
    if (e)
        memset(e, 0, sizeof *e);
    if (!c || c->dead || !url || !e)
        return false;
    const char *cred = credential ? credential : "";
    settle_writer(c);
    if (c->dead)
        return false;
    int queued = lookup_pending(c, url, cred, e);
    if (queued >= 0)
        return queued == 1;
    sqlite3_stmt *s = c->st[ST_LOOKUP];
    sqlite3_bind_text(s, 1, url, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, cred, -1, SQLITE_STATIC);
    const char *op = "lookup", *damage = NULL;
    sqlite3_blob *blob = NULL;
    int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE) {
        sqlite3_reset(s);
        return false;
    }
    if (rc != SQLITE_ROW)
        goto fail;
    if (sqlite3_column_type(s, 7) == SQLITE_NULL) {
        damage = "an entry has lost its body";
        goto damaged;
    }
    sqlite3_int64 id = sqlite3_column_int64(s, 0);
    const char *etag = (const char *)sqlite3_column_text(s, 1);
    if (etag && !(e->etag = copy_bytes(etag, (size_t)sqlite3_column_bytes(s, 1))))
        goto oom;
    const char *lm = (const char *)sqlite3_column_text(s, 2);
    if (lm && !(e->last_modified = copy_bytes(lm, (size_t)sqlite3_column_bytes(s, 2))))
        goto oom;
    int64_t sum = sqlite3_column_int64(s, 3);
    const void *headers = sqlite3_column_blob(s, 4);
    e->headers_len = (size_t)sqlite3_column_bytes(s, 4);
    if ((!headers && e->headers_len) || !(e->headers = copy_bytes(headers, e->headers_len)))
        goto oom;
    sqlite3_int64 body_len = sqlite3_column_int64(s, 5);
    if (body_len < 0 || (uint64_t)body_len >= SIZE_MAX / 2 || body_len > INT32_MAX) {
        damage = "an entry has an impossible size";
        goto damaged;
    }
    e->body_len = (size_t)body_len;
    sqlite3_int64 codec = sqlite3_column_int64(s, 8), plain_size = sqlite3_column_int64(s, 9);
    if (codec < 0 || codec > 1 || plain_size < 0 || plain_size > INT32_MAX) {
        damage = "an entry has an unknown encoding or size";
        goto damaged;
    }
    if (sqlite3_column_type(s, 6) != SQLITE_NULL) {
        /* A small body, read along with the row. */
        const void *body = sqlite3_column_blob(s, 6);
        if ((size_t)sqlite3_column_bytes(s, 6) != e->body_len) {
            damage = "an entry's body changed size";
            goto damaged;
        }
        if ((!body && e->body_len) || !(e->body = copy_bytes(body, e->body_len)))
            goto oom;
    } else {
        /* A large one straight into the caller's buffer, without the copy
         * SQLite would make first; within the same read transaction (the
         * lookup statement is still active), so it is this row's body. */
        if (!(e->body = malloc(e->body_len + 1)))
            goto oom;
        e->body[e->body_len] = 0;
        op = "lookup body";
        if ((rc = sqlite3_blob_open(c->db, "main", "bodies", "body", id, 0, &blob)) != SQLITE_OK)
            goto fail;
        if (sqlite3_blob_bytes(blob) != (int)e->body_len) {
            damage = "an entry's body changed size";
            goto damaged;
        }
        if ((rc = sqlite3_blob_read(blob, e->body, (int)e->body_len, 0)) != SQLITE_OK)
            goto fail;
        sqlite3_blob_close(blob);
        blob = NULL;
    }
    if (entry_checksum(url, cred, e->etag, e->etag ? strlen(e->etag) : 0, e->last_modified,
                       e->last_modified ? strlen(e->last_modified) : 0, e->headers, e->headers_len, e->body,
                       e->body_len) != sum) {
        damage = "an entry does not match its checksum";
        goto damaged;
    }
    if (codec == 1) {
        /* Stored deflated: the caller gets the body as it came. */
        char *plain = malloc((size_t)plain_size + 1);
        if (!plain)
            goto oom;
        if (!fleet_zunpack(e->body, e->body_len, plain, (size_t)plain_size)) {
            free(plain);
            damage = "an entry's body does not inflate to its size";
            goto damaged;
        }
        plain[plain_size] = 0;
        free(e->body);
        e->body = plain;
        e->body_len = (size_t)plain_size;
    }
    sqlite3_reset(s);
    return true;

damaged:
    sqlite3_blob_close(blob);
    sqlite3_reset(s);
    fleet_cache_entry_free(e);
    recover(c, damage);
    return false;
oom:
    sqlite3_blob_close(blob);
    sqlite3_reset(s);
    fleet_cache_entry_free(e);
    return false;
fail:;
    char msg[200];
    snprintf(msg, sizeof msg, "%s", db_message(c, rc));
    sqlite3_blob_close(blob);
    sqlite3_reset(s);
    fleet_cache_entry_free(e);
    failed(c, rc, msg, op, false);
    return false;
}

int fleet_cache_credentials_for(struct fleet_cache *c, const char *url, char (*out)[65], int max)
{
    if (!c || c->dead || !url || !out || max <= 0)
        return 0;
    sqlite3_stmt *s = c->st[ST_CREDS];
    sqlite3_bind_text(s, 1, url, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 2, max);
    int n = 0, rc = SQLITE_DONE;
    while (n < max && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        const char *cred = (const char *)sqlite3_column_text(s, 0);
        if (cred && sqlite3_column_bytes(s, 0) < 65)
            snprintf(out[n++], 65, "%s", cred);
    }
    if (n < max && rc != SQLITE_DONE) {
        char msg[200];
        snprintf(msg, sizeof msg, "%s", db_message(c, rc));
        sqlite3_reset(s);
        failed(c, rc, msg, "lookup", false);
        return n;
    }
    sqlite3_reset(s);
    return n;
}

/* ------------------------------------------------------------ stores */

/* Reads the byte count kept by the triggers (inside the transaction). */
static int read_total(struct fleet_cache *c, long long *total)
{
    sqlite3_stmt *s = c->st[ST_TOTAL];
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        *total = sqlite3_column_int64(s, 0);
        rc = SQLITE_DONE;
    } else if (rc == SQLITE_DONE) {
        rc = SQLITE_CORRUPT; /* the counter row is gone: not a file we wrote */
    }
    sqlite3_reset(s);
    return rc;
}

/* Deletes least recently used entries, sparing the row keep, until the
 * total is at most 90 % of max_size. Within the store's transaction. */
static int evict(struct fleet_cache *c, sqlite3_int64 keep, long long *total)
{
    long long target = c->max_size - c->max_size / 10;
    sqlite3_int64 ids[EVICT_BATCH];
    while (*total > target) {
        sqlite3_stmt *s = c->st[ST_VICTIMS];
        sqlite3_bind_int(s, 1, EVICT_BATCH + 1);
        long long freed = 0, need = *total - target;
        int n = 0, rc = SQLITE_DONE;
        while (n < EVICT_BATCH && freed < need && (rc = sqlite3_step(s)) == SQLITE_ROW) {
            sqlite3_int64 id = sqlite3_column_int64(s, 0);
            if (id == keep)
                continue;
            ids[n++] = id;
            freed += sqlite3_column_int64(s, 1);
        }
        sqlite3_reset(s);
        if (n < EVICT_BATCH && freed < need && rc != SQLITE_DONE)
            return rc;
        if (n == 0)
            break; /* only the kept entry is left */
        for (int i = 0; i < n; i++) {
            sqlite3_bind_int64(c->st[ST_EVICT], 1, ids[i]);
            if ((rc = run(c->st[ST_EVICT])) != SQLITE_DONE)
                return rc;
        }
        if ((rc = read_total(c, total)) != SQLITE_DONE)
            return rc;
    }
    return SQLITE_DONE;
}

/* ------------------------------------------------------------ writes
 *
 * The event loop never writes to the file: a transfer must not wait for
 * the disk (nor for another process's write lock). A store, touch or memo
 * joins a queue, a store's headers and body copied once, into one block;
 * a writer thread with a connection of its own takes what is queued, a
 * batch at a time, deflates the plain bodies (zpack.h) and writes the
 * batch in one transaction, waiting for another process's lock if it must.
 * Lookups and memo reads see the queue and the batch being written.
 *
 * The queue holds QUEUE_MAX bytes at most: past that the oldest queued
 * stores are dropped (never a touch or memo), and counted in the file
 * (meta 'dropped', shown by `gitfleet cache stats`). Close waits up to
 * CLOSE_WAIT_S for the queue to drain, then drops what is left. */

#define QUEUE_MAX (64u << 20)
#define BATCH_MAX (8u << 20)
#define CLOSE_WAIT_S 5
#define BUSY_RETRY_MS 20

enum pending_kind { PENDING_STORE, PENDING_TOUCH, PENDING_MEMO };

/* One queued write; it owns its strings and its data block. */
struct pending {
    struct pending *next;
    enum pending_kind kind;
    char *url;                   /* the memo's key for PENDING_MEMO */
    char cred[65];
    char *etag, *last_modified;
    char *text;                  /* PENDING_MEMO: "<epoch> <value>" */
    char *data;                  /* headers, then body, then a NUL */
    size_t data_cap;             /* data's allocated size */
    size_t headers_len, body_len;
    bool too_large;              /* a store beyond max_size: deletes the entry */
    double used_at;
    /* The writer's alone, while the entry is in its batch: */
    bool pack_tried;
    unsigned char *packed;       /* the body deflated, or NULL: stored as is */
    size_t packed_len;
};

static size_t pending_size(const struct pending *p) { return sizeof *p + p->headers_len + p->body_len; }

static void pending_free(struct pending *p)
{
    free(p->url);
    free(p->etag);
    free(p->last_modified);
    free(p->text);
    free(p->data);
    free(p->packed);
    free(p);
}

static void free_list(struct pending *p)
{
    while (p) {
        struct pending *next = p->next;
        pending_free(p);
        p = next;
    }
}

/* Data blocks are recycled: copying a body into memory already touched
 * costs no page faults, where a fresh block of a few hundred KiB costs a
 * hundred of them, as much as the copy itself. Sizes are rounded up so
 * that a block fits the next pages, which are of about the same size. */
#define SPARE_BYTES (16u << 20)
#define BLOCK_ROUND (64u << 10)

static char *take_block(struct fleet_cache *c, size_t need, size_t *cap)
{
    mtx_lock(&c->lock);
    int best = -1;
    for (int i = 0; i < c->nspares; i++)
        if (c->spares[i].cap >= need && (best < 0 || c->spares[i].cap < c->spares[best].cap))
            best = i;
    if (best >= 0) {
        char *data = c->spares[best].data;
        *cap = c->spares[best].cap;
        c->spare_bytes -= *cap;
        c->spares[best] = c->spares[--c->nspares];
        mtx_unlock(&c->lock);
        return data;
    }
    mtx_unlock(&c->lock);
    *cap = need > SIZE_MAX - BLOCK_ROUND ? need : (need + BLOCK_ROUND - 1) / BLOCK_ROUND * BLOCK_ROUND;
    return malloc(*cap);
}

/* Frees a written batch, keeping its blocks for new stores. */
static void recycle_list(struct fleet_cache *c, struct pending *p)
{
    mtx_lock(&c->lock);
    for (struct pending *q = p; q; q = q->next) {
        int n = (int)(sizeof c->spares / sizeof *c->spares);
        if (q->data && q->data_cap >= BLOCK_ROUND && c->nspares < n && c->spare_bytes + q->data_cap <= SPARE_BYTES) {
            c->spares[c->nspares++] = (struct spare_block){q->data, q->data_cap};
            c->spare_bytes += q->data_cap;
            q->data = NULL;
        }
    }
    mtx_unlock(&c->lock);
    free_list(p);
}

static char *dup_or_null(const char *s, bool *ok)
{
    char *d = s ? strdup(s) : NULL;
    if (s && !d)
        *ok = false;
    return d;
}

/* A queued write owning copies of its strings; headers and body (for a
 * store) copied once, into one block. NULL when out of memory. */
static struct pending *new_pending(struct fleet_cache *c, enum pending_kind kind, const char *url,
                                   const char *cred, const char *etag, const char *last_modified, const char *text,
                                   const char *headers, size_t headers_len, const char *body, size_t body_len)
{
    struct pending *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->kind = kind;
    snprintf(p->cred, sizeof p->cred, "%s", cred ? cred : "");
    bool ok = true;
    p->url = dup_or_null(url, &ok);
    p->etag = dup_or_null(etag, &ok);
    p->last_modified = dup_or_null(last_modified, &ok);
    p->text = dup_or_null(text, &ok);
    if (kind == PENDING_STORE && ok) {
        if (headers_len + body_len + 1 <= headers_len ||
            !(p->data = take_block(c, headers_len + body_len + 1, &p->data_cap))) {
            ok = false;
        } else {
            if (headers_len)
                memcpy(p->data, headers, headers_len);
            if (body_len)
                memcpy(p->data + headers_len, body, body_len);
            p->data[headers_len + body_len] = 0;
            p->headers_len = headers_len;
            p->body_len = body_len;
        }
    }
    if (!ok) {
        pending_free(p);
        return NULL;
    }
    return p;
}

static int apply_store(struct fleet_cache *c, const struct pending *p, const char **op)
{
    sqlite3_stmt **st = c->st;
    if (p->too_large) {
        /* Too large to keep: the entry it would have replaced is stale. */
        sqlite3_bind_text(st[ST_DELETE], 1, p->url, -1, SQLITE_STATIC);
        sqlite3_bind_text(st[ST_DELETE], 2, p->cred, -1, SQLITE_STATIC);
        return run(st[ST_DELETE]);
    }
    const char *headers = p->data;
    const void *body = p->packed ? (const void *)p->packed : (const void *)(p->data + p->headers_len);
    size_t body_len = p->packed ? p->packed_len : p->body_len;
    sqlite3_stmt *s = st[ST_STORE];
    int64_t sum = entry_checksum(p->url, p->cred, p->etag, p->etag ? strlen(p->etag) : 0, p->last_modified,
                                 p->last_modified ? strlen(p->last_modified) : 0, headers, p->headers_len, body,
                                 body_len);
    sqlite3_bind_text(s, 1, p->url, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, p->cred, -1, SQLITE_STATIC);
    if (p->etag)
        sqlite3_bind_text(s, 3, p->etag, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(s, 3);
    if (p->last_modified)
        sqlite3_bind_text(s, 4, p->last_modified, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(s, 4);
    sqlite3_bind_int64(s, 5, (sqlite3_int64)(p->headers_len + body_len));
    sqlite3_bind_double(s, 6, p->used_at);
    sqlite3_bind_int64(s, 7, sum);
    sqlite3_bind_int(s, 8, p->packed ? 1 : 0);
    sqlite3_bind_int64(s, 9, (sqlite3_int64)p->body_len);
    sqlite3_int64 id = -1;
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        id = sqlite3_column_int64(s, 0);
        rc = sqlite3_step(s);
    }
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    if (rc == SQLITE_DONE && id < 0)
        rc = SQLITE_CORRUPT; /* no id returned: not a table we made */
    if (rc != SQLITE_DONE)
        return rc;
    *op = "store body";
    sqlite3_stmt *b = st[ST_BODY]; /* an upsert: a body of the same size is overwritten in place */
    sqlite3_bind_int64(b, 1, id);
    sqlite3_bind_blob64(b, 2, p->headers_len ? headers : "", p->headers_len, SQLITE_STATIC);
    sqlite3_bind_blob64(b, 3, body_len ? body : "", body_len, SQLITE_STATIC);
    rc = run(b);
    sqlite3_clear_bindings(b);
    long long total = 0;
    if (rc == SQLITE_DONE)
        rc = read_total(c, &total);
    if (rc == SQLITE_DONE && total > c->max_size) {
        *op = "evict";
        rc = evict(c, id, &total);
    }
    return rc;
}

static int apply(struct fleet_cache *c, const struct pending *p, const char **op)
{
    sqlite3_stmt *s;
    switch (p->kind) {
    case PENDING_STORE:
        *op = "store";
        return apply_store(c, p, op);
    case PENDING_TOUCH:
        *op = "touch";
        s = c->st[ST_TOUCH];
        sqlite3_bind_text(s, 1, p->url, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, p->cred, -1, SQLITE_STATIC);
        sqlite3_bind_double(s, 3, p->used_at);
        return run(s);
    case PENDING_MEMO:
        *op = "memo";
        s = c->st[ST_MEMO_SET];
        sqlite3_bind_text(s, 1, p->url, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, p->text, -1, SQLITE_STATIC);
        return run(s);
    }
    return SQLITE_MISUSE;
}

/* Adds n to the file's count of dropped stores (inside a transaction, or
 * on its own). */
static int add_dropped(struct fleet_cache *c, long long n)
{
    sqlite3_bind_int64(c->st[ST_DROPPED], 1, n);
    return run(c->st[ST_DROPPED]);
}

/* Writes the list from first, and drops more dropped stores to count, in
 * one transaction, letting SQLite's busy handler wait for another
 * process's lock. Returns SQLITE_DONE, or the failing code with the
 * transaction rolled back, *op naming the step and msg SQLite's words. */
static int write_batch(struct fleet_cache *c, const struct pending *first, long long drops, const char **op,
                       char msg[200])
{
    *op = "begin";
    int rc = run(c->st[ST_BEGIN]);
    for (const struct pending *p = first; p && rc == SQLITE_DONE; p = p->next)
        rc = apply(c, p, op);
    if (rc == SQLITE_DONE && drops > 0) {
        *op = "count dropped stores";
        rc = add_dropped(c, drops);
    }
    if (rc == SQLITE_DONE) {
        *op = "commit";
        rc = run(c->st[ST_COMMIT]);
    }
    if (rc != SQLITE_DONE) {
        snprintf(msg, 200, "%s", db_message(c, rc));
        rollback(c);
    }
    return rc;
}

/* ---------------------------------------------------- the writer thread */

/* A batch the writer could not write: kept for the caller's thread, which
 * logs and acts on it (settle_writer). Under lock. */
static void writer_failed(struct fleet_cache *c, int rc, const char *op, const char *msg)
{
    if (c->writer_rc)
        return; /* the first one says it */
    c->writer_rc = rc;
    snprintf(c->writer_why, sizeof c->writer_why, "%s: %s", op, msg);
}

/* Writes one batch with the writer's connection w (outside the lock).
 * reopen: the file was replaced since w opened it. */
static int write_out(struct fleet_cache *w, struct pending *batch, long long drops,
                     bool reopen, const char **op, char msg[200])
{
    for (int attempt = 0;; attempt++) {
        if (reopen || !w->db) {
            close_db(w);
            *op = "open";
            enum open_result r = open_db(w);
            if (r != OPEN_OK) {
                snprintf(msg, 200, "%.199s", w->error);
                return r == OPEN_DAMAGED ? SQLITE_CORRUPT : SQLITE_CANTOPEN;
            }
        }
        for (struct pending *p = batch; p; p = p->next)
            if (p->kind == PENDING_STORE && !p->too_large && !p->pack_tried) {
                p->pack_tried = true;
                fleet_zpack(p->data + p->headers_len, p->body_len, &p->packed, &p->packed_len);
            }
        int rc = write_batch(w, batch, drops, op, msg);
        /* Another process set the damaged file aside: write to the new one. */
        if (rc != SQLITE_READONLY_DBMOVED || attempt > 0)
            return rc;
        reopen = true;
    }
}

/* Detaches the oldest queued writes, up to BATCH_MAX bytes (one at least),
 * as the batch being written. Under lock. */
static struct pending *take_batch(struct fleet_cache *c)
{
    struct pending *batch = c->pending, **end = &c->pending;
    size_t bytes = 0;
    while (*end && (bytes == 0 || bytes + pending_size(*end) <= BATCH_MAX)) {
        bytes += pending_size(*end);
        end = &(*end)->next;
    }
    c->pending = *end;
    *end = NULL;
    if (!c->pending)
        c->pending_tail = &c->pending;
    c->writing = batch;
    return batch;
}

static long long count_stores(const struct pending *p)
{
    long long n = 0;
    for (; p; p = p->next)
        n += p->kind == PENDING_STORE;
    return n;
}

static int writer_main(void *arg)
{
    struct fleet_cache *c = arg, *w = c->writer_conn;
    unsigned generation = 0;
    bool first = true, broken = false;
    mtx_lock(&c->lock);
    for (;;) {
        while (!c->pending && !c->stopping)
            cnd_wait(&c->wake_writer, &c->lock);
        if (!c->pending || c->abandon)
            break;
        struct pending *batch = take_batch(c);
        long long drops = c->dropped - c->dropped_saved;
        bool reopen = !first && generation != c->generation;
        generation = c->generation;
        first = false;
        mtx_unlock(&c->lock);

        const char *op = "write";
        char msg[200] = "";
        if (reopen)
            broken = false;
        /* Broken: writes have stopped (until the file is replaced). */
        int rc = broken ? SQLITE_DONE : write_out(w, batch, drops, reopen, &op, msg);

        mtx_lock(&c->lock);
        c->writing = NULL;
        if (classify(rc) == E_BUSY && !c->abandon) {
            /* The lock stayed taken past the busy timeout: try again soon. */
            struct pending **last = &batch;
            while (*last)
                last = &(*last)->next;
            if (!(*last = c->pending))
                c->pending_tail = last;
            c->pending = batch;
            struct timespec until;
            timespec_get(&until, TIME_UTC);
            until.tv_nsec += BUSY_RETRY_MS * 1000000L;
            if (until.tv_nsec >= 1000000000L)
                until.tv_sec++, until.tv_nsec -= 1000000000L;
            cnd_broadcast(&c->written);
            cnd_timedwait(&c->wake_writer, &c->lock, &until);
            continue;
        }
        for (struct pending *p = batch; p; p = p->next)
            c->queued_bytes -= pending_size(p);
        if (rc == SQLITE_DONE && !broken) {
            c->dropped_saved += drops;
        } else if (classify(rc) == E_BUSY) {
            c->dropped += count_stores(batch); /* abandoned at close */
        } else if (rc != SQLITE_DONE) {
            writer_failed(c, rc, op, msg);
            broken = true;
        }
        mtx_unlock(&c->lock);
        recycle_list(c, batch);
        mtx_lock(&c->lock);
        cnd_broadcast(&c->written);
    }
    c->writing = NULL;
    cnd_broadcast(&c->written);
    mtx_unlock(&c->lock);
    close_db(w);
    return 0;
}

/* Starts the writer at the first write (a run that only reads, or `cache
 * stats`, has no thread). */
static bool start_writer(struct fleet_cache *c)
{
    if (c->writer_started)
        return true;
    struct fleet_cache *w = calloc(1, sizeof *w);
    if (!w || !(w->path = strdup(c->path))) {
        free(w);
        return false;
    }
    w->max_size = c->max_size;
    c->writer_conn = w;
    /* Signals are the event loop's (SIGINT, SIGTERM, the script timeout):
     * the writer starts with all of them blocked, so none lands on it. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = thrd_create(&c->writer, writer_main, c);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != thrd_success) {
        free(w->path);
        free(w);
        c->writer_conn = NULL;
        return false;
    }
    c->writer_started = true;
    return true;
}

/* Waits, up to seconds, until nothing is queued or being written.
 * Returns true if so. Under lock. */
static bool wait_written(struct fleet_cache *c, int seconds)
{
    struct timespec until;
    timespec_get(&until, TIME_UTC);
    until.tv_sec += seconds;
    while ((c->pending || c->writing) && c->writer_started)
        if (cnd_timedwait(&c->written, &c->lock, &until) == thrd_timedout)
            break;
    return !c->pending && !c->writing;
}

/* Acts, on the caller's thread, on what the writer met: a damaged file is
 * replaced (once), any other failure stops writes with one warning. */
static void settle_writer(struct fleet_cache *c)
{
    mtx_lock(&c->lock);
    int rc = c->writer_rc;
    char why[sizeof c->writer_why];
    snprintf(why, sizeof why, "%s", c->writer_why);
    c->writer_rc = 0;
    mtx_unlock(&c->lock);
    if (!rc)
        return;
    if (classify(rc) == E_CORRUPT && !c->dead)
        recover(c, why);
    else
        stop_writes(c, why);
}

/* The file was replaced under this process: the writer reopens too. */
static void file_replaced(struct fleet_cache *c)
{
    mtx_lock(&c->lock);
    c->generation++;
    mtx_unlock(&c->lock);
}

/* Drops the oldest queued stores until need more bytes fit. Under lock. */
static void drop_oldest(struct fleet_cache *c, size_t need)
{
    struct pending **pp = &c->pending;
    while (*pp && c->queued_bytes + need > QUEUE_MAX) {
        struct pending *p = *pp;
        if (p->kind != PENDING_STORE) {
            pp = &p->next;
            continue;
        }
        *pp = p->next;
        c->queued_bytes -= pending_size(p);
        c->dropped++;
        pending_free(p);
    }
    c->pending_tail = &c->pending;
    while (*c->pending_tail)
        c->pending_tail = &(*c->pending_tail)->next;
}

/* Hands p to the writer (p is the queue's from here on). */
static void enqueue(struct fleet_cache *c, struct pending *p)
{
    if (!p) {
        fleet_log(FLEET_LOG_DEBUG, "cache: out of memory; a response was not stored");
        return;
    }
    mtx_lock(&c->lock);
    if (!start_writer(c)) {
        mtx_unlock(&c->lock);
        pending_free(p);
        stop_writes(c, "cannot start its writer thread");
        return;
    }
    size_t size = pending_size(p);
    if (c->queued_bytes + size > QUEUE_MAX)
        drop_oldest(c, size);
    if (p->kind == PENDING_STORE && c->queued_bytes + size > QUEUE_MAX) {
        c->dropped++; /* the writer's batch alone fills the queue */
        mtx_unlock(&c->lock);
        pending_free(p);
        return;
    }
    *c->pending_tail = p;
    c->pending_tail = &p->next;
    c->queued_bytes += size;
    cnd_signal(&c->wake_writer);
    mtx_unlock(&c->lock);
}

/* Ends the writer: what is queued is written, for up to CLOSE_WAIT_S;
 * what is left then is dropped (and counted). */
static void stop_writer(struct fleet_cache *c)
{
    if (!c->writer_started)
        return;
    mtx_lock(&c->lock);
    c->stopping = true;
    cnd_signal(&c->wake_writer);
    if (!wait_written(c, CLOSE_WAIT_S)) {
        c->abandon = true;
        c->dropped += count_stores(c->pending);
        free_list(c->pending);
        c->pending = NULL;
        c->pending_tail = &c->pending;
        cnd_signal(&c->wake_writer);
    }
    mtx_unlock(&c->lock);
    thrd_join(c->writer, NULL);
    c->writer_started = false;
    free(c->writer_conn->path);
    free(c->writer_conn);
    c->writer_conn = NULL;
    settle_writer(c);
}

/* Empties the queue without writing it (cache clear). */
static void discard_queue(struct fleet_cache *c)
{
    if (!c->writer_started)
        return;
    mtx_lock(&c->lock);
    free_list(c->pending);
    c->pending = NULL;
    c->pending_tail = &c->pending;
    wait_written(c, CLOSE_WAIT_S);
    mtx_unlock(&c->lock);
}

static bool writable(struct fleet_cache *c)
{
    if (!c || c->dead)
        return false;
    settle_writer(c);
    if (c->no_writes) {
        stop_writes(c, "the file is read-only");
        return false;
    }
    return !c->dead;
}

void fleet_cache_store(struct fleet_cache *c, const char *url, const char *credential, const char *etag,
                       const char *last_modified, const char *headers, size_t headers_len, const char *body,
                       size_t body_len)
{
    if (!url || (!etag && !last_modified) || !writable(c))
        return;
    size_t hl = headers ? headers_len : 0, bl = body ? body_len : 0;
    bool too_large = (long long)(hl + bl) > c->max_size || hl + bl < hl;
    struct pending *p = new_pending(c, PENDING_STORE, url, credential, etag, last_modified, NULL, headers,
                                    too_large ? 0 : hl, body, too_large ? 0 : bl);
    if (p) {
        p->too_large = too_large;
        p->used_at = too_large ? 0 : next_use(c);
    }
    enqueue(c, p);
}

void fleet_cache_touch(struct fleet_cache *c, const char *url, const char *credential)
{
    if (!url || !writable(c))
        return;
    struct pending *p = new_pending(c, PENDING_TOUCH, url, credential, NULL, NULL, NULL, NULL, 0, NULL, 0);
    if (p)
        p->used_at = next_use(c);
    enqueue(c, p);
}

bool fleet_cache_flush(struct fleet_cache *c)
{
    if (!c || !c->writer_started)
        return true;
    mtx_lock(&c->lock);
    bool written = wait_written(c, CLOSE_WAIT_S);
    mtx_unlock(&c->lock);
    settle_writer(c);
    return written;
}

/* The newest queued (or being written) write of kind for (url, cred), or
 * NULL. Under lock. */
static const struct pending *newest_pending(struct fleet_cache *c, enum pending_kind kind, const char *url,
                                            const char *cred)
{
    const struct pending *found = NULL;
    const struct pending *lists[2] = {c->writing, c->pending}; /* older first */
    for (int i = 0; i < 2; i++)
        for (const struct pending *p = lists[i]; p; p = p->next)
            if (p->kind == kind && strcmp(p->url, url) == 0 && strcmp(p->cred, cred) == 0)
                found = p;
    return found;
}

/* A lookup answered from the queue: 1 and e filled with copies; 0 for a
 * miss (a queued store too large to keep, or out of memory); -1 when no
 * store of (url, cred) is queued and the file has the answer. */
static int lookup_pending(struct fleet_cache *c, const char *url, const char *cred, struct fleet_cache_entry *e)
{
    if (!c->writer_started)
        return -1;
    mtx_lock(&c->lock);
    const struct pending *found = newest_pending(c, PENDING_STORE, url, cred);
    int r = found ? 1 : -1;
    if (found && found->too_large) {
        r = 0;
    } else if (found) {
        bool ok = true;
        e->etag = dup_or_null(found->etag, &ok);
        e->last_modified = dup_or_null(found->last_modified, &ok);
        e->headers = copy_bytes(found->data, found->headers_len);
        e->headers_len = found->headers_len;
        e->body = copy_bytes(found->data + found->headers_len, found->body_len);
        e->body_len = found->body_len;
        if (!ok || !e->headers || !e->body) {
            fleet_cache_entry_free(e);
            r = 0;
        }
    }
    mtx_unlock(&c->lock);
    return r;
}

/* ------------------------------------------------------------- memos */

/* Memos live in the meta table under "memo:" keys, as "<epoch> <value>".
 * Copies the value of text into out if it is younger than max_age. */
static bool memo_value(const char *text, double max_age, char *out, size_t outlen)
{
    char *rest = NULL;
    double stored = strtod(text, &rest);
    if (!rest || *rest != ' ' || time(NULL) - stored >= max_age || strlen(rest + 1) >= outlen)
        return false;
    strcpy(out, rest + 1);
    return true;
}

bool fleet_cache_memo_get(struct fleet_cache *c, const char *key, double max_age, char *out, size_t outlen)
{
    if (!c || c->dead || !key || outlen == 0)
        return false;
    if (c->writer_started) {
        mtx_lock(&c->lock);
        const struct pending *queued = newest_pending(c, PENDING_MEMO, key, "");
        bool found = queued && memo_value(queued->text, max_age, out, outlen);
        mtx_unlock(&c->lock);
        if (queued)
            return found;
    }
    sqlite3_stmt *q = c->st[ST_MEMO_GET];
    sqlite3_bind_text(q, 1, key, -1, SQLITE_STATIC);
    bool found = sqlite3_step(q) == SQLITE_ROW && sqlite3_column_type(q, 0) == SQLITE_TEXT &&
                 memo_value((const char *)sqlite3_column_text(q, 0), max_age, out, outlen);
    sqlite3_reset(q);
    return found;
}

void fleet_cache_memo_set(struct fleet_cache *c, const char *key, const char *value)
{
    if (!key || !value || !writable(c))
        return;
    char *text = xasprintf("%lld %s", (long long)time(NULL), value);
    if (!text)
        return;
    enqueue(c, new_pending(c, PENDING_MEMO, key, "", NULL, NULL, text, NULL, 0, NULL, 0));
    free(text);
}

/* ------------------------------------------------------- stats, clear */

int fleet_cache_stats(struct fleet_cache *c, struct fleet_cache_stats *s)
{
    if (!s)
        return -1;
    memset(s, 0, sizeof *s);
    if (!c)
        return -1;
    fleet_cache_flush(c); /* what this run stored counts, in the file's size too */
    s->path = c->path;
    s->max_size = c->max_size;
    char *wal = xasprintf("%s-wal", c->path);
    s->file_size = file_size(c->path) + (wal ? file_size(wal) : 0);
    free(wal);
    if (c->dead) {
        set_error(c, "the cache is not usable in this run");
        return -1;
    }
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(c->db,
                                "SELECT count(*), total(size),"
                                " (SELECT value FROM meta WHERE key = 'dropped') FROM entries",
                                -1, &q, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        s->entries = sqlite3_column_int64(q, 0);
        s->bytes = (long long)sqlite3_column_double(q, 1);
        s->dropped = sqlite3_column_int64(q, 2) + (c->dropped - c->dropped_saved);
        rc = SQLITE_OK;
    }
    if (rc != SQLITE_OK) {
        char msg[200];
        snprintf(msg, sizeof msg, "%s", db_message(c, rc));
        sqlite3_finalize(q);
        failed(c, rc, msg, "stats", false);
        return -1;
    }
    sqlite3_finalize(q);
    return 0;
}

int fleet_cache_clear(struct fleet_cache *c)
{
    if (!c)
        return -1;
    if (c->dead) {
        set_error(c, "the cache is not usable in this run");
        return -1;
    }
    if (c->no_writes) {
        set_error(c, "%s cannot be written", c->path);
        return -1;
    }
    discard_queue(c);
    mtx_lock(&c->lock);
    c->dropped_saved = c->dropped; /* the count in the file starts again */
    mtx_unlock(&c->lock);
    int rc = sqlite3_exec(c->db,
                          "BEGIN IMMEDIATE; DELETE FROM bodies; DELETE FROM entries; UPDATE meta SET value = 0 WHERE key = 'bytes';"
                          " DELETE FROM meta WHERE key GLOB 'memo:*'; DELETE FROM meta WHERE key = 'dropped';"
                          " COMMIT;",
                          NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        char msg[200];
        snprintf(msg, sizeof msg, "%s", db_message(c, rc));
        rollback(c);
        set_error(c, "%s", msg);
        if (classify(rc) == E_CORRUPT)
            recover(c, msg);
        return -1;
    }
    /* Give the space back to the file system. Another process reading
     * may make either step fail: the entries are gone all the same. */
    if ((rc = sqlite3_exec(c->db, "VACUUM", NULL, NULL, NULL)) != SQLITE_OK)
        fleet_log(FLEET_LOG_DEBUG, "cache file %s: VACUUM: %s", c->path, db_message(c, rc));
    if ((rc = sqlite3_exec(c->db, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL)) != SQLITE_OK)
        fleet_log(FLEET_LOG_DEBUG, "cache file %s: checkpoint: %s", c->path, db_message(c, rc));
    return 0;
}

const char *fleet_cache_error(struct fleet_cache *c)
{
    if (!c)
        return "no cache";
    return c->error[0] ? c->error : "no error";
}
