/* The scheduler: tasks (Lua coroutines) on one libcurl multi loop.
 *
 * One turn of the loop: resume every ready task; wake sleepers whose time
 * has come; let the request layer start what the pool allows; then wait in
 * curl_multi_poll for network activity, the next timer, or a signal, and
 * hand finished transfers back to the request layer, which wakes their
 * tasks. Tasks are only ever resumed here, at the top of the loop. */
#include "sched.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>

#include "atomicfile.h"
#include "background.h"
#include "host.h"
#include "http.h"
#include "interrupt.h"
#include "log.h"
#include "lstate.h"
#include "pool_shared.h"
#include "redis.h"

volatile sig_atomic_t fleet_signal_received;

/* How long a run whose own work is done waits for background requests
 * already in flight (see fleet_sched_run). */
#define DRAIN_GRACE 2.0

struct fleet_sched {
    struct fleet_host *host;
    CURLM *multi;
    struct fleet_task *ready_head, *ready_tail;
    struct fleet_task *all; /* every task not yet freed */
    struct fleet_task **heap; /* sleepers, earliest first */
    int heap_len, heap_cap;
    struct fleet_task *main;
    long next_id;
    int live;               /* tasks not yet done */
    int live_background;    /* of them, background ones: the run does not wait for these */
    bool draining;          /* only background tasks are left: nothing new is sent */
    double drain_deadline;
    int stop_signal;        /* set once a stop was requested */
    bool exit_requested;    /* a task called os.exit: the run ends now */
    int exit_code;          /* the first such call's code */
    bool stop_quietly;      /* fleet_sched_abandon: stop now, say nothing */
    double stop_deadline;   /* in-flight work is abandoned after this */
    int unobserved;
    struct fleet_done { CURL *easy; CURLcode result; } *done; /* one poll's finished transfers */
    int done_cap;
    double last_read;       /* when the last poll's transfers were read */
    double idle;            /* seconds spent waiting in poll, in all */
};

static int signal_pipe[2] = {-1, -1};

static void on_signal(int signo)
{
    int saved = errno;
    if (fleet_signal_received && signo == SIGALRM)
        return; /* lua.script_timeout while already stopping */
    if (fleet_signal_received) {
        /* A second signal: the user insists. */
        fleet_atomic_unlink_all();
        signal(signo, SIG_DFL);
        raise(signo);
    }
    fleet_signal_received = signo;
    fleet_interrupt_arm(); /* Lua code that never yields stops too */
    if (signal_pipe[1] >= 0) {
        ssize_t ignored = write(signal_pipe[1], "!", 1);
        (void)ignored;
    }
    errno = saved;
}

struct fleet_sched *fleet_sched_new(struct fleet_host *host, char *err, size_t errlen)
{
    struct fleet_sched *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->host = host;
    s->multi = curl_multi_init();
    if (!s->multi) {
        snprintf(err, errlen, "cannot create the libcurl multi handle");
        free(s);
        return NULL;
    }
    curl_multi_setopt(s->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)host->cfg.http.max_connections);
    curl_multi_setopt(s->multi, CURLMOPT_MAXCONNECTS, (long)host->cfg.http.max_connections);
    curl_multi_setopt(s->multi, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);

    if (signal_pipe[0] < 0 && pipe2(signal_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        curl_multi_cleanup(s->multi);
        free(s);
        return NULL;
    }
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGALRM, &sa, NULL); /* lua.script_timeout */
    return s;
}

CURLM *fleet_sched_multi(struct fleet_sched *s) { return s->multi; }
struct fleet_task *fleet_sched_main(struct fleet_sched *s) { return s->main; }
bool fleet_sched_stopping(struct fleet_sched *s) { return s->stop_signal != 0; }

bool fleet_sched_exit_requested(struct fleet_sched *s, int *code)
{
    if (s->exit_requested)
        *code = s->exit_code;
    return s->exit_requested;
}

double fleet_sched_idle(const struct fleet_sched *s) { return s->idle; }

/* ---- the sleep heap ---- */

