/* Levelled logging to stderr with secret redaction.
 *
 * Every line is redacted (redact.c) before it is written, so a secret
 * cannot reach stderr even through a message that quotes a server's
 * response. */
#include "log.h"
#include "redact.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int current_level = FLEET_LOG_INFO;
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
