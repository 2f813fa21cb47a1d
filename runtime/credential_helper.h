/* Credential helpers: a token read from a program the user already trusts
 * (token_command: a password manager's CLI, `gh auth token`) or from git's
 * own credential helpers (`git credential fill`), instead of a secret in a
 * file. Run once while the configuration loads.
 *
 * No shell is involved. The helper's standard error goes to ours (it may
 * need to say why it failed); its standard output is the secret and is
 * never shown: a problem is described by what happened (exit status, no
 * output, timeout), never by what was printed. */
#ifndef FLEET_CREDENTIAL_HELPER_H
#define FLEET_CREDENTIAL_HELPER_H

#include <stddef.h>

#define FLEET_HELPER_TIMEOUT 30.0 /* seconds, when the entry gives none */

/* Runs argv[0] (found on PATH) with argv, at most `timeout` seconds; its
 * first line of output is the token. Returns 0 with *secret malloc'd, or
 * -1 with problem set ("exited with status 3"). */
int fleet_helper_token(char *const argv[], double timeout, char **secret, char *problem, size_t plen);

/* Asks `git credential fill` for protocol://host (host may carry :port),
 * without prompting on the terminal. Returns 0 with *secret malloc'd (the
 * password git's helpers gave), or -1 with problem set. */
int fleet_helper_git(const char *protocol, const char *host, double timeout, char **secret, char *problem,
                     size_t plen);

/* The host git credentials are stored under for an API base URL: the
 * URL's host[:port], without a leading "api." (api.github.com serves
 * github.com). Writes protocol and host; returns -1 if the URL has none. */
int fleet_helper_git_target(const char *base_url, char *protocol, size_t protolen, char *host, size_t hostlen);

#endif
