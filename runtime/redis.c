/* One asynchronous Redis connection on the scheduler's loop. See redis.h. */
#include "redis.h"

#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/async.h>
#include <openssl/evp.h>

#include "config.h"
#include "host.h"
#include "log.h"
#include "redact.h"

enum conn_state { CONN_DOWN, CONN_CONNECTING, CONN_HANDSHAKE, CONN_UP };

#define BACKOFF_FIRST 0.1
#define BACKOFF_MAX 5.0

struct fleet_redis {
    const struct fleet_shared_conf *conf;
    redisAsyncContext *ac;
    enum conn_state state;
    bool want_read, want_write;
    double retry_at;        /* CONN_DOWN: next attempt */
    double backoff;         /* pause before the next attempt */
    double connect_deadline;
    bool ever_up;
    bool refused;           /* the server refused the handshake (password): do not retry */
    bool state_logged;      /* the current outage was reported */
    bool verbose;           /* -v: each further try is said too */
    long round_trips;
    int outstanding;        /* commands waiting for a reply */
    int blocking;           /* of those, commands that wait on the server (XREAD BLOCK) */
    char name[300];
    char why[300];          /* why the connection is down */
    char waiting[400];
};

/* A command in flight; a script's arguments are kept so that it can be
 * sent again as EVAL when Redis has forgotten the script (NOSCRIPT). */
struct pending {
    struct fleet_redis *r;
    fleet_redis_reply_fn *fn;
    void *data;
    struct fleet_redis_script *script;
    bool retried; /* sent again after NOSCRIPT */
    bool blocking; /* counted in r->blocking */
    int argc;
    char **argv;
    size_t *lens;
};

bool fleet_redis_up(const struct fleet_redis *r) { return r->state == CONN_UP; }
const char *fleet_redis_name(const struct fleet_redis *r) { return r->name; }
long fleet_redis_round_trips(const struct fleet_redis *r) { return r->round_trips; }
void fleet_redis_set_verbose(struct fleet_redis *r, bool verbose) { r->verbose = verbose; }
int fleet_redis_outstanding(const struct fleet_redis *r) { return r->ac ? r->outstanding : 0; }

const char *fleet_redis_waiting(const struct fleet_redis *r)
{
    return r->state == CONN_UP ? "" : r->waiting;
}

/* ---- the event hooks hiredis calls ---- */

static void ev_add_read(void *p) { ((struct fleet_redis *)p)->want_read = true; }
static void ev_del_read(void *p) { ((struct fleet_redis *)p)->want_read = false; }
static void ev_add_write(void *p) { ((struct fleet_redis *)p)->want_write = true; }
static void ev_del_write(void *p) { ((struct fleet_redis *)p)->want_write = false; }

static void ev_cleanup(void *p)
{
    struct fleet_redis *r = p;
    r->want_read = r->want_write = false;
}

static void set_down(struct fleet_redis *r, const char *why)
{
    double now = fleet_now();
    if (why)
        snprintf(r->why, sizeof r->why, "%s", why);
    fleet_redact(r->why, strlen(r->why));
    r->ac = NULL;
    r->state = CONN_DOWN;
    r->want_read = r->want_write = false;
    r->retry_at = now + r->backoff;
    snprintf(r->waiting, sizeof r->waiting, "waiting for Redis at %.200s (%.150s); next try in %.1fs", r->name,
             r->why, r->backoff);
    /* The loss is said once; each further try only with -v. */
    if (r->ever_up)
        fleet_log(!r->state_logged ? FLEET_LOG_WARN : r->verbose ? FLEET_LOG_INFO : FLEET_LOG_DEBUG, "%s",
                  r->waiting);
    r->state_logged = true;
    r->backoff = fmin(r->backoff * 2, BACKOFF_MAX);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct fleet_redis *r = ac->data;
    if (!r)
        return; /* freed on purpose */
    set_down(r, status == REDIS_OK && r->why[0] ? NULL : ac->errstr ? ac->errstr : "connection closed");
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct fleet_redis *r = ac->data;
    if (!r || status == REDIS_OK)
        return;
    /* hiredis frees the context after this callback. */
    set_down(r, ac->errstr ? ac->errstr : "cannot connect");
}

/* ---- commands ---- */

static void pending_free(struct pending *p)
{
    for (int i = 0; i < p->argc; i++)
        free(p->argv[i]);
    free(p->argv);
    free(p->lens);
    free(p);
}

static void on_reply(redisAsyncContext *ac, void *reply, void *priv);

