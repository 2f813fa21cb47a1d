/* A thread for work that may block (see background.h). Finished jobs move
 * to a list the loop collects; a byte on a pipe wakes the loop's poll. */
#include "background.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <threads.h>
#include <unistd.h>

struct job {
    fleet_job_fn fn;
    fleet_job_done done;
    void *arg;
    int result;
    struct job *next;
};

struct list {
    struct job *head, *tail;
};

struct fleet_background {
    mtx_t lock;
    cnd_t work;  /* the thread waits here for jobs or the stop */
    cnd_t over;  /* fleet_background_finish waits here for the queue to empty */
    thrd_t thread;
    bool started, stopping;
    struct list queued, finished;
    int running;     /* jobs taken off `queued` and not yet on `finished` */
    int outstanding; /* jobs submitted and not yet collected (loop's thread only) */
    int pipe[2];     /* [0] readable while `finished` holds jobs */
};

static void push(struct list *l, struct job *j)
{
    j->next = NULL;
    if (l->tail)
        l->tail->next = j;
    else
        l->head = j;
    l->tail = j;
}

static struct job *pop(struct list *l)
{
    struct job *j = l->head;
    if (j) {
        l->head = j->next;
        if (!l->head)
            l->tail = NULL;
    }
    return j;
}

static int thread_main(void *data)
{
    struct fleet_background *bg = data;
    mtx_lock(&bg->lock);
    for (;;) {
        struct job *j = pop(&bg->queued);
        if (!j) {
            if (bg->stopping)
                break;
            cnd_wait(&bg->work, &bg->lock);
            continue;
        }
        bg->running++;
        mtx_unlock(&bg->lock);
        j->result = j->fn(j->arg);
        mtx_lock(&bg->lock);
        bg->running--;
        bool was_empty = !bg->finished.head;
        push(&bg->finished, j);
        if (was_empty) {
            ssize_t n;
            do
                n = write(bg->pipe[1], "", 1);
            while (n < 0 && errno == EINTR);
        }
        cnd_broadcast(&bg->over);
    }
    mtx_unlock(&bg->lock);
    return 0;
}

struct fleet_background *fleet_background_new(void)
{
    struct fleet_background *bg = calloc(1, sizeof *bg);
    if (!bg)
        return NULL;
    if (pipe2(bg->pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
        free(bg);
        return NULL;
    }
    mtx_init(&bg->lock, mtx_plain);
    cnd_init(&bg->work);
    cnd_init(&bg->over);
    return bg;
}

/* The thread starts with every signal blocked: signals are the loop's. */
static bool start(struct fleet_background *bg)
{
    if (bg->started)
        return true;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    bg->started = thrd_create(&bg->thread, thread_main, bg) == thrd_success;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return bg->started;
}

bool fleet_background_submit(struct fleet_background *bg, fleet_job_fn fn, fleet_job_done done, void *arg)
{
    struct job *j = malloc(sizeof *j);
    if (!j)
        return false;
    *j = (struct job){.fn = fn, .done = done, .arg = arg};
    mtx_lock(&bg->lock);
    bool ok = !bg->stopping && start(bg);
    if (ok) {
        push(&bg->queued, j);
        cnd_signal(&bg->work);
    }
    mtx_unlock(&bg->lock);
    if (!ok) {
        free(j);
        return false;
    }
    bg->outstanding++;
    return true;
}

int fleet_background_fd(const struct fleet_background *bg) { return bg->pipe[0]; }

int fleet_background_outstanding(const struct fleet_background *bg) { return bg->outstanding; }

void fleet_background_collect(struct fleet_background *bg)
{
    char buf[64];
    while (read(bg->pipe[0], buf, sizeof buf) > 0)
        ;
    mtx_lock(&bg->lock);
    struct list done = bg->finished;
    bg->finished = (struct list){NULL, NULL};
    mtx_unlock(&bg->lock);
    for (struct job *j; (j = pop(&done));) {
        bg->outstanding--;
        j->done(j->arg, j->result);
        free(j);
    }
}

void fleet_background_finish(struct fleet_background *bg)
{
    mtx_lock(&bg->lock);
    while (bg->queued.head || bg->running)
        cnd_wait(&bg->over, &bg->lock);
    mtx_unlock(&bg->lock);
    fleet_background_collect(bg);
}

void fleet_background_free(struct fleet_background *bg)
{
    if (!bg)
        return;
    fleet_background_finish(bg);
    mtx_lock(&bg->lock);
    bg->stopping = true;
    cnd_signal(&bg->work);
    mtx_unlock(&bg->lock);
    if (bg->started)
        thrd_join(bg->thread, NULL);
    close(bg->pipe[0]);
    close(bg->pipe[1]);
    mtx_destroy(&bg->lock);
    cnd_destroy(&bg->work);
    cnd_destroy(&bg->over);
    free(bg);
}