static void heap_swap(struct fleet_sched *s, int i, int j)
{
    struct fleet_task *t = s->heap[i];
    s->heap[i] = s->heap[j];
    s->heap[j] = t;
    s->heap[i]->heap_index = i;
    s->heap[j]->heap_index = j;
}

static void heap_up(struct fleet_sched *s, int i)
{
    while (i > 0 && s->heap[(i - 1) / 2]->wake_at > s->heap[i]->wake_at) {
        heap_swap(s, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static void heap_down(struct fleet_sched *s, int i)
{
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < s->heap_len && s->heap[l]->wake_at < s->heap[m]->wake_at)
            m = l;
        if (r < s->heap_len && s->heap[r]->wake_at < s->heap[m]->wake_at)
            m = r;
        if (m == i)
            return;
        heap_swap(s, i, m);
        i = m;
    }
}

static void heap_remove(struct fleet_sched *s, struct fleet_task *t)
{
    int i = t->heap_index;
    if (i < 0)
        return;
    s->heap_len--;
    if (i != s->heap_len) {
        s->heap[i] = s->heap[s->heap_len];
        s->heap[i]->heap_index = i;
        heap_down(s, i);
        heap_up(s, i);
    }
    t->heap_index = -1;
}

void fleet_sched_sleep_until(struct fleet_sched *s, struct fleet_task *t, double at)
{
    if (s->heap_len == s->heap_cap) {
        int cap = s->heap_cap ? 2 * s->heap_cap : 64;
        struct fleet_task **grown = realloc(s->heap, (size_t)cap * sizeof *grown);
        if (!grown) {
            fleet_log(FLEET_LOG_ERROR, "out of memory");
            exit(70);
        }
        s->heap = grown;
        s->heap_cap = cap;
    }
    t->wake_at = at;
    t->state = TASK_WAITING;
    t->heap_index = s->heap_len;
    s->heap[s->heap_len++] = t;
    heap_up(s, t->heap_index);
}

/* ---- tasks ---- */

struct fleet_task *fleet_sched_current(struct fleet_sched *s, lua_State *L)
{
    (void)s;
    /* Each task's coroutine carries its task in the thread's extra space;
     * the main state and coroutines a script makes itself carry NULL. */
    return *(struct fleet_task **)lua_getextraspace(L);
}

int fleet_sched_not_in_task(lua_State *L, const char *what)
{
    return luaL_error(L, "%s must be called from the script's body or a fleet.spawn'ed function, "
                         "not from inside a coroutine the script created itself",
                      what);
}

void fleet_sched_wake(struct fleet_sched *s, struct fleet_task *t)
{
    if (t->state != TASK_WAITING)
        return;
    heap_remove(s, t); /* a wait with a timeout ends when either comes */
    if (t->wait_started > 0) {
        s->host->stats.waited += fleet_now() - t->wait_started;
        t->wait_started = 0;
    }
    t->state = TASK_READY;
    t->next_ready = NULL;
    if (s->ready_tail)
        s->ready_tail->next_ready = t;
    else
        s->ready_head = t;
    s->ready_tail = t;
}

void fleet_sched_set_background(struct fleet_sched *s, struct fleet_task *t)
{
    if (t->background || t->state == TASK_DONE)
        return;
    t->background = true;
    s->live_background++;
}

struct fleet_task *fleet_sched_spawn(struct fleet_sched *s, lua_State *L, int nargs, bool is_main)
{
    /* A new coroutine has room for LUA_MINSTACK values: the function and
     * its arguments (a script's, or fleet.spawn's — any number) need their
     * own room there; here the thread takes a slot, and luaL_ref another. */
    luaL_checkstack(L, 2, "cannot start a task");
    lua_State *co = lua_newthread(L); /* [fn, args..., co] */
    if (!lua_checkstack(co, nargs + 1))
        luaL_error(L, "too many arguments for a task (%d; Lua allows fewer than %d)", nargs, LUAI_MAXSTACK);
    struct fleet_task *t = calloc(1, sizeof *t);
    if (!t) {
        luaL_error(L, "out of memory");
        return NULL;
    }
    t->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    *(struct fleet_task **)lua_getextraspace(co) = t;
    lua_xmove(L, co, nargs + 1);
    t->sched = s;
    t->co = co;
    t->id = ++s->next_id;
    t->heap_index = -1;
    t->result_ref = LUA_NOREF;
    t->is_main = is_main;
    t->handle_alive = !is_main;
    t->all_next = s->all;
    if (s->all)
        s->all->all_prev = t;
    s->all = t;
    s->live++;
    if (is_main)
        s->main = t;
    t->state = TASK_WAITING;
    fleet_sched_wake(s, t);
    return t;
}

static void task_free(struct fleet_sched *s, struct fleet_task *t)
{
    lua_State *L = s->host->L;
    if (t->all_prev)
        t->all_prev->all_next = t->all_next;
    else
        s->all = t->all_next;
    if (t->all_next)
        t->all_next->all_prev = t->all_prev;
    heap_remove(s, t);
    luaL_unref(L, LUA_REGISTRYINDEX, t->co_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, t->result_ref);
    if (t == s->main)
        s->main = NULL;
    free(t);
}

/* An error no one will receive is reported now, with its traceback. */
static void report_unobserved(struct fleet_sched *s, struct fleet_task *t)
{
    lua_State *L = s->host->L;
    if (t->fatal) {
        fleet_log(FLEET_LOG_ERROR, "spawned task failed: %s", t->fatal);
        t->error_observed = true;
        s->unobserved++;
        return;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->result_ref);
    const char *msg = luaL_tolstring(L, -1, NULL);
    fleet_log(FLEET_LOG_ERROR, "spawned task failed: %s", msg);
    lua_pop(L, 2);
    t->error_observed = true;
    s->unobserved++;
}

void fleet_sched_release_handle(struct fleet_sched *s, struct fleet_task *t)
{
    t->handle_alive = false;
    if (t->state != TASK_DONE)
        return;
    if (t->failed && !t->error_observed)
        report_unobserved(s, t);
    task_free(s, t);
}

int fleet_sched_unobserved_errors(struct fleet_sched *s)
{
    for (struct fleet_task *t = s->all; t; t = t->all_next)
        if (t->state == TASK_DONE && t->failed && !t->error_observed && !t->is_main)
            report_unobserved(s, t);
    return s->unobserved;
}

bool fleet_sched_join(struct fleet_sched *s, struct fleet_task *t, struct fleet_task *other)
{
    (void)s;
    if (other->state == TASK_DONE)
        return false;
    t->state = TASK_WAITING;
    t->joined = other;
    t->joiner_next = other->joiners;
    other->joiners = t;
    return true;
}

int fleet_sched_push_results(lua_State *L, struct fleet_task *t)
{
    if (t->fatal) {
        t->error_observed = true;
        lua_pushstring(L, t->fatal);
        return -1;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->result_ref);
    if (t->failed) {
        t->error_observed = true;
        return -1;
    }
    lua_Integer n = (lua_getfield(L, -1, "n"), lua_tointeger(L, -1));
    lua_pop(L, 1);
    /* n results, and one more for result()'s leading true */
    luaL_checkstack(L, (int)n + 1, "too many results from a task");
    for (lua_Integer i = 1; i <= n; i++)
        lua_rawgeti(L, -(int)i, i);
    lua_remove(L, -(int)n - 1);
    return (int)n;
}

/* Moves a finished coroutine's results (or its error, with the traceback
 * taken from the dead coroutine) into a registry table. Runs protected. */
struct finish_args {
    struct fleet_task *t;
    int status;
    int nres;
};

static int finish_task_protected(lua_State *L)
{
    struct finish_args *a = lua_touserdata(L, 1);
    struct fleet_task *t = a->t;
    lua_State *co = t->co;
    if (a->status == LUA_OK) {
        /* A task may return any number of values: they need room here. */
        luaL_checkstack(L, a->nres + 1, "too many results from a task");
        lua_createtable(L, a->nres, 1);
        lua_xmove(co, L, a->nres); /* [tbl, r1..rn] */
        for (int i = a->nres; i >= 1; i--)
            lua_rawseti(L, -i - 1, i);
        lua_pushinteger(L, a->nres);
        lua_setfield(L, -2, "n");
    } else {
        lua_xmove(co, L, 1); /* [err] */
        if (lua_type(L, -1) == LUA_TTABLE) {
            /* os.exit(code), from any task, ends the run now (see
             * fleet_sched_run): tasks still waiting are not waited for. */
            int isnum = 0;
            lua_getfield(L, -1, "gitfleet_exit");
            lua_Integer code = lua_tointegerx(L, -1, &isnum);
            lua_pop(L, 1);
            if (isnum) {
                t->error_observed = true; /* an exit, not a failure to report */
                if (!t->sched->exit_requested) {
                    t->sched->exit_requested = true;
                    t->sched->exit_code = (int)code;
                }
            }
            /* A structured error keeps its fields; it gains a traceback. */
            if (lua_getfield(L, -1, "traceback") == LUA_TNIL) {
                luaL_traceback(L, co, NULL, 0);
                lua_setfield(L, -3, "traceback");
            }
            lua_pop(L, 1);
        } else {
            const char *msg = lua_tostring(L, -1);
            if (!msg)
                msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, -1));
            luaL_traceback(L, co, msg, 0);
        }
    }
    t->result_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

