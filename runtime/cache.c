/* The response cache on SQLite (see cache.h).
 *
 * One file, in WAL mode so that several gitfleet processes share it:
 *
 *   meta(key, value)   'salt' (32 random bytes, made once per file),
 *                      'bytes' (sum of entries.size, kept by triggers so
 *                      that every process sharing the file sees the same
 *                      total, read in O(1) inside each store's transaction:
 *                      eviction never scans), 'created_at'
 *   entries(...)       one row per (method, url, credential): validators,
 *                      size, stored_at, used_at (indexed, for LRU), checksum
 *   bodies(id, headers, body)   the two blobs of entry id, apart: SQLite
 *                      rewrites a whole record on any update, and marking
 *                      a 500 KB entry used must not rewrite 500 KB
 *
 * PRAGMA application_id marks the file as ours and PRAGMA user_version is
 * the schema version. Each row carries a 64-bit checksum (XXH64) over its
 * key, validators, headers and body: SQLite does not check the content of
 * pages, and a damaged body must never be served as an answer.
 *
 * Failures: a file that is damaged (not a database, SQLITE_CORRUPT, a
 * failing quick_check, a checksum mismatch) or that cannot be read is moved
 * aside to PATH.corrupt-EPOCH and a new one is started; this happens at
 * open, and once more at most during a run. A write that fails (disk full,
 * read-only file, I/O error) stops all writing for the run, with one
 * warning; lookups go on while they work. Writes never wait for another
 * process's lock during the run: they are kept in memory until the file is
 * free (see "writes"). Nothing here ever fails a request: at worst it
 * misses. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "cache.h"

#include <errno.h>
#include <fcntl.h>
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

#include "log.h"
#include "sha256.h"

#define APP_ID 0x47664c74        /* "GfLt" */
#define SCHEMA_VERSION 1
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
    NSTMT
};

static const char *const STMT_SQL[NSTMT] = {
    /* length() of a blob reads no content: a large body is not loaded
     * here but read into the caller's buffer (see fleet_cache_lookup). */
    [ST_LOOKUP] = "SELECT e.id, e.etag, e.last_modified, e.checksum, b.headers, length(b.body),"
                  " CASE WHEN length(b.body) <= 16384 THEN b.body END, b.id"
                  " FROM entries e LEFT JOIN bodies b ON b.id = e.id"
                  " WHERE e.method = 'GET' AND e.url = ?1 AND e.credential = ?2",
    [ST_STORE] = "INSERT INTO entries(method, url, credential, etag, last_modified, size, stored_at, used_at,"
                 " checksum) VALUES('GET', ?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7)"
                 " ON CONFLICT(method, url, credential) DO UPDATE SET etag = excluded.etag,"
                 " last_modified = excluded.last_modified, size = excluded.size,"
                 " stored_at = excluded.stored_at, used_at = excluded.used_at, checksum = excluded.checksum"
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

    /* Writes not yet in the file (see "writes" below), oldest first. */
    struct pending *pending, **pending_tail;
    size_t pending_bytes;
};

struct pending;
static void flush(struct fleet_cache *c, bool wait);
static void drop_pending(struct fleet_cache *c);
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
    if (make_parents(path) != 0) {
        fleet_log(FLEET_LOG_WARN, "cannot create the folder of cache file %s (%s); running without a cache", path,
                  strerror(errno));
        free(c->path);
        free(c);
        return NULL;
    }
    if (open_or_replace(c) != OPEN_OK) {
        fleet_log(FLEET_LOG_WARN, "cannot use cache file %s (%s); running without a cache", path, c->error);
        free(c->path);
        free(c);
        return NULL;
    }
    return c;
}

void fleet_cache_close(struct fleet_cache *c)
{
    if (!c)
        return;
    flush(c, true);
    close_db(c);
    explicit_bzero(c->salt, sizeof c->salt);
    free(c->path);
    free(c);
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
    int queued = c->pending ? lookup_pending(c, url, cred, e) : -1;
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
 * The event loop must not wait for another process's write lock (with two
 * gitfleet processes on one file, SQLite's busy handler would put the loop
 * to sleep for a good part of the run). So a store, touch or memo is
 * written at once without waiting if the file is free and nothing is
 * queued; otherwise a copy joins the queue, and every write call tries,
 * without waiting, to put the whole queue into the file in one
 * transaction. Only past PENDING_MAX bytes, and at close, does a flush
 * wait (up to the busy timeout). Lookups and memo reads see the queue. */

#define PENDING_MAX (32u << 20)

enum pending_kind { PENDING_STORE, PENDING_TOUCH, PENDING_MEMO };

