/* The scheduler: Lua coroutines ("tasks") on one libcurl multi loop.
 *
 * A host primitive that must wait (a request, a sleep, another task) marks
 * its task as waiting and yields with lua_yieldk. The loop resumes tasks
 * only from its top level — never from inside a libcurl callback — with the
 * values the primitive's continuation turns into its results. */
#ifndef FLEET_SCHED_H
#define FLEET_SCHED_H

#include <stdbool.h>

#include <curl/curl.h>
#include <lua.h>

struct fleet_host;
struct fleet_sched;

enum fleet_task_state { TASK_READY, TASK_RUNNING, TASK_WAITING, TASK_DONE };

struct fleet_task {
    struct fleet_sched *sched;
    lua_State *co;
    int co_ref;       /* registry ref anchoring the coroutine */
    long id;
    enum fleet_task_state state;
    struct fleet_task *next_ready;
    struct fleet_task *all_prev, *all_next; /* every task not yet freed */

    /* What a waiting task waits for, so teardown can release it. */
    void *waiting_on;        /* struct fleet_request *, or NULL */
    struct fleet_task *joined; /* the task it waits for */
    struct fleet_task *joiners;    /* tasks waiting for this one... */
    struct fleet_task *joiner_next; /* ...linked through this field */
    double wake_at;          /* sleeping until; heap_index >= 0 */
    int heap_index;
    double wait_started;     /* for fleet.stats().waited */

    int result_ref;          /* registry ref: {n=, ...} or the error value */
    const char *fatal;       /* an error recorded without Lua (out of memory) */
    bool failed;
    bool error_observed;     /* someone received the error */
    bool handle_alive;       /* a Lua handle still refers to the task */
    bool is_main;
    bool cancelled;
    bool background;         /* the run does not wait for it; its requests go last */
};

struct fleet_sched *fleet_sched_new(struct fleet_host *host, char *err, size_t errlen);
/* Whether a task called os.exit (the run then ends at once), and its code. */
bool fleet_sched_exit_requested(struct fleet_sched *s, int *code);
void fleet_sched_free(struct fleet_sched *s);

CURLM *fleet_sched_multi(struct fleet_sched *s);

/* Makes a task of the function at the top of L's stack, below nargs
 * arguments; pops them. The task runs when the loop next runs tasks. */
struct fleet_task *fleet_sched_spawn(struct fleet_sched *s, lua_State *L, int nargs, bool is_main);

/* Makes t a background task: the run ends when only such tasks are left
 * (they are dropped then), and their requests are sent only where others
 * leave room (http.c). */
void fleet_sched_set_background(struct fleet_sched *s, struct fleet_task *t);

/* Runs until every task is done or the run is interrupted. Returns 0, or
 * the signal number that interrupted it. */
int fleet_sched_run(struct fleet_sched *s);

/* The task running coroutine L, or NULL when L is not a task (the main
 * state, or a coroutine a script created itself). */
struct fleet_task *fleet_sched_current(struct fleet_sched *s, lua_State *L);

/* Marks a waiting task ready; it resumes with nothing pushed (its
 * continuation builds the results). */
void fleet_sched_wake(struct fleet_sched *s, struct fleet_task *t);

/* Suspends the current task until `at` (epoch seconds). */
void fleet_sched_sleep_until(struct fleet_sched *s, struct fleet_task *t, double at);

/* Makes t wait for `other` to finish. Returns false if other is done. */
bool fleet_sched_join(struct fleet_sched *s, struct fleet_task *t, struct fleet_task *other);

/* Pushes a finished task's results; returns the count. If the task failed,
 * pushes the error value and returns -1. Marks the error observed. */
int fleet_sched_push_results(lua_State *L, struct fleet_task *t);

/* Called when the Lua handle of a task is collected. */
void fleet_sched_release_handle(struct fleet_sched *s, struct fleet_task *t);

/* The main task's outcome after fleet_sched_run: its return values are
 * pushed onto the main state by fleet_sched_push_results. */
struct fleet_task *fleet_sched_main(struct fleet_sched *s);

/* Number of tasks whose errors nobody received (reported on stderr). */
int fleet_sched_unobserved_errors(struct fleet_sched *s);

/* Requests a stop (signal): no new requests start; what is in flight gets
 * a second to finish, then everything still waiting is abandoned. */
void fleet_sched_interrupt(struct fleet_sched *s, int signo);
bool fleet_sched_stopping(struct fleet_sched *s);
/* Seconds the loop has spent waiting in poll for the network, Redis, the
 * background thread or a timer, with no task ready to run. */
double fleet_sched_idle(const struct fleet_sched *s);

/* Stops at once and without a word (the reader of stdout went away): no
 * other task runs again, what is in flight is abandoned, and the run
 * returns signo as if that signal had ended it. */
void fleet_sched_abandon(struct fleet_sched *s, int signo);

/* The coroutine is a task's and the script called a waiting primitive
 * from inside a coroutine it created itself: explains and raises. */
int fleet_sched_not_in_task(lua_State *L, const char *what);

#endif