static void finish_task(struct fleet_sched *s, struct fleet_task *t, int status, int nres)
{
    lua_State *L = s->host->L;
    struct finish_args a = {t, status, nres};
    t->failed = status != LUA_OK;
    if (status == LUA_ERRMEM) {
        /* The budget is exhausted: free what the task held before anything
         * else needs memory, and record the outcome without Lua. */
        luaL_unref(L, LUA_REGISTRYINDEX, t->co_ref);
        t->co_ref = LUA_NOREF;
        t->co = NULL;
        lua_gc(L, LUA_GCCOLLECT);
        t->fatal = fleet_lstate_status_text(s->host, status);
    } else if (fleet_lstate_protect(L, finish_task_protected, &a) != LUA_OK) {
        /* Out of memory while recording the outcome. */
        lua_pop(L, 1);
        t->failed = true;
        t->fatal = fleet_lstate_status_text(s->host, LUA_ERRMEM);
    }
    t->state = TASK_DONE;
    s->live--;
    if (t->background)
        s->live_background--;
    /* The coroutine is no longer needed: let it be collected. */
    if (t->co_ref != LUA_NOREF)
        luaL_unref(L, LUA_REGISTRYINDEX, t->co_ref);
    t->co_ref = LUA_NOREF;
    t->co = NULL;

    for (struct fleet_task *j = t->joiners, *next; j; j = next) {
        next = j->joiner_next;
        j->joined = NULL;
        j->joiner_next = NULL;
        fleet_sched_wake(s, j);
    }
    t->joiners = NULL;
    if (!t->handle_alive && !t->is_main) {
        if (t->failed && !t->error_observed)
            report_unobserved(s, t);
        task_free(s, t);
    }
}

