/* Replacing a file all at once: what gitfleet writes for the user goes to
 * a temporary file beside the target, which is flushed to disk and renamed
 * over the target only when the writer commits. Until then the target
 * keeps its old content byte for byte; a run that fails or is interrupted
 * leaves it as it was and removes the temporary file.
 *
 * A target that exists and is not a regular file (/dev/null, /dev/full, a
 * FIFO, a terminal), or a path naming a descriptor the caller opened
 * (/dev/stdout, /dev/fd/N, anything under /proc), cannot be replaced: it is
 * written directly. A file on a file system mounted under /dev (/dev/shm)
 * is replaced like any other. */
#ifndef FLEET_ATOMICFILE_H
#define FLEET_ATOMICFILE_H

#include <stdbool.h>
#include <stddef.h>

struct fleet_atomic {
    int fd;       /* write here; -1 once committed or discarded */
    bool direct;  /* fd is the target itself (not a regular file) */
    char *target; /* the path renamed over (a symlink's destination) */
    char *temp;   /* the temporary file, NULL when direct */
    int slot;     /* index in the table of temporary files, or -1 */
    bool sync_later; /* commit renames at once; fleet_atomic_sync makes it durable */
    int unsynced_fd; /* after such a commit, the file's descriptor until synced, else -1 */
};

/* Opens a temporary file beside path (or path itself when it is not a
 * regular file). 0, or an errno with nothing left behind. The temporary
 * file gets the mode a truncated target would keep (the old file's), or
 * 0666 less the umask for a new file. */
int fleet_atomic_open(struct fleet_atomic *a, const char *path);

/* fsync, close and rename over the target, then fsync its directory.
 * 0, or the errno of the step that failed; on failure the temporary file
 * is removed and the target is untouched. Direct files are only closed.
 * With sync_later set, only the disk's writing is started before the
 * rename, and the descriptor is kept for fleet_atomic_sync, which makes
 * the file durable. */
int fleet_atomic_commit(struct fleet_atomic *a);

/* For files committed with sync_later: fsync of each, then once of each
 * folder holding one; their descriptors are closed whatever happens. 0, or
 * the errno of the first that failed, with *failed its index. Files
 * synced at their commit (too many were waiting) are skipped. */
int fleet_atomic_sync(struct fleet_atomic *const *files, size_t n, size_t *failed);

/* Closes and removes the temporary file; the target is untouched.
 * Safe to call after commit or twice. */
void fleet_atomic_discard(struct fleet_atomic *a);

/* Removes every temporary file still open. Async-signal-safe: for a
 * signal handler about to end the process. */
void fleet_atomic_unlink_all(void);

#endif
