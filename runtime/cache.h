/* The response cache: conditional requests (ETag / Last-Modified) on
 * SQLite, shared by several gitfleet processes (WAL mode).
 *
 * An entry is keyed by method, URL and a hash identifying the credential
 * (validators can be tied to the credential on GitHub); the hash is
 * SHA-256 over a random per-cache salt and the secret, so the secret is
 * never stored. A corrupt or unreadable cache file is set aside and a fresh
 * one created; a failing write turns caching off for the run with one
 * warning. No function here ever fails a request: at worst it misses.
 *
 * Every function accepts a NULL cache (none could be opened, or caching is
 * off) and then does nothing: lookups miss, stores are dropped. */
#ifndef FLEET_CACHE_H
#define FLEET_CACHE_H

#include <stdbool.h>
#include <stddef.h>

struct fleet_cache;

struct fleet_cache_entry {
    char *etag;          /* NULL if none */
    char *last_modified; /* NULL if none */
    char *body;          /* malloc'd, with a NUL after body_len bytes */
    size_t body_len;
    char *headers;       /* the stored response's header block (malloc'd, NUL after) */
    size_t headers_len;
};

struct fleet_cache_stats {
    long long entries;
    long long bytes;     /* bodies and headers stored */
    long long file_size; /* the database file(s) on disk */
    long long dropped;   /* stores dropped because the writer fell behind
                            (since the file was made or last cleared) */
    long long max_size;
    const char *path;
};

/* Opens (creating folders and the file as needed) the cache at path, with
 * max_size bytes of entries at most. Returns NULL with a warning logged if
 * no cache can be had at all (the run goes on without one). */
struct fleet_cache *fleet_cache_open(const char *path, long long max_size);
/* Close writes what is queued, waiting a few seconds at most; stores still
 * queued then are dropped. Drops of the run are logged (at -v). */
void fleet_cache_close(struct fleet_cache *c);

/* The credential's identity for cache keys: SHA-256(salt || secret), in
 * hex (65 bytes with the NUL). An anonymous request uses "" (no secret):
 * a NULL or empty secret, or a NULL cache, gives "". */
void fleet_cache_credential(struct fleet_cache *c, const char *secret, size_t len, char out[65]);

/* Finds the entry for (GET, url, credential). Returns true and fills e
 * (free with fleet_cache_entry_free) on a hit; on a miss e is zeroed. An
 * entry whose checksum does not match is never returned (the file is
 * treated as damaged). A lookup does not count as use: see touch. */
bool fleet_cache_lookup(struct fleet_cache *c, const char *url, const char *credential,
                        struct fleet_cache_entry *e);

/* Which credentials have an entry for url: fills up to max hashes, most
 * recently used first, and returns the count (so the pool can prefer a
 * token whose validators will match). */
int fleet_cache_credentials_for(struct fleet_cache *c, const char *url, char (*out)[65], int max);

/* Stores (replacing) the entry for a 200 response that carries an ETag or
 * a Last-Modified (without either it does nothing); evicts least recently
 * used entries beyond max_size, down to 90 % of it. An entry larger than
 * max_size alone is not stored (and the one it would replace is removed).
 * The caller's buffers are not kept.
 *
 * Stores, touches and memos never touch the file on the caller's thread:
 * they are queued (a store's bytes copied once) for a writer thread with
 * its own connection, which deflates plain bodies and writes in batches,
 * waiting for another process's lock if need be. Lookups and memo reads
 * see what is queued. A queue that outgrows its bound drops its oldest
 * stores, counted in fleet_cache_stats' dropped. */
void fleet_cache_store(struct fleet_cache *c, const char *url, const char *credential, const char *etag,
                       const char *last_modified, const char *headers, size_t headers_len, const char *body,
                       size_t body_len);

/* Waits (a few seconds at most) until every queued write is in the file;
 * true if it is (or there was nothing to write). */
bool fleet_cache_flush(struct fleet_cache *c);

/* A 304 revalidated the entry: mark it used now (for LRU eviction). */
void fleet_cache_touch(struct fleet_cache *c, const char *url, const char *credential);

void fleet_cache_entry_free(struct fleet_cache_entry *e);

/* Small facts kept across runs for the plugins (which kind an owner is, so
 * a re-run does not spend a request finding out again). get copies the
 * value into out and returns true if it was stored less than max_age
 * seconds ago. */
bool fleet_cache_memo_get(struct fleet_cache *c, const char *key, double max_age, char *out, size_t outlen);
void fleet_cache_memo_set(struct fleet_cache *c, const char *key, const char *value);

/* For `gitfleet cache stats|clear`. Both work on a closed-by-others file.
 * Both return 0, or -1 (see fleet_cache_error); s->path points into c.
 * clear removes every entry, then VACUUMs and truncates the WAL (another
 * process reading at that moment may keep the file from shrinking). */
int fleet_cache_stats(struct fleet_cache *c, struct fleet_cache_stats *s);
int fleet_cache_clear(struct fleet_cache *c);

/* What the last failing call met (for messages), never NULL. */
const char *fleet_cache_error(struct fleet_cache *c);

#endif