/* One write. Queued ones own their strings and buffers (copy_pending);
 * one written at once points at the caller's. */
struct pending {
    struct pending *next;
    enum pending_kind kind;
    const char *url;             /* the memo's key for PENDING_MEMO */
    char cred[65];
    const char *etag, *last_modified;
    const char *text;            /* PENDING_MEMO: "<epoch> <value>" */
    const char *headers, *body;
    size_t headers_len, body_len;
    bool too_large;              /* a store beyond max_size: deletes the entry */
    double used_at;
};

static void pending_free(struct pending *p)
{
    free((void *)p->url);
    free((void *)p->etag);
    free((void *)p->last_modified);
    free((void *)p->text);
    free((void *)p->headers);
    free((void *)p->body);
    free(p);
}

static void drop_pending(struct fleet_cache *c)
{
    while (c->pending) {
        struct pending *p = c->pending;
        c->pending = p->next;
        pending_free(p);
    }
    c->pending_tail = &c->pending;
    c->pending_bytes = 0;
}

static char *dup_or_null(const char *s, bool *ok)
{
    char *d = s ? strdup(s) : NULL;
    if (s && !d)
        *ok = false;
    return d;
}

/* A heap copy of p that owns its data, or NULL (out of memory). */
static struct pending *copy_pending(const struct pending *p)
{
    struct pending *q = malloc(sizeof *q);
    if (!q)
        return NULL;
    *q = *p;
    q->next = NULL;
    bool ok = true;
    q->url = dup_or_null(p->url, &ok);
    q->etag = dup_or_null(p->etag, &ok);
    q->last_modified = dup_or_null(p->last_modified, &ok);
    q->text = dup_or_null(p->text, &ok);
    q->headers = p->headers ? copy_bytes(p->headers, p->headers_len) : NULL;
    q->body = p->body ? copy_bytes(p->body, p->body_len) : NULL;
    if (!ok || (p->headers && !q->headers) || (p->body && !q->body)) {
        pending_free(q);
        return NULL;
    }
    return q;
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
    sqlite3_stmt *s = st[ST_STORE];
    int64_t sum = entry_checksum(p->url, p->cred, p->etag, p->etag ? strlen(p->etag) : 0, p->last_modified,
                                 p->last_modified ? strlen(p->last_modified) : 0, p->headers, p->headers_len,
                                 p->body, p->body_len);
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
    sqlite3_bind_int64(s, 5, (sqlite3_int64)(p->headers_len + p->body_len));
    sqlite3_bind_double(s, 6, p->used_at);
    sqlite3_bind_int64(s, 7, sum);
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
    sqlite3_bind_blob64(b, 2, p->headers_len ? p->headers : "", p->headers_len, SQLITE_STATIC);
    sqlite3_bind_blob64(b, 3, p->body_len ? p->body : "", p->body_len, SQLITE_STATIC);
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

/* Writes the list from first in one transaction. wait: let SQLite's busy
 * handler wait for another process's lock. Returns SQLITE_DONE, or the
 * failing code with the transaction rolled back, *op naming the step and
 * msg SQLite's words. */
static int write_batch(struct fleet_cache *c, const struct pending *first, bool wait, const char **op,
                       char msg[200])
{
    *op = "begin";
    if (!wait)
        sqlite3_busy_timeout(c->db, 0);
    int rc = run(c->st[ST_BEGIN]);
    if (!wait)
        sqlite3_busy_timeout(c->db, BUSY_TIMEOUT_MS);
    for (const struct pending *p = first; p && rc == SQLITE_DONE; p = p->next)
        rc = apply(c, p, op);
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

/* Puts the queue into the file. wait: as write_batch; otherwise a busy
 * file leaves it queued (unless it has grown past PENDING_MAX). */
static void flush(struct fleet_cache *c, bool wait)
{
    if (!c->pending)
        return;
    if (c->dead || c->no_writes) {
        drop_pending(c);
        return;
    }
    const char *op;
    char msg[200];
    int rc = write_batch(c, c->pending, wait, &op, msg);
    if (rc == SQLITE_DONE) {
        drop_pending(c);
        return;
    }
    if (classify(rc) == E_BUSY) {
        if (!wait && c->pending_bytes > PENDING_MAX) {
            flush(c, true);
        } else if (wait) {
            fleet_log(FLEET_LOG_DEBUG, "cache file %s busy; %zu bytes of responses were not stored", c->path,
                      c->pending_bytes);
            drop_pending(c);
        }
        return;
    }
    drop_pending(c);
    failed(c, rc, msg, op, true);
}

/* Writes p (pointing at the caller's data): at once when nothing is
 * queued and the file is free, else by queueing a copy. */
static void submit(struct fleet_cache *c, const struct pending *p)
{
    if (!c->pending) {
        const char *op;
        char msg[200];
        int rc = write_batch(c, p, false, &op, msg);
        if (rc == SQLITE_DONE)
            return;
        if (classify(rc) != E_BUSY) {
            failed(c, rc, msg, op, true);
            return;
        }
    }
    struct pending *q = copy_pending(p);
    if (!q) {
        fleet_log(FLEET_LOG_DEBUG, "cache: out of memory; a response was not stored");
        return;
    }
    *c->pending_tail = q;
    c->pending_tail = &q->next;
    c->pending_bytes += sizeof *q + q->headers_len + q->body_len;
    if (q != c->pending) /* it joined a queue: try that; a new queue waits for the next write */
        flush(c, false);
}

static bool writable(struct fleet_cache *c)
{
    if (!c || c->dead)
        return false;
    if (c->no_writes) {
        stop_writes(c, "the file is read-only");
        return false;
    }
    return true;
}

void fleet_cache_store(struct fleet_cache *c, const char *url, const char *credential, const char *etag,
                       const char *last_modified, const char *headers, size_t headers_len, const char *body,
                       size_t body_len)
{
    if (!url || (!etag && !last_modified) || !writable(c))
        return;
    struct pending p = {.kind = PENDING_STORE, .url = url, .etag = etag, .last_modified = last_modified};
    snprintf(p.cred, sizeof p.cred, "%s", credential ? credential : "");
    size_t hl = headers ? headers_len : 0, bl = body ? body_len : 0;
    p.too_large = (long long)(hl + bl) > c->max_size;
    if (!p.too_large) {
        p.headers = headers, p.headers_len = hl;
        p.body = body, p.body_len = bl;
        p.used_at = next_use(c);
    }
    submit(c, &p);
}

void fleet_cache_touch(struct fleet_cache *c, const char *url, const char *credential)
{
    if (!url || !writable(c))
        return;
    struct pending p = {.kind = PENDING_TOUCH, .url = url, .used_at = next_use(c)};
    snprintf(p.cred, sizeof p.cred, "%s", credential ? credential : "");
    submit(c, &p);
}

/* The newest queued write of kind for (url, cred), or NULL. */
static const struct pending *newest_pending(struct fleet_cache *c, enum pending_kind kind, const char *url,
                                            const char *cred)
{
    const struct pending *found = NULL;
    for (const struct pending *p = c->pending; p; p = p->next)
        if (p->kind == kind && strcmp(p->url, url) == 0 && strcmp(p->cred, cred) == 0)
            found = p;
    return found;
}

/* A lookup answered from the queue: 1 and e filled with copies; 0 for a
 * miss (a queued store too large to keep, or out of memory); -1 when no
 * store of (url, cred) is queued and the file has the answer. */
static int lookup_pending(struct fleet_cache *c, const char *url, const char *cred, struct fleet_cache_entry *e)
{
    const struct pending *found = newest_pending(c, PENDING_STORE, url, cred);
    if (!found)
        return -1;
    if (found->too_large)
        return 0;
    bool ok = true;
    e->etag = dup_or_null(found->etag, &ok);
    e->last_modified = dup_or_null(found->last_modified, &ok);
    e->headers = copy_bytes(found->headers, found->headers_len);
    e->headers_len = found->headers_len;
    e->body = copy_bytes(found->body, found->body_len);
    e->body_len = found->body_len;
    if (!ok || !e->headers || !e->body) {
        fleet_cache_entry_free(e);
        return 0;
    }
    return 1;
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
    const struct pending *queued = newest_pending(c, PENDING_MEMO, key, "");
    if (queued)
        return memo_value(queued->text, max_age, out, outlen);
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
    struct pending p = {.kind = PENDING_MEMO, .url = key, .text = text};
    submit(c, &p);
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
    int rc = sqlite3_prepare_v2(c->db, "SELECT count(*), total(size) FROM entries", -1, &q, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        s->entries = sqlite3_column_int64(q, 0);
        s->bytes = (long long)sqlite3_column_double(q, 1);
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
    drop_pending(c);
    int rc = sqlite3_exec(c->db,
                          "BEGIN IMMEDIATE; DELETE FROM bodies; DELETE FROM entries; UPDATE meta SET value = 0 WHERE key = 'bytes';"
                          " DELETE FROM meta WHERE key GLOB 'memo:*';"
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