static void run_task(struct fleet_sched *s, struct fleet_task *t)
{
    int nres = 0;
    t->state = TASK_RUNNING;
    int nargs = lua_gettop(t->co);
    if (lua_status(t->co) == LUA_YIELD)
        nargs = 0; /* values a primitive left for its continuation stay put */
    else
        nargs -= 1; /* first run: the function and its arguments */
    fleet_interrupt_enter(t->co);
    int status = lua_resume(t->co, s->host->L, nargs, &nres);
    fleet_interrupt_leave();
    if (status == LUA_YIELD) {
        lua_pop(t->co, nres);
        if (t->state == TASK_RUNNING) {
            /* A plain coroutine.yield() in a task's body: let others run. */
            t->state = TASK_WAITING;
            fleet_sched_wake(s, t);
        }
        return;
    }
    finish_task(s, t, status, status == LUA_OK ? nres : 0);
}

static void run_ready(struct fleet_sched *s)
{
    /* Run only what is ready now: tasks woken meanwhile wait one turn, so
     * the network is serviced between long chains of ready tasks. */
    struct fleet_task *t = s->ready_head, *last = s->ready_tail;
    s->ready_head = s->ready_tail = NULL;
    while (t) {
        struct fleet_task *next = t->next_ready;
        t->next_ready = NULL;
        if (t->state == TASK_READY)
            run_task(s, t);
        if (s->stop_quietly)
            break; /* nothing more runs: the tasks left are abandoned */
        if (t == last)
            break;
        t = next;
    }
}

