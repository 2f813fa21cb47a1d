/* Write beside, then rename (see atomicfile.h). rename(2) within one
 * directory is atomic: a reader sees the old file or the new one, never a
 * part. fsync before the rename, so a crash right after it cannot leave an
 * empty file under the target's name; fsync of the directory after it, so
 * the rename itself is on disk when the run says it is done.
 *
 * Many small files (a queue worker's, one per owner) can instead be
 * renamed at once and synced later, together (sync_later, then
 * fleet_atomic_sync): each fsync of its own costs a journal commit and
 * its disk writes, where files whose writing was started as they were
 * closed share one. Until the sync, a crash may leave such a file empty
 * under its name: its caller counts it as written only after the sync.
 * The sync goes through the descriptor kept open, so a file moved or
 * removed meanwhile (a consumer taking files as they appear) is synced
 * all the same. */
#include "atomicfile.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

/* The temporary files open now, for fleet_atomic_unlink_all. A slot holds
 * a complete string or NULL, so a signal handler can read it at any time. */
#define MAX_TRACKED 64
static char *volatile tracked[MAX_TRACKED];

static int track(char *temp)
{
    for (int i = 0; i < MAX_TRACKED; i++)
        if (!tracked[i]) {
            tracked[i] = temp;
            return i;
        }
    return -1; /* not removed by a second signal; still removed on discard */
}

static void untrack(struct fleet_atomic *a)
{
    if (a->slot >= 0)
        tracked[a->slot] = NULL;
    a->slot = -1;
}

void fleet_atomic_unlink_all(void)
{
    for (int i = 0; i < MAX_TRACKED; i++) {
        char *p = tracked[i];
        if (p)
            unlink(p);
    }
}

/* The path a rename must replace: a symlink's destination, so that the
 * link survives and the file it points to is the one replaced. */
static char *resolve_target(const char *path)
{
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISLNK(st.st_mode)) {
        char *real = realpath(path, NULL);
        if (real)
            return real;
    }
    return strdup(path);
}

/* "DIR/.NAME.gitfleet-XXXXXX": hidden, beside the target, recognisable. */
static char *temp_name(const char *target)
{
    char *d = strdup(target), *b = strdup(target);
    char *name = NULL;
    if (d && b) {
        const char *dir = dirname(d), *base = basename(b);
        size_t len = strlen(dir) + strlen(base) + 32;
        name = malloc(len);
        if (name)
            snprintf(name, len, "%s/.%s.gitfleet-%06lx", dir, base, (unsigned long)(random() & 0xffffff));
    }
    free(d);
    free(b);
    return name;
}

/* Opens a fresh temporary file for target; the kernel applies the umask
 * to 0666. Then the old file's mode and owner, as truncating it would
 * have kept them (the owner only where we may set it). */
static int open_temp(struct fleet_atomic *a, const struct stat *old)
{
    for (int attempt = 0; attempt < 100; attempt++) {
        char *name = temp_name(a->target);
        if (!name)
            return ENOMEM;
        int fd = open(name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd >= 0) {
            a->fd = fd;
            a->temp = name;
            a->slot = track(name);
            if (old) {
                if (old->st_uid != geteuid() || old->st_gid != getegid()) {
                    int ignored = fchown(fd, old->st_uid, old->st_gid);
                    (void)ignored;
                }
                fchmod(fd, old->st_mode & 07777);
            }
            return 0;
        }
        int err = errno;
        free(name);
        if (err != EEXIST)
            return err;
    }
    return EEXIST;
}

/* Paths that name an open descriptor (/dev/stdout, /dev/fd/N,
 * /proc/self/fd/N): they resolve to whatever the descriptor is, a shell's
 * redirection target perhaps, which must be written through, never
 * replaced. Other paths under /dev are devices (not regular files, so
 * written through as well) or files on a file system mounted there
 * (/dev/shm), replaced like any other. */
static bool names_descriptor(const char *path)
{
    static const char *const aliases[] = {"/dev/stdin", "/dev/stdout", "/dev/stderr"};
    for (size_t i = 0; i < sizeof aliases / sizeof *aliases; i++)
        if (strcmp(path, aliases[i]) == 0)
            return true;
    return strncmp(path, "/dev/fd/", 8) == 0 || strncmp(path, "/proc/", 6) == 0;
}

