/* Levelled logging to stderr, with every registered secret redacted. */
#ifndef FLEET_LOG_H
#define FLEET_LOG_H

#include <stdarg.h>
#include <stddef.h>

#include "config.h" /* enum fleet_log_level */

void fleet_log_set_level(int level);

/* printf-like; prefixes "gitfleet: " (and "warning: " / "error: "), appends a
 * newline, and redacts every registered secret before writing. */
void fleet_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void fleet_vlog(int level, const char *fmt, va_list ap);

/* Shows text as the progress line at the bottom of stderr (a terminal),
 * replacing the previous one; NULL clears it. Log lines are written above
 * it. */
void fleet_log_progress(const char *text);

/* Writes one line to stderr as is (redacted, no prefix), above the
 * progress line. */
void fleet_log_line(const char *line, size_t len);

#endif
