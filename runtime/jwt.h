/* The JSON Web Token a GitHub App authenticates with: RS256 over
 * {"iat", "exp", "iss"}, signed with the app's private key by OpenSSL's
 * libcrypto. Only the framing (base64url, the two small JSON objects) is
 * written here. */
#ifndef FLEET_JWT_H
#define FLEET_JWT_H

#include <stddef.h>

/* GitHub refuses an exp more than 10 minutes after iat; iat is set 60 s
 * in the past against clock drift, so a JWT is good for 9 minutes. */
#define FLEET_JWT_BACKDATE 60
#define FLEET_JWT_LIFETIME 600

/* Reads a PEM private key file (at most 64 KiB) into a malloc'd string.
 * Returns 0, or -1 with problem set (never quoting the file). */
int fleet_jwt_read_key_file(const char *path, char **pem, char *problem, size_t plen);

/* Whether pem holds an RSA private key OpenSSL can sign with. */
int fleet_jwt_check_key(const char *pem, char *problem, size_t plen);

/* Writes the JWT for app_id issued at `now` (epoch seconds) into out.
 * Returns its length, or -1 with problem set. */
long fleet_jwt_sign(const char *pem, const char *app_id, long now, char *out, size_t outlen, char *problem,
                    size_t plen);

#endif