static void wake_sleepers(struct fleet_sched *s, double now)
{
    while (s->heap_len > 0 && s->heap[0]->wake_at <= now) {
        struct fleet_task *t = s->heap[0];
        heap_remove(s, t);
        fleet_sched_wake(s, t);
    }
}

void fleet_sched_interrupt(struct fleet_sched *s, int signo)
{
    if (s->stop_signal)
        return;
    s->stop_signal = signo;
    s->stop_deadline = fleet_now() + FLEET_INTERRUPT_GRACE;
    fleet_interrupt_cancel_timeout();
    if (signo == SIGALRM)
        fleet_log(FLEET_LOG_WARN, "the run reached lua.script_timeout (%gs): finishing what is in flight, "
                                  "starting nothing new", s->host->cfg.lua.script_timeout);
    else
        fleet_log(FLEET_LOG_WARN, "interrupted: finishing what is in flight, starting nothing new");
}

void fleet_sched_abandon(struct fleet_sched *s, int signo)
{
    if (s->stop_signal)
        return;
    s->stop_signal = signo;
    s->stop_quietly = true;
    s->stop_deadline = 0; /* already passed: nothing in flight is waited for */
}

static void drain_signal_pipe(void)
{
    char buf[16];
    while (read(signal_pipe[0], buf, sizeof buf) > 0)
        ;
}

/* Abandons every task still waiting: their coroutines are not resumed. */
static void abandon_all(struct fleet_sched *s)
{
    fleet_http_abandon_all(s->host);
    for (struct fleet_task *t = s->all; t; t = t->all_next) {
        if (t->state == TASK_DONE)
            continue;
        heap_remove(s, t);
        if (t->waiting_on) {
            fleet_http_unref(s->host, t->waiting_on);
            t->waiting_on = NULL;
        }
        t->cancelled = true;
        t->state = TASK_DONE;
        s->live--;
        if (t->background)
            s->live_background--;
    }
    s->ready_head = s->ready_tail = NULL;
    /* Blocking work under way ends now; its tasks are not resumed. */
    if (s->host->background)
        fleet_background_finish(s->host->background);
}

