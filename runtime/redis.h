/* One connection to Redis through hiredis's asynchronous API, driven by the
 * scheduler's loop: the loop polls the connection's socket next to
 * libcurl's, and replies arrive as callbacks from the top of the loop. No
 * call here blocks once the loop runs; only fleet_redis_open waits (before
 * it) for the first connection, so a Redis that is down at start is one
 * clear error.
 *
 * When the connection is lost, every command waiting for a reply gets a
 * NULL reply, and the connection is tried again with growing pauses;
 * scripts are loaded again on NOSCRIPT. */
#ifndef FLEET_REDIS_H
#define FLEET_REDIS_H

#include <stdbool.h>
#include <stddef.h>

#include <hiredis/hiredis.h>

struct fleet_shared_conf;
struct fleet_redis;

/* reply: NULL when the connection was lost before it came. */
typedef void fleet_redis_reply_fn(struct fleet_redis *r, redisReply *reply, void *data);

/* A Lua script run with EVALSHA; sent as EVAL on first use (which
 * caches it in Redis) and again on NOSCRIPT. */
struct fleet_redis_script {
    const char *name;   /* for messages */
    const char *source;
    char sha[41];       /* its SHA-1 in hex, "" until first sent */
};

/* Connects and authenticates, waiting at most conf->connect_timeout.
 * Returns NULL with one line in err when Redis cannot be reached or refuses. */
struct fleet_redis *fleet_redis_open(const struct fleet_shared_conf *conf, char *err, size_t errlen);
void fleet_redis_free(struct fleet_redis *r);

bool fleet_redis_up(const struct fleet_redis *r);
/* What the connection waits for, when it is not up ("" when up). */
const char *fleet_redis_waiting(const struct fleet_redis *r);
/* "HOST:PORT/DB" or the socket path: names the server in messages. */
const char *fleet_redis_name(const struct fleet_redis *r);

/* Sends a command. Returns -1 (fn not called) when the connection is down. */
int fleet_redis_command(struct fleet_redis *r, fleet_redis_reply_fn *fn, void *data, int argc, const char **argv,
                        const size_t *lens);

/* The same for a command that waits on the server (XREAD BLOCK): the
 * commands sent after it on this connection wait with it, and the end of
 * the run does not wait for its reply (fleet_redis_drain). */
int fleet_redis_command_blocking(struct fleet_redis *r, fleet_redis_reply_fn *fn, void *data, int argc,
                                 const char **argv, const size_t *lens);

/* Runs a script: argv holds numkeys, the keys, then the arguments. */
int fleet_redis_eval(struct fleet_redis *r, struct fleet_redis_script *s, fleet_redis_reply_fn *fn, void *data,
                     int argc, const char **argv, const size_t *lens);

/* -v: every reconnection attempt is logged, not only the first loss. */
void fleet_redis_set_verbose(struct fleet_redis *r, bool verbose);

/* Commands waiting for their reply. */
int fleet_redis_outstanding(const struct fleet_redis *r);

/* Commands sent so far (each is one round trip). */
long fleet_redis_round_trips(const struct fleet_redis *r);

/* The loop's side: the socket and the events to poll it for (0: none). */
int fleet_redis_fd(const struct fleet_redis *r, short *events);
/* After the poll: reads and writes what the socket allows. */
void fleet_redis_ready(struct fleet_redis *r, short revents);
/* Reconnection and the connect timeout; returns when to be called next. */
double fleet_redis_tick(struct fleet_redis *r, double now);

/* Sends what is buffered and waits for every reply, at most `timeout`
 * seconds: for the end of a run, after the loop has stopped. */
void fleet_redis_drain(struct fleet_redis *r, double timeout);

/* One command on a connection of its own, waiting at most `timeout`
 * seconds for each step: for the end of a run, after the loop has stopped,
 * when the loop's connection may be held by a blocking command or gone.
 * The reply (free it with freeReplyObject), or NULL with one line in why. */
redisReply *fleet_redis_call_once(const struct fleet_shared_conf *c, double timeout, int argc, const char **argv,
                                  const size_t *lens, char *why, size_t whylen);

#endif
