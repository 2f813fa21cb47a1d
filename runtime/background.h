/* Work that may block for long (fsync on a slow disk) done on a thread of
 * its own, so the event loop keeps serving every other request meanwhile.
 *
 * One thread, started by the first job, runs jobs in the order given.
 * Each job's `done` runs later on the loop's thread (fleet_background_collect,
 * when fleet_background_fd is readable), never on the job's thread. */
#ifndef FLEET_BACKGROUND_H
#define FLEET_BACKGROUND_H

#include <stdbool.h>

struct fleet_background;

/* Runs on the background thread; returns what `done` receives. */
typedef int (*fleet_job_fn)(void *arg);
/* Runs on the loop's thread once the job is over. */
typedef void (*fleet_job_done)(void *arg, int result);

struct fleet_background *fleet_background_new(void);

/* Queues fn(arg). False when no job can be queued (out of memory, no
 * thread): the caller then does the work itself. */
bool fleet_background_submit(struct fleet_background *bg, fleet_job_fn fn, fleet_job_done done, void *arg);

/* Readable while finished jobs wait for fleet_background_collect. */
int fleet_background_fd(const struct fleet_background *bg);

/* Jobs queued or running, or finished and not yet collected. */
int fleet_background_outstanding(const struct fleet_background *bg);

/* Calls `done` for every finished job, in the order they finished. */
void fleet_background_collect(struct fleet_background *bg);

/* Waits until every job queued so far is over, then collects them. */
void fleet_background_finish(struct fleet_background *bg);

/* Finishes what is queued, then stops the thread. NULL is ignored. */
void fleet_background_free(struct fleet_background *bg);

#endif
