/* Running credential helpers: start without a shell, feed standard input,
 * read standard output under a deadline, and reap the child.
 *
 * fork + execvpe rather than posix_spawn: <spawn.h> needs the system's
 * <sched.h>, which runtime/sched.h shadows on this project's include path. */
#include "credential_helper.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_HELPER_OUTPUT (64 << 10) /* a token is small; more is not a token */

extern char **environ;

static double monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void wipe_free(char *p, size_t n)
{
    if (p) {
        explicit_bzero(p, n);
        free(p);
    }
}

/* The environment with extra "NAME=value" entries put first (so they win
 * over inherited ones); a malloc'd array of borrowed strings. */
static char **environment_with(const char *const extra[])
{
    size_t n = 0, k = 0;
    while (environ && environ[n])
        n++;
    while (extra && extra[k])
        k++;
    char **env = calloc(n + k + 1, sizeof *env);
    if (!env)
        return NULL;
    for (size_t i = 0; i < k; i++)
        env[i] = (char *)extra[i];
    for (size_t i = 0; i < n; i++)
        env[k + i] = environ[i];
    return env;
}

/* Waits for pid until the deadline; on timeout kills it. Returns the wait
 * status, or -1 if it had to be killed. */
static int reap(pid_t pid, double deadline)
{
    int status;
    for (;;) {
        pid_t got = waitpid(pid, &status, WNOHANG);
        if (got == pid)
            return status;
        if (got < 0 && errno != EINTR)
            return -1;
        if (monotonic() >= deadline)
            break;
        struct timespec nap = {0, 10 * 1000 * 1000};
        nanosleep(&nap, NULL);
    }
    kill(pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    return -1;
}

/* Runs argv with `input` on standard input (NULL: /dev/null) and extra
 * environment entries; stderr is ours. On success *out holds the start of
 * what it printed (up to MAX_HELPER_OUTPUT + 1 bytes, NUL-terminated; the
 * rest is read and dropped; wipe it).
 * Returns 0, or -1 with problem describing what went wrong. */
static int run_helper(char *const argv[], const char *input, const char *const extra_env[], double timeout,
                      char **out, size_t *outlen, char *problem, size_t plen)
{
    int outp[2] = {-1, -1}, inp[2] = {-1, -1};
    char **env = NULL;
    int rc = -1;
    size_t cap = MAX_HELPER_OUTPUT + 2, len = 0;
    char *buf = malloc(cap);
    *out = NULL;
    if (!buf || pipe2(outp, O_CLOEXEC) != 0 || (input && pipe2(inp, O_CLOEXEC) != 0) ||
        !(env = environment_with(extra_env))) {
        snprintf(problem, plen, "could not be started: %s", strerror(errno ? errno : ENOMEM));
        goto out;
    }
    /* A pipe that reports whether exec succeeded: closed by exec (CLOEXEC),
     * or carrying the child's errno. */
    int execp[2];
    if (pipe2(execp, O_CLOEXEC) != 0) {
        snprintf(problem, plen, "could not be started: %s", strerror(errno));
        goto out;
    }
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(problem, plen, "could not be started: %s", strerror(errno));
        close(execp[0]);
        close(execp[1]);
        goto out;
    }
    if (pid == 0) {
        int in = input ? inp[0] : open("/dev/null", O_RDONLY);
        if (in < 0 || dup2(in, STDIN_FILENO) < 0 || dup2(outp[1], STDOUT_FILENO) < 0)
            _exit(127);
        signal(SIGPIPE, SIG_DFL);
        execvpe(argv[0], argv, env);
        int e = errno;
        ssize_t w = write(execp[1], &e, sizeof e);
        (void)w;
        _exit(127);
    }
    close(execp[1]);
    int exec_errno = 0;
    ssize_t got_errno;
    while ((got_errno = read(execp[0], &exec_errno, sizeof exec_errno)) < 0 && errno == EINTR)
        ;
    close(execp[0]);
    if (got_errno == (ssize_t)sizeof exec_errno) {
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
        snprintf(problem, plen, "could not be run: %s", strerror(exec_errno));
        goto out;
    }
    close(outp[1]);
    outp[1] = -1;
    double deadline = monotonic() + timeout;
    if (input) {
        close(inp[0]);
        inp[0] = -1;
        /* A few hundred bytes fit in the pipe: this write does not block.
         * A helper that exits first makes it fail, which it may. */
        sigset_t pipe_only, old;
        sigemptyset(&pipe_only);
        sigaddset(&pipe_only, SIGPIPE);
        pthread_sigmask(SIG_BLOCK, &pipe_only, &old);
        ssize_t w = write(inp[1], input, strlen(input));
        (void)w;
        close(inp[1]);
        inp[1] = -1;
        struct timespec none = {0, 0};
        while (sigtimedwait(&pipe_only, NULL, &none) > 0)
            ; /* consume the SIGPIPE this write may have raised */
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    bool timed_out = false;
    char discard[4096];
    for (;;) {
        int wait_ms = (int)((deadline - monotonic()) * 1000);
        if (wait_ms <= 0) {
            timed_out = true;
            break;
        }
        struct pollfd p = {.fd = outp[0], .events = POLLIN};
        int n = poll(&p, 1, wait_ms);
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0) {
            timed_out = true;
            break;
        }
        /* Past the cap, output is read and dropped: a helper that prints
         * more than its token must not die of SIGPIPE for it. */
        bool full = len >= cap - 1;
        ssize_t got = full ? read(outp[0], discard, sizeof discard) : read(outp[0], buf + len, cap - 1 - len);
        if (got < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (got <= 0)
            break;
        if (!full)
            len += (size_t)got;
    }
    explicit_bzero(discard, sizeof discard);
    buf[len] = '\0';
    close(outp[0]);
    outp[0] = -1;
    int status = reap(pid, timed_out ? 0 : deadline);
    if (timed_out || status < 0)
        snprintf(problem, plen, "did not finish within %g s and was stopped", timeout);
    else if (WIFSIGNALED(status))
        snprintf(problem, plen, "was killed by signal %d", WTERMSIG(status));
    else if (WEXITSTATUS(status) != 0)
        snprintf(problem, plen, "exited with status %d (its output is not shown)", WEXITSTATUS(status));
    else
        rc = 0;
out:
    free(env);
    for (int i = 0; i < 2; i++) {
        if (outp[i] >= 0)
            close(outp[i]);
        if (inp[i] >= 0)
            close(inp[i]);
    }
    if (rc == 0) {
        *out = buf;
        *outlen = cap;
    } else {
        wipe_free(buf, cap);
    }
    return rc;
}

/* A copy of [s, s+n) if it is a usable token: non-empty, no control
 * character. NULL with problem set otherwise. */
static char *token_from(const char *s, size_t n, const char *what, char *problem, size_t plen)
{
    if (n > 0 && s[n - 1] == '\r')
        n--;
    if (n == 0) {
        snprintf(problem, plen, "%s", what);
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) {
            snprintf(problem, plen, "printed a token with a control character");
            return NULL;
        }
    char *t = malloc(n + 1);
    if (!t) {
        snprintf(problem, plen, "ran out of memory");
        return NULL;
    }
    memcpy(t, s, n);
    t[n] = '\0';
    return t;
}

int fleet_helper_token(char *const argv[], double timeout, char **secret, char *problem, size_t plen)
{
    char *out;
    size_t cap;
    *secret = NULL;
    if (run_helper(argv, NULL, NULL, timeout, &out, &cap, problem, plen) != 0)
        return -1;
    size_t first = strcspn(out, "\n");
    if (first > MAX_HELPER_OUTPUT)
        snprintf(problem, plen, "printed a first line longer than 64 KiB");
    else
        *secret = token_from(out, first, "printed nothing on its first line", problem, plen);
    wipe_free(out, cap);
    return *secret ? 0 : -1;
}

int fleet_helper_git(const char *protocol, const char *host, double timeout, char **secret, char *problem,
                     size_t plen)
{
    static char *const argv[] = {"git", "credential", "fill", NULL};
    /* git asks its helpers and would then prompt on the terminal; a batch
     * run must not wait for a person. */
    static const char *const env[] = {"GIT_TERMINAL_PROMPT=0", "GCM_INTERACTIVE=never", NULL};
    char input[600];
    *secret = NULL;
    if ((size_t)snprintf(input, sizeof input, "protocol=%s\nhost=%s\n\n", protocol, host) >= sizeof input) {
        snprintf(problem, plen, "the host name is too long");
        return -1;
    }
    char *out;
    size_t cap;
    if (run_helper(argv, input, env, timeout, &out, &cap, problem, plen) != 0)
        return -1;
    const char *pw = NULL;
    for (const char *line = out; *line; line += strcspn(line, "\n") + (line[strcspn(line, "\n")] != 0)) {
        if (strncmp(line, "password=", 9) == 0)
            pw = line + 9;
    }
    if (pw)
        *secret = token_from(pw, strcspn(pw, "\n"), "gave an empty password", problem, plen);
    else
        snprintf(problem, plen, "gave no password for %s://%s", protocol, host);
    wipe_free(out, cap);
    return *secret ? 0 : -1;
}

int fleet_helper_git_target(const char *base_url, char *protocol, size_t protolen, char *host, size_t hostlen)
{
    const char *sep = strstr(base_url, "://");
    if (!sep || sep == base_url || (size_t)(sep - base_url) >= protolen)
        return -1;
    snprintf(protocol, protolen, "%.*s", (int)(sep - base_url), base_url);
    for (char *p = protocol; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    const char *h = sep + 3;
    size_t n = strcspn(h, "/?#");
    if (n > 4 && strncasecmp(h, "api.", 4) == 0)
        h += 4, n -= 4;
    if (n == 0 || n >= hostlen)
        return -1;
    snprintf(host, hostlen, "%.*s", (int)n, h);
    return 0;
}