int fleet_atomic_open(struct fleet_atomic *a, const char *path)
{
    memset(a, 0, sizeof *a);
    a->fd = -1;
    a->unsynced_fd = -1;
    a->slot = -1;
    if (!*path)
        return ENOENT; /* as open("") says; not a temporary file in "." */
    a->target = resolve_target(path);
    if (!a->target)
        return ENOMEM;
    struct stat st;
    bool exists = stat(a->target, &st) == 0;
    if ((exists && !S_ISREG(st.st_mode)) || names_descriptor(path)) {
        /* A device, FIFO or directory: nothing to rename over; a
         * descriptor the caller opened (/dev/stdout, /proc/self/fd/3):
         * only written through. open says what is wrong with a directory
         * (EISDIR). */
        a->direct = true;
        a->fd = open(a->target, O_WRONLY | O_TRUNC | O_CLOEXEC);
        if (a->fd >= 0)
            return 0;
        int err = errno;
        fleet_atomic_discard(a);
        return err;
    }
    int err = open_temp(a, exists ? &st : NULL);
    if (err)
        fleet_atomic_discard(a);
    return err;
}

/* fsync of the directory holding path: the rename is made durable. Some
 * file systems refuse it (EINVAL); that is no reason to fail the run. */
static void sync_directory(const char *path)
{
    char *d = strdup(path);
    if (!d)
        return;
    int fd = open(dirname(d), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(d);
}

/* Renamed files whose descriptors wait for fleet_atomic_sync. Beyond
 * MAX_UNSYNCED, or a quarter of the descriptors this process may open, a
 * commit syncs at once instead, so that a caller that syncs late cannot
 * run out of descriptors. */
#define MAX_UNSYNCED 256
static atomic_int unsynced;

static int unsynced_cap(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur / 4 < MAX_UNSYNCED)
        return (int)(rl.rlim_cur / 4);
    return MAX_UNSYNCED;
}

static void close_unsynced(struct fleet_atomic *a)
{
    if (a->unsynced_fd < 0)
        return;
    close(a->unsynced_fd);
    a->unsynced_fd = -1;
    atomic_fetch_sub(&unsynced, 1);
}

int fleet_atomic_commit(struct fleet_atomic *a)
{
    if (a->fd < 0)
        return EBADF;
    int err = 0;
    bool later = false;
    if (!a->direct && a->sync_later) {
        later = atomic_fetch_add(&unsynced, 1) < unsynced_cap();
        if (!later)
            atomic_fetch_sub(&unsynced, 1);
    }
    if (later) {
        /* Starts the disk's writing now, so that the fsyncs of a batch
         * find the data written and share one journal commit. */
        sync_file_range(a->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
    } else if (!a->direct && fsync(a->fd) != 0) {
        err = errno;
    }
    if (!later && close(a->fd) != 0 && !err)
        err = errno; /* a deferred write error (NFS) */
    if (later)
        a->unsynced_fd = a->fd;
    a->fd = -1;
    if (!err && !a->direct && rename(a->temp, a->target) != 0)
        err = errno;
    if (err) {
        close_unsynced(a);
        fleet_atomic_discard(a);
        return err;
    }
    untrack(a);
    free(a->temp);
    a->temp = NULL;
    if (later)
        return 0; /* the target's name is kept for fleet_atomic_sync */
    if (!a->direct)
        sync_directory(a->target);
    free(a->target);
    a->target = NULL;
    return 0;
}

/* Whether the folder of files[i]'s target is that of one before it. */
static bool folder_seen(struct fleet_atomic *const *files, size_t i)
{
    const char *path = files[i]->target;
    const char *slash = strrchr(path, '/');
    size_t len = slash ? (size_t)(slash - path) : 0;
    for (size_t k = 0; k < i; k++) {
        const char *other = files[k]->target;
        if (!other)
            continue;
        const char *s = strrchr(other, '/');
        if ((s ? (size_t)(s - other) : 0) == len && memcmp(other, path, len) == 0)
            return true;
    }
    return false;
}

int fleet_atomic_sync(struct fleet_atomic *const *files, size_t n, size_t *failed)
{
    int err = 0;
    for (size_t i = 0; i < n; i++) {
        struct fleet_atomic *a = files[i];
        if (a->unsynced_fd < 0)
            continue; /* synced when committed */
        if (!err && fsync(a->unsynced_fd) != 0) {
            err = errno;
            *failed = i;
        }
        if (close(a->unsynced_fd) != 0 && !err) {
            err = errno;
            *failed = i;
        }
        a->unsynced_fd = -1;
        atomic_fetch_sub(&unsynced, 1);
    }
    for (size_t i = 0; i < n && !err; i++)
        if (files[i]->target && !folder_seen(files, i))
            sync_directory(files[i]->target);
    for (size_t i = 0; i < n; i++) {
        free(files[i]->target); /* kept by the commit for this sync only */
        files[i]->target = NULL;
    }
    return err;
}

void fleet_atomic_discard(struct fleet_atomic *a)
{
    close_unsynced(a);
    if (a->fd >= 0)
        close(a->fd);
    a->fd = -1;
    if (a->temp)
        unlink(a->temp);
    untrack(a);
    free(a->temp);
    free(a->target);
    a->temp = a->target = NULL;
}