static int send_argv(struct fleet_redis *r, struct pending *p, int argc, const char **argv, const size_t *lens)
{
    if (!r->ac || redisAsyncCommandArgv(r->ac, on_reply, p, argc, argv, lens) != REDIS_OK)
        return -1;
    r->round_trips++;
    r->outstanding++;
    return 0;
}

/* EVALSHA sha numkeys ..., or EVAL source ... (with_source): the first
 * call of a script, and the one that meets NOSCRIPT. EVAL also leaves the
 * script in Redis's cache, so the calls after it go by sha. */
static int send_script(struct fleet_redis *r, struct pending *p, bool with_source)
{
    const char **argv = malloc((size_t)(p->argc + 2) * sizeof *argv);
    size_t *lens = malloc((size_t)(p->argc + 2) * sizeof *lens);
    if (!argv || !lens) {
        free(argv);
        free(lens);
        return -1;
    }
    bool by_sha = !with_source;
    argv[0] = by_sha ? "EVALSHA" : "EVAL";
    lens[0] = strlen(argv[0]);
    argv[1] = by_sha ? p->script->sha : p->script->source;
    lens[1] = strlen(argv[1]);
    for (int i = 0; i < p->argc; i++) {
        argv[i + 2] = p->argv[i];
        lens[i + 2] = p->lens[i];
    }
    int rc = send_argv(r, p, p->argc + 2, argv, lens);
    free(argv);
    free(lens);
    return rc;
}

/* The script's SHA-1 as Redis names it, worked out here: no SCRIPT LOAD
 * round trip. Left "" when libcrypto cannot (the calls then go by EVAL). */
static void script_sha(struct fleet_redis_script *s)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (!EVP_Digest(s->source, strlen(s->source), md, &n, EVP_sha1(), NULL) || n != 20)
        return;
    for (unsigned int i = 0; i < n; i++)
        snprintf(s->sha + 2 * i, 3, "%02x", md[i]);
}

static void on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    struct pending *p = priv;
    struct fleet_redis *r = p->r;
    redisReply *rep = reply;
    r->outstanding--;
    if (p->blocking)
        r->blocking--;
    if (rep && p->script && rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "NOSCRIPT", 8) == 0 &&
        !p->retried) {
        /* Redis restarted or flushed its scripts: the source once more,
         * which caches it again for the calls after this one. */
        p->retried = true;
        if (send_script(r, p, true) == 0)
            return;
        rep = NULL;
    }
    p->fn(r, rep, p->data);
    pending_free(p);
}

static struct pending *pending_new(struct fleet_redis *r, fleet_redis_reply_fn *fn, void *data,
                                   struct fleet_redis_script *s, int argc, const char **argv, const size_t *lens)
{
    struct pending *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    *p = (struct pending){.r = r, .fn = fn, .data = data, .script = s};
    if (!s)
        return p;
    p->argv = calloc((size_t)argc, sizeof *p->argv);
    p->lens = calloc((size_t)argc, sizeof *p->lens);
    if (!p->argv || !p->lens) {
        pending_free(p);
        return NULL;
    }
    for (int i = 0; i < argc; i++) {
        size_t len = lens ? lens[i] : strlen(argv[i]);
        if (!(p->argv[i] = malloc(len + 1))) {
            pending_free(p);
            return NULL;
        }
        memcpy(p->argv[i], argv[i], len);
        p->argv[i][len] = 0;
        p->lens[i] = len;
        p->argc = i + 1;
    }
    return p;
}

static int command(struct fleet_redis *r, fleet_redis_reply_fn *fn, void *data, int argc, const char **argv,
                   const size_t *lens, bool blocking)
{
    if (r->state != CONN_UP)
        return -1;
    struct pending *p = pending_new(r, fn, data, NULL, argc, argv, lens);
    if (!p || send_argv(r, p, argc, argv, lens) != 0) {
        free(p);
        return -1;
    }
    p->blocking = blocking;
    r->blocking += blocking;
    return 0;
}

int fleet_redis_command(struct fleet_redis *r, fleet_redis_reply_fn *fn, void *data, int argc, const char **argv,
                        const size_t *lens)
{
    return command(r, fn, data, argc, argv, lens, false);
}

int fleet_redis_command_blocking(struct fleet_redis *r, fleet_redis_reply_fn *fn, void *data, int argc,
                                 const char **argv, const size_t *lens)
{
    return command(r, fn, data, argc, argv, lens, true);
}

