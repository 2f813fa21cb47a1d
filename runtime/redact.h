/* The registered secrets (tokens, their HTTP Basic forms, JWTs, passwords)
 * and their redaction from text: log lines, and every byte the host hands
 * on from the network. */
#ifndef FLEET_REDACT_H
#define FLEET_REDACT_H

#include <stddef.h>

/* Registers a secret to be redacted from then on. The bytes are copied;
 * secrets shorter than 4 bytes are ignored (they would redact ordinary
 * text), and one registered twice is kept once. */
void fleet_log_add_secret(const char *secret, size_t len);

/* Wipes and frees every registered secret. */
void fleet_log_forget_secrets(void);

/* Replaces each occurrence of a registered secret in buf[0..len) with '*'
 * bytes, in place; overlapping occurrences are all covered. Returns the
 * number of occurrences found. One pass over buf finds the secrets of 15
 * bytes or more, however many are registered. */
size_t fleet_redact(char *buf, size_t len);

#endif