int fleet_sched_run(struct fleet_sched *s)
{
    s->last_read = fleet_now();
    while (s->live > 0) {
        if (fleet_signal_received && !s->stop_signal)
            fleet_sched_interrupt(s, fleet_signal_received);

        run_ready(s);
        double now = fleet_now();
        if (s->exit_requested) {
            abandon_all(s);
            break;
        }
        if (s->stop_signal && (now >= s->stop_deadline || !fleet_http_in_flight(s->host))) {
            abandon_all(s);
            break;
        }
        if (s->live == s->live_background && !s->draining) {
            /* Only background work is left (account lookups): the run
             * ends without it. What it has in flight may land for a
             * moment, so that the answer is kept and no request is
             * spent for nothing; nothing new is sent. */
            s->draining = true;
            s->drain_deadline = now + DRAIN_GRACE;
        }
        if (s->draining && (now >= s->drain_deadline || !fleet_http_in_flight(s->host))) {
            abandon_all(s);
            break;
        }
        wake_sleepers(s, now);
        double wake = s->stop_signal || s->draining ? INFINITY : fleet_http_dispatch(s->host, now);
        if (s->ready_head)
            continue;
        if (s->live == 0)
            break;
        struct fleet_background *bg = s->host->background;
        if (!fleet_http_in_flight(s->host) && !fleet_http_pending(s->host) && s->heap_len == 0 &&
            !(s->host->shared && fleet_redis_outstanding(fleet_shared_redis(s->host->shared)) > 0) &&
            !(bg && fleet_background_outstanding(bg) > 0)) {
            /* Every live task waits for another: nothing can ever wake them. */
            fleet_log(FLEET_LOG_ERROR, "deadlock: %d task(s) wait for each other", s->live);
            abandon_all(s);
            s->host->exit_code = 1;
            break;
        }
        wake = fmin(wake, fleet_http_watch_stalls(s->host, now));
        if (s->heap_len > 0 && s->heap[0]->wake_at < wake)
            wake = s->heap[0]->wake_at;
        if (s->stop_signal && s->stop_deadline < wake)
            wake = s->stop_deadline;
        if (s->draining && s->drain_deadline < wake)
            wake = s->drain_deadline;
        struct fleet_redis *redis = s->host->shared ? fleet_shared_redis(s->host->shared) : NULL;
        if (redis)
            wake = fmin(wake, fleet_shared_turn(s->host->shared, now));
        double ms = (wake - now) * 1000.0;
        int timeout = ms <= 0 ? 0 : ms > 60000 ? 60000 : (int)ceil(ms);
        struct curl_waitfd fds[3] = {{.fd = signal_pipe[0], .events = CURL_WAIT_POLLIN}};
        unsigned nfds = 1, redis_at = 0, bg_at = 0;
        if (redis && (fds[nfds].fd = fleet_redis_fd(redis, &fds[nfds].events)) >= 0 && fds[nfds].events)
            redis_at = nfds++;
        if (bg && fleet_background_outstanding(bg) > 0) {
            bg_at = nfds++;
            fds[bg_at] = (struct curl_waitfd){.fd = fleet_background_fd(bg), .events = CURL_WAIT_POLLIN};
        }
        double polled_at = fleet_now();
        double away = polled_at - s->last_read;
        curl_multi_poll(s->multi, fds, nfds, timeout, NULL);
        s->idle += fleet_now() - polled_at;
        if (fds[0].revents)
            drain_signal_pipe();
        if (redis_at && fds[redis_at].revents)
            fleet_redis_ready(redis, fds[redis_at].revents);
        if (bg_at && fds[bg_at].revents)
            fleet_background_collect(bg);
        int running;
        curl_multi_perform(s->multi, &running);
        s->last_read = fleet_now();
        /* Every transfer this poll finished is marked landed, with how
         * long the client was away before it looked, before any is handled:
         * none is then taken for one still out (see fleet_http_landed). */
        CURLMsg *msg;
        int left, ndone = 0;
        while ((msg = curl_multi_info_read(s->multi, &left))) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            if (ndone == s->done_cap) {
                int cap = s->done_cap ? 2 * s->done_cap : 64;
                struct fleet_done *grown = realloc(s->done, (size_t)cap * sizeof *grown);
                if (!grown) { /* handled at once: only the window's growth suffers */
                    fleet_http_done(s->host, msg->easy_handle, msg->data.result);
                    continue;
                }
                s->done = grown;
                s->done_cap = cap;
            }
            s->done[ndone++] = (struct fleet_done){msg->easy_handle, msg->data.result};
            fleet_http_landed(s->host, msg->easy_handle, away);
        }
        for (int i = 0; i < ndone; i++)
            fleet_http_done(s->host, s->done[i].easy, s->done[i].result);
    }
    /* A signal that stopped the last task's Lua code (interrupt.c) still
     * ends the run as a signal does. */
    if (fleet_signal_received && !s->stop_signal)
        fleet_sched_interrupt(s, fleet_signal_received);
    return s->stop_signal;
}

void fleet_sched_free(struct fleet_sched *s)
{
    if (!s)
        return;
    while (s->all)
        task_free(s, s->all);
    free(s->heap);
    free(s->done);
    curl_multi_cleanup(s->multi);
    free(s);
}