int fleet_redis_eval(struct fleet_redis *r, struct fleet_redis_script *s, fleet_redis_reply_fn *fn, void *data,
                     int argc, const char **argv, const size_t *lens)
{
    if (r->state != CONN_UP)
        return -1;
    struct pending *p = pending_new(r, fn, data, s, argc, argv, lens);
    if (!p)
        return -1;
    bool first = !s->sha[0];
    if (send_script(r, p, first) != 0) {
        pending_free(p);
        return -1;
    }
    if (first)
        script_sha(s);
    return 0;
}

/* ---- connecting ---- */

static void handshake_fail(struct fleet_redis *r, const char *why)
{
    if (r->refused)
        return; /* the first refusal says why; later replies follow from it */
    snprintf(r->why, sizeof r->why, "%s", why);
    r->refused = true;
    if (r->ac)
        redisAsyncDisconnect(r->ac);
}

static void on_handshake(struct fleet_redis *r, redisReply *reply, void *data)
{
    const char *step = data;
    if (!reply)
        return; /* the disconnect says why */
    if (reply->type == REDIS_REPLY_ERROR) {
        char why[256];
        if (strstr(reply->str, "NOAUTH"))
            snprintf(why, sizeof why, "Redis wants a password: set shared.password or shared.password_file");
        else if (strcmp(step, "AUTH") == 0)
            snprintf(why, sizeof why, "Redis refused the password (%.*s)", 120, reply->str);
        else
            snprintf(why, sizeof why, "%s failed: %.*s", step, 160, reply->str);
        handshake_fail(r, why);
        return;
    }
    if (strcmp(step, "PING") == 0) {
        r->state = CONN_UP;
        r->backoff = BACKOFF_FIRST;
        r->refused = false;
        if (r->ever_up)
            fleet_log(FLEET_LOG_WARN, "connected to Redis at %s again", r->name);
        r->state_logged = false;
        r->ever_up = true;
        r->why[0] = 0;
    }
}

