/* RS256 JWTs for GitHub Apps, with OpenSSL's EVP interface. */
#include "jwt.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#define MAX_KEY_FILE (64 << 10)

int fleet_jwt_read_key_file(const char *path, char **pem, char *problem, size_t plen)
{
    *pem = NULL;
    FILE *f = fopen(path, "re");
    if (!f) {
        snprintf(problem, plen, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    char *buf = malloc(MAX_KEY_FILE + 2);
    size_t n = buf ? fread(buf, 1, MAX_KEY_FILE + 1, f) : 0;
    int failed = !buf || ferror(f);
    fclose(f);
    if (failed || n == 0 || n > MAX_KEY_FILE) {
        snprintf(problem, plen, "%s %s", path, failed ? "cannot be read" : n ? "is larger than 64 KiB" : "is empty");
        if (buf) {
            explicit_bzero(buf, MAX_KEY_FILE + 2);
            free(buf);
        }
        return -1;
    }
    buf[n] = '\0';
    *pem = buf;
    return 0;
}

static EVP_PKEY *load_key(const char *pem, char *problem, size_t plen)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    /* A NULL password callback would prompt on the terminal for an
     * encrypted key; an empty password makes that fail instead. */
    EVP_PKEY *key = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, (void *)"") : NULL;
    BIO_free(bio);
    ERR_clear_error(); /* OpenSSL's queue may name what it parsed */
    if (!key) {
        snprintf(problem, plen, "is not a PEM private key (or it is encrypted)");
        return NULL;
    }
    if (EVP_PKEY_get_base_id(key) != EVP_PKEY_RSA || EVP_PKEY_get_bits(key) < 2048) {
        snprintf(problem, plen, "is not an RSA key of at least 2048 bits (GitHub Apps sign with RS256)");
        EVP_PKEY_free(key);
        return NULL;
    }
    return key;
}

int fleet_jwt_check_key(const char *pem, char *problem, size_t plen)
{
    EVP_PKEY *key = load_key(pem, problem, plen);
    EVP_PKEY_free(key);
    return key ? 0 : -1;
}

/* base64url without padding (RFC 7515, section 2). */
static size_t b64url(const unsigned char *in, size_t n, char *out)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (i + 1 < n ? (unsigned)in[i + 1] << 8 : 0) | (i + 2 < n ? in[i + 2] : 0);
        out[o++] = a[v >> 18 & 63];
        out[o++] = a[v >> 12 & 63];
        if (i + 1 < n)
            out[o++] = a[v >> 6 & 63];
        if (i + 2 < n)
            out[o++] = a[v & 63];
    }
    out[o] = '\0';
    return o;
}

long fleet_jwt_sign(const char *pem, const char *app_id, long now, char *out, size_t outlen, char *problem,
                    size_t plen)
{
    static const char header[] = "{\"alg\":\"RS256\",\"typ\":\"JWT\"}";
    char claims[128];
    int clen = snprintf(claims, sizeof claims, "{\"iat\":%ld,\"exp\":%ld,\"iss\":\"%s\"}", now - FLEET_JWT_BACKDATE,
                        now - FLEET_JWT_BACKDATE + FLEET_JWT_LIFETIME, app_id);
    if (clen < 0 || (size_t)clen >= sizeof claims) {
        snprintf(problem, plen, "the app id is too long");
        return -1;
    }
    size_t need = 4 * (sizeof header + (size_t)clen) / 3 + 8 + 4 * 1024 / 3 + 8; /* up to 8192-bit keys */
    if (outlen < need) {
        snprintf(problem, plen, "no room for the token");
        return -1;
    }
    EVP_PKEY *key = load_key(pem, problem, plen);
    if (!key)
        return -1;
    size_t o = b64url((const unsigned char *)header, sizeof header - 1, out);
    out[o++] = '.';
    o += b64url((const unsigned char *)claims, (size_t)clen, out + o);
    unsigned char sig[1024];
    size_t siglen = sizeof sig;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int ok = md && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
             EVP_DigestSign(md, sig, &siglen, (const unsigned char *)out, o) == 1;
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(key);
    ERR_clear_error();
    if (!ok) {
        snprintf(problem, plen, "could not sign with the key");
        return -1;
    }
    out[o++] = '.';
    o += b64url(sig, siglen, out + o);
    return (long)o;
}
