/* Levelled logging to stderr with secret redaction.
 *
 * Secrets are registered once by the token pool; every line is redacted
 * before it is written, so a secret cannot reach stderr even through a
 * message that quotes a server's response. */
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct secret {
    char *bytes;
    size_t len;
};

static int current_level = FLEET_LOG_INFO;
static struct secret *secrets;
static size_t nsecrets;
static char progress_line[512]; /* shown at the bottom of stderr; "" if none */

void fleet_log_set_level(int level) { current_level = level; }

/* The progress line is erased before a log line and drawn again after, so
 * the two never mix. */
static void progress_erase(void)
{
    if (progress_line[0])
        fputs("\r\033[K", stderr);
}

static void progress_draw(void)
{
    if (progress_line[0])
        fputs(progress_line, stderr);
    fflush(stderr);
}

void fleet_log_progress(const char *text)
{
    progress_erase();
    snprintf(progress_line, sizeof progress_line, "%s", text ? text : "");
    fleet_redact(progress_line, strlen(progress_line));
    progress_draw();
}

void fleet_log_line(const char *line, size_t len)
{
    char *copy = malloc(len + 1);
    if (!copy)
        return;
    memcpy(copy, line, len);
    copy[len] = '\n';
    fleet_redact(copy, len);
    progress_erase();
    fwrite(copy, 1, len + 1, stderr);
    progress_draw();
    free(copy);
}

void fleet_log_add_secret(const char *secret, size_t len)
{
    /* Very short strings would redact ordinary text; real tokens are long. */
    if (len < 4)
        return;
    for (size_t i = 0; i < nsecrets; i++)
        if (secrets[i].len == len && memcmp(secrets[i].bytes, secret, len) == 0)
            return;
    struct secret *grown = realloc(secrets, (nsecrets + 1) * sizeof *secrets);
    char *copy = malloc(len);
    if (!grown || !copy) {
        /* Out of memory: refuse to run rather than risk an unredacted line. */
        fputs("gitfleet: error: out of memory\n", stderr);
        exit(70);
    }
    memcpy(copy, secret, len);
    secrets = grown;
    secrets[nsecrets].bytes = copy;
    secrets[nsecrets].len = len;
    nsecrets++;
}

void fleet_log_forget_secrets(void)
{
    for (size_t i = 0; i < nsecrets; i++) {
        explicit_bzero(secrets[i].bytes, secrets[i].len);
        free(secrets[i].bytes);
    }
    free(secrets);
    secrets = NULL;
    nsecrets = 0;
}

size_t fleet_redact(char *buf, size_t len)
{
    size_t hits = 0;
    for (size_t i = 0; i < nsecrets; i++) {
        const struct secret *s = &secrets[i];
        char *p = buf;
        size_t left = len;
        char *found;
        while (left >= s->len && (found = memmem(p, left, s->bytes, s->len))) {
            memset(found, '*', s->len);
            hits++;
            left -= (size_t)(found + s->len - p);
            p = found + s->len;
        }
    }
    return hits;
}

void fleet_vlog(int level, const char *fmt, va_list ap)
{
    if (level > current_level)
        return;
    static const char *const prefix[] = {"error: ", "warning: ", "", ""};
    char line[4096];
    int n = snprintf(line, sizeof line, "gitfleet: %s", prefix[level]);
    int m = vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    fleet_redact(line, len);
    line[len++] = '\n';
    progress_erase();
    fwrite(line, 1, len, stderr);
    progress_draw();
}

void fleet_log(int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fleet_vlog(level, fmt, ap);
    va_end(ap);
}