static void start_connect(struct fleet_redis *r, double now)
{
    const struct fleet_shared_conf *c = r->conf;
    redisAsyncContext *ac = c->socket ? redisAsyncConnectUnix(c->socket) : redisAsyncConnect(c->host, c->port);
    r->why[0] = 0;
    if (!ac || ac->err) {
        char why[256];
        snprintf(why, sizeof why, "%s", ac && ac->errstr ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        set_down(r, why);
        return;
    }
    ac->data = r;
    ac->ev.data = r;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    r->ac = ac;
    r->state = CONN_HANDSHAKE;
    r->connect_deadline = now + c->connect_timeout;
    /* Commands queue up until the connection is made; the replies come in
     * this order. */
    char db[16];
    snprintf(db, sizeof db, "%d", c->db);
    struct pending *p;
    if (c->password) {
        const char *argv[] = {"AUTH", c->password};
        if ((p = pending_new(r, on_handshake, "AUTH", NULL, 2, argv, NULL)))
            send_argv(r, p, 2, argv, NULL);
    }
    if (c->db) {
        const char *argv[] = {"SELECT", db};
        if ((p = pending_new(r, on_handshake, "SELECT", NULL, 2, argv, NULL)))
            send_argv(r, p, 2, argv, NULL);
    }
    const char *argv[] = {"PING"};
    if ((p = pending_new(r, on_handshake, "PING", NULL, 1, argv, NULL)))
        send_argv(r, p, 1, argv, NULL);
}

static void drop_connection(struct fleet_redis *r, const char *why)
{
    redisAsyncContext *ac = r->ac;
    if (!ac)
        return;
    ac->data = NULL; /* its disconnect callback is ours to say */
    r->ac = NULL;
    redisAsyncFree(ac);
    set_down(r, why);
}

double fleet_redis_tick(struct fleet_redis *r, double now)
{
    if (r->state == CONN_DOWN && !r->refused) {
        if (now < r->retry_at)
            return r->retry_at;
        start_connect(r, now);
    }
    if (r->state == CONN_HANDSHAKE) {
        if (now >= r->connect_deadline) {
            drop_connection(r, "no answer within shared.connect_timeout");
            return r->retry_at;
        }
        return r->connect_deadline;
    }
    return r->state == CONN_DOWN && !r->refused ? r->retry_at : INFINITY;
}

int fleet_redis_fd(const struct fleet_redis *r, short *events)
{
    *events = 0;
    if (!r->ac)
        return -1;
    if (r->want_read)
        *events |= POLLIN;
    if (r->want_write)
        *events |= POLLOUT;
    return r->ac->c.fd;
}

void fleet_redis_ready(struct fleet_redis *r, short revents)
{
    if (r->ac && (revents & (POLLIN | POLLERR | POLLHUP)))
        redisAsyncHandleRead(r->ac);
    if (r->ac && (revents & POLLOUT))
        redisAsyncHandleWrite(r->ac);
}

/* Polls the connection alone until `done` or the deadline: only before
 * and after the scheduler's loop. */
static void wait_alone(struct fleet_redis *r, double deadline, bool (*done)(const struct fleet_redis *))
{
    while (!done(r)) {
        double now = fleet_now();
        if (now >= deadline)
            return;
        double next = fmin(fleet_redis_tick(r, now), deadline);
        short events;
        int fd = fleet_redis_fd(r, &events);
        int ms = (int)ceil(fmax(0, fmin(next, deadline) - now) * 1000);
        if (fd < 0 || !events) {
            poll(NULL, 0, ms > 50 ? 50 : ms);
            continue;
        }
        struct pollfd pfd = {.fd = fd, .events = events};
        if (poll(&pfd, 1, ms > 50 ? 50 : ms) > 0)
            fleet_redis_ready(r, pfd.revents);
    }
}

static bool up_or_failed(const struct fleet_redis *r) { return r->state == CONN_UP || r->state == CONN_DOWN; }
/* A blocking command still waiting on the server is not waited for: the
 * process is ending and nobody wants its reply. */
static bool nothing_outstanding(const struct fleet_redis *r) { return r->outstanding <= r->blocking || !r->ac; }

struct fleet_redis *fleet_redis_open(const struct fleet_shared_conf *conf, char *err, size_t errlen)
{
    struct fleet_redis *r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    r->conf = conf;
    r->backoff = BACKOFF_FIRST;
    if (conf->socket)
        snprintf(r->name, sizeof r->name, "%s (db %d)", conf->socket, conf->db);
    else
        snprintf(r->name, sizeof r->name, "%s:%d/%d", conf->host, conf->port, conf->db);
    start_connect(r, fleet_now());
    wait_alone(r, fleet_now() + conf->connect_timeout, up_or_failed);
    if (r->state != CONN_UP) {
        if (r->state == CONN_HANDSHAKE)
            drop_connection(r, "no answer within shared.connect_timeout");
        snprintf(err, errlen, "shared: cannot use Redis at %s: %s", r->name, r->why[0] ? r->why : "not reachable");
        fleet_redact(err, strlen(err));
        fleet_redis_free(r);
        return NULL;
    }
    return r;
}

void fleet_redis_drain(struct fleet_redis *r, double timeout)
{
    if (r->state == CONN_UP)
        wait_alone(r, fleet_now() + timeout, nothing_outstanding);
}

void fleet_redis_free(struct fleet_redis *r)
{
    if (!r)
        return;
    if (r->ac) {
        redisAsyncContext *ac = r->ac;
        ac->data = NULL;
        r->ac = NULL;
        redisAsyncFree(ac); /* callbacks still waiting get NULL */
    }
    free(r);
}

redisReply *fleet_redis_call_once(const struct fleet_shared_conf *c, double timeout, int argc, const char **argv,
                                  const size_t *lens, char *why, size_t whylen)
{
    struct timeval tv = {(time_t)timeout, (suseconds_t)((timeout - (double)(time_t)timeout) * 1e6)};
    redisContext *rc = c->socket ? redisConnectUnixWithTimeout(c->socket, tv)
                                 : redisConnectWithTimeout(c->host, c->port, tv);
    if (!rc || rc->err) {
        snprintf(why, whylen, "%s", rc ? rc->errstr : "out of memory");
        redisFree(rc);
        return NULL;
    }
    redisSetTimeout(rc, tv);
    char db[16];
    snprintf(db, sizeof db, "%d", c->db);
    const char *auth[] = {"AUTH", c->password}, *select[] = {"SELECT", db};
    const char *const *steps[] = {c->password ? auth : NULL, c->db ? select : NULL};
    redisReply *reply = NULL;
    for (int i = 0; i < 2; i++) {
        if (!steps[i])
            continue;
        reply = redisCommandArgv(rc, 2, (const char **)steps[i], NULL);
        bool failed = !reply || reply->type == REDIS_REPLY_ERROR;
        if (failed) {
            snprintf(why, whylen, "%s failed: %s", steps[i][0],
                     reply ? reply->str : rc->errstr);
            fleet_redact(why, strlen(why));
        }
        freeReplyObject(reply);
        reply = NULL;
        if (failed) {
            redisFree(rc);
            return NULL;
        }
    }
    reply = redisCommandArgv(rc, argc, argv, lens);
    if (!reply)
        snprintf(why, whylen, "%s", rc->errstr);
    redisFree(rc);
    return reply;
}
