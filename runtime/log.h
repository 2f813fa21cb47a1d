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

/* Registers a secret to be redacted from every log line and every string the
 * host hands to Lua from the network. The bytes are copied. */
void fleet_log_add_secret(const char *secret, size_t len);
void fleet_log_forget_secrets(void);

/* Replaces each occurrence of a registered secret in buf[0..len) with
 * "[REDACTED]"-sized filler in place ('*' bytes). Returns the number of
 * occurrences replaced. */
size_t fleet_redact(char *buf, size_t len);

/* Shows text as the progress line at the bottom of stderr (a terminal),
 * replacing the previous one; NULL clears it. Log lines are written above
 * it. */
void fleet_log_progress(const char *text);

/* Writes one line to stderr as is (redacted, no prefix), above the
 * progress line. */
void fleet_log_line(const char *line, size_t len);

#endif
