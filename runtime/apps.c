/* GitHub Apps in the host: keys, JWTs and installation tokens in locked,
 * non-dumpable memory, and the primitives runtime/lua/fleet/apps.lua
 * drives them with. See apps.h. */
#include "apps.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include <lauxlib.h>

#include "cache.h"
#include "host.h"
#include "http.h"
#include "jwt.h"
#include "lfleet.h"
#include "log.h"
#include "pool.h"
#include "redact.h"

#define JWT_MAX 2048       /* an RS256 JWT of an 8192-bit key fits */
#define INSTALLATION_MAX 256 /* GitHub's installation tokens are about 40 bytes */
#define JWT_RESIGN_AFTER 300 /* seconds: a JWT is good for 540, re-signed well before */

struct app_installation {
    struct fleet_token *token;
    char id[24];
    char *secret; /* INSTALLATION_MAX bytes of the arena */
};

struct fleet_app {
    struct fleet_provider *provider;
    const struct fleet_app_conf *conf;
    struct fleet_token *jwt_token;
    char *key; /* the PEM, in the arena */
    char *jwt; /* JWT_MAX bytes of the arena */
    double jwt_signed_at;
    struct app_installation *inst;
    int ninst, cap;
    bool disabled;
};

struct fleet_apps {
    struct fleet_host *host;
    struct fleet_app *apps;
    size_t napps;
    char *arena; /* locked, excluded from core dumps */
    size_t arena_size, used;
};

static char *arena_take(struct fleet_apps *a, size_t n)
{
    char *p = a->arena + a->used;
    a->used += n;
    return p;
}

struct fleet_apps *fleet_apps_new(struct fleet_host *host, char *err, size_t errlen)
{
    struct fleet_apps *a = calloc(1, sizeof *a);
    if (!a)
        goto oom;
    a->host = host;
    for (size_t i = 0; i < host->cfg.nproviders; i++)
        for (size_t j = 0; j < host->cfg.providers[i].napps; j++) {
            const struct fleet_app_conf *c = &host->cfg.providers[i].apps[j];
            size_t cap = c->installations_auto ? FLEET_APP_MAX_INSTALLATIONS : c->ninstallations;
            a->arena_size += strlen(c->private_key) + 1 + JWT_MAX + cap * INSTALLATION_MAX;
            a->napps++;
        }
    if (!a->napps)
        return a;
    a->apps = calloc(a->napps, sizeof *a->apps);
    a->arena = mmap(NULL, a->arena_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (!a->apps || a->arena == MAP_FAILED) {
        a->arena = NULL;
        goto oom;
    }
    (void)mlock(a->arena, a->arena_size); /* best effort, like the pool's */
    (void)madvise(a->arena, a->arena_size, MADV_DONTDUMP);
    size_t n = 0;
    for (size_t i = 0; i < host->cfg.nproviders; i++) {
        struct fleet_provider_conf *pc = &host->cfg.providers[i];
        struct fleet_provider *p = fleet_host_provider(host, pc->name);
        for (size_t j = 0; j < pc->napps; j++) {
            struct fleet_app_conf *c = &pc->apps[j];
            struct fleet_app *app = &a->apps[n++];
            app->provider = p;
            app->conf = c;
            size_t klen = strlen(c->private_key);
            app->key = arena_take(a, klen + 1);
            memcpy(app->key, c->private_key, klen + 1);
            explicit_bzero(c->private_key, klen); /* the locked copy is the one kept */
            app->jwt = arena_take(a, JWT_MAX);
            app->cap = c->installations_auto ? FLEET_APP_MAX_INSTALLATIONS : (int)c->ninstallations;
            app->inst = calloc((size_t)app->cap, sizeof *app->inst);
            if (!app->inst)
                goto oom;
            for (int k = 0; k < app->cap; k++)
                app->inst[k].secret = arena_take(a, INSTALLATION_MAX);
            if (!p)
                continue; /* no plugin for the instance: reported when it is used */
            app->jwt_token = fleet_pool_add_token(host->pool, p, c->label, TOKEN_APP);
            if (!app->jwt_token) {
                snprintf(err, errlen, "app %s: no room in the token pool", c->label);
                fleet_apps_free(a);
                return NULL;
            }
        }
    }
    return a;
oom:
    snprintf(err, errlen, "cannot set up GitHub Apps: out of memory");
    fleet_apps_free(a);
    return NULL;
}

void fleet_apps_free(struct fleet_apps *a)
{
    if (!a)
        return;
    for (size_t i = 0; a->apps && i < a->napps; i++)
        free(a->apps[i].inst);
    free(a->apps);
    if (a->arena) {
        explicit_bzero(a->arena, a->arena_size);
        munlock(a->arena, a->arena_size);
        munmap(a->arena, a->arena_size);
    }
    free(a);
}

static struct fleet_app *check_app(lua_State *L, int parg, int larg)
{
    struct fleet_host *host = fleet_host_from(L);
    const char *pname = luaL_checkstring(L, parg), *label = luaL_checkstring(L, larg);
    for (size_t i = 0; host->apps && i < host->apps->napps; i++) {
        struct fleet_app *app = &host->apps->apps[i];
        if (app->provider && strcmp(app->provider->name, pname) == 0 && strcmp(app->conf->label, label) == 0)
            return app;
    }
    luaL_argerror(L, larg, lua_pushfstring(L, "provider %s has no app labelled '%s'", pname, label));
    return NULL;
}

static struct app_installation *installation_of(struct fleet_host *host, const char *pname, const char *label)
{
    for (size_t i = 0; host->apps && i < host->apps->napps; i++) {
        struct fleet_app *app = &host->apps->apps[i];
        if (!app->provider || strcmp(app->provider->name, pname) != 0)
            continue;
        for (int k = 0; k < app->ninst; k++)
            if (strcmp(app->inst[k].token->label, label) == 0)
                return &app->inst[k];
    }
    return NULL;
}

/* fleet.core.apps(provider) -> { {label=, app_id=, auto=, installations=
 * {configured ids or logins}, disabled=, tokens={ {label=, id=, expires_at=} }} } */
static int l_apps(lua_State *L)
{
    struct fleet_host *host = fleet_host_from(L);
    const char *pname = luaL_checkstring(L, 1);
    lua_newtable(L);
    int n = 0;
    for (size_t i = 0; host->apps && i < host->apps->napps; i++) {
        struct fleet_app *app = &host->apps->apps[i];
        if (!app->provider || strcmp(app->provider->name, pname) != 0)
            continue;
        lua_createtable(L, 0, 6);
        lua_pushstring(L, app->conf->label);
        lua_setfield(L, -2, "label");
        lua_pushstring(L, app->conf->app_id);
        lua_setfield(L, -2, "app_id");
        lua_pushboolean(L, app->conf->installations_auto);
        lua_setfield(L, -2, "auto");
        lua_pushboolean(L, app->disabled);
        lua_setfield(L, -2, "disabled");
        lua_createtable(L, (int)app->conf->ninstallations, 0);
        for (size_t k = 0; k < app->conf->ninstallations; k++) {
            lua_pushstring(L, app->conf->installations[k]);
            lua_rawseti(L, -2, (lua_Integer)k + 1);
        }
        lua_setfield(L, -2, "installations");
        lua_createtable(L, app->ninst, 0);
        for (int k = 0; k < app->ninst; k++) {
            lua_createtable(L, 0, 3);
            lua_pushstring(L, app->inst[k].token->label);
            lua_setfield(L, -2, "label");
            lua_pushstring(L, app->inst[k].id);
            lua_setfield(L, -2, "id");
            lua_pushnumber(L, app->inst[k].token->expires_at);
            lua_setfield(L, -2, "expires_at");
            lua_rawseti(L, -2, k + 1);
        }
        lua_setfield(L, -2, "tokens");
        lua_rawseti(L, -2, ++n);
    }
    return 1;
}

/* fleet.core.app_sign(provider, label) -> true | nil, message: makes sure
 * the app's token carries a JWT good for minutes yet. */
static int l_app_sign(lua_State *L)
{
    struct fleet_app *app = check_app(L, 1, 2);
    double now = fleet_now();
    if (app->disabled) {
        lua_pushnil(L);
        lua_pushfstring(L, "app %s is disabled", app->conf->label);
        return 2;
    }
    if (app->jwt_signed_at > 0 && now - app->jwt_signed_at < JWT_RESIGN_AFTER) {
        lua_pushboolean(L, 1);
        return 1;
    }
    char problem[200];
    long len = fleet_jwt_sign(app->key, app->conf->app_id, (long)now, app->jwt, JWT_MAX, problem, sizeof problem);
    if (len < 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "app %s: %s", app->conf->label, problem);
        return 2;
    }
    fleet_log_add_secret(app->jwt, (size_t)len);
    app->jwt_token->secret = app->jwt;
    app->jwt_token->secret_len = (size_t)len;
    app->jwt_signed_at = now;
    lua_pushboolean(L, 1);
    return 1;
}

/* fleet.core.app_add_installation(provider, app, id, account) -> label | nil, message:
 * the pool token of installation `id` (made on first call), labelled
 * "APP/ACCOUNT". It has no secret until a token is taken for it. */
static int l_app_add_installation(lua_State *L)
{
    struct fleet_host *host = fleet_host_from(L);
    struct fleet_app *app = check_app(L, 1, 2);
    const char *id = luaL_checkstring(L, 3);
    const char *account = luaL_checkstring(L, 4);
    luaL_argcheck(L, strlen(id) < sizeof app->inst[0].id, 3, "installation id too long");
    for (int k = 0; k < app->ninst; k++)
        if (strcmp(app->inst[k].id, id) == 0) {
            lua_pushstring(L, app->inst[k].token->label);
            return 1;
        }
    if (app->ninst >= app->cap) {
        lua_pushnil(L);
        lua_pushfstring(L, "app %s has more than %d installations; list the ones to use under installations",
                        app->conf->label, app->cap);
        return 2;
    }
    const char *label = lua_pushfstring(L, "%s/%s", app->conf->label, account);
    struct fleet_token *t = fleet_pool_add_token(host->pool, app->provider, label, TOKEN_INSTALLATION);
    if (!t) {
        lua_pushnil(L);
        lua_pushfstring(L, "app %s: no room in the token pool", app->conf->label);
        return 2;
    }
    struct app_installation *inst = &app->inst[app->ninst++];
    inst->token = t;
    snprintf(inst->id, sizeof inst->id, "%s", id);
    /* The cache knows the installation by a stable identity, not by its
     * hourly token, so a refresh keeps the cached validators usable. */
    struct fleet_cache *cache = fleet_host_cache(host);
    if (cache) {
        const char *ident = lua_pushfstring(L, "github-app %s installation %s", app->conf->app_id, id);
        fleet_cache_credential(cache, ident, strlen(ident), t->cache_id);
        lua_pop(L, 1);
    }
    return 1; /* the label */
}

/* fleet.core.app_disable(provider, app, why): GitHub rejected the app's key;
 * its tokens are not used again this run, and that is said once. */
static int l_app_disable(lua_State *L)
{
    struct fleet_app *app = check_app(L, 1, 2);
    const char *why = luaL_checkstring(L, 3);
    if (app->disabled)
        return 0;
    app->disabled = true;
    if (app->jwt_token)
        app->jwt_token->disabled = true;
    for (int k = 0; k < app->ninst; k++)
        app->inst[k].token->disabled = true;
    fleet_log(FLEET_LOG_ERROR, "app %s of %s is disabled for this run: %s; its installations are not used",
              app->conf->label, app->provider->name, why);
    return 0;
}

/* The string value of `key` at the top level of the JSON object in s (no
 * escapes in it: tokens and timestamps have none). Other values are
 * skipped, strings and nesting included. */
static bool top_level_string(const char *s, size_t n, const char *key, const char **val, size_t *vlen)
{
    size_t klen = strlen(key), i = 0;
    int depth = 0;
    const char *last_key = NULL;
    size_t last_klen = 0;
    bool expect_key = false;
    while (i < n) {
        char c = s[i];
        if (c == '"') {
            size_t start = ++i;
            bool escaped = false;
            while (i < n && s[i] != '"') {
                if (s[i] == '\\') {
                    escaped = true;
                    i++;
                }
                i++;
            }
            if (i >= n)
                return false;
            if (depth == 1 && expect_key) {
                last_key = s + start;
                last_klen = i - start;
                expect_key = false;
            } else if (depth == 1 && last_key && last_klen == klen && memcmp(last_key, key, klen) == 0) {
                if (escaped)
                    return false;
                *val = s + start;
                *vlen = i - start;
                return true;
            }
            i++;
            continue;
        }
        if (c == '{' || c == '[') {
            depth++;
            expect_key = depth == 1 && c == '{';
        } else if (c == '}' || c == ']') {
            depth--;
        } else if (c == ',' && depth == 1) {
            expect_key = true;
            last_key = NULL;
        }
        i++;
    }
    return false;
}

/* "2016-07-11T22:14:10Z" -> epoch seconds, or -1. */
static double parse_utc(const char *s, size_t n)
{
    char buf[32];
    if (n >= sizeof buf)
        return -1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    struct tm tm = {0};
    const char *end = strptime(buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return end && !*end ? (double)timegm(&tm) : -1;
}

int fleet_apps_push_taken(lua_State *L, struct fleet_host *host, const char *provider, const char *label,
                          const struct fleet_response *resp)
{
    struct app_installation *inst = installation_of(host, provider, label);
    const char *problem = NULL;
    const char *tok = NULL, *exp = NULL;
    size_t toklen = 0, explen = 0;
    if (resp->err_kind != ERR_NONE)
        problem = resp->err_message ? resp->err_message : "the request failed";
    else if (!inst)
        problem = "no such installation token";
    else if (!resp->body || !top_level_string(resp->body, resp->body_len, "token", &tok, &toklen) || toklen == 0 ||
             toklen >= INSTALLATION_MAX)
        problem = "the response holds no installation token";
    else if (!top_level_string(resp->body, resp->body_len, "expires_at", &exp, &explen) ||
             parse_utc(exp, explen) < 0)
        problem = "the response holds no expiry for the installation token";
    for (size_t i = 0; !problem && i < toklen; i++)
        if ((unsigned char)tok[i] <= 0x20 || tok[i] == 0x7f)
            problem = "the installation token holds a control character";
    double expires_at = problem ? 0 : parse_utc(exp, explen);
    if (!problem) {
        memcpy(inst->secret, tok, toklen);
        inst->secret[toklen] = '\0';
        fleet_log_add_secret(inst->secret, toklen);
        struct fleet_token *t = inst->token;
        t->secret = inst->secret;
        t->secret_len = toklen;
        t->expires_at = expires_at;
        t->disabled = false; /* a token refused after it expired is usable again */
    }
    if (resp->body)
        explicit_bzero(resp->body, resp->body_len);
    if (problem) {
        lua_pushnil(L);
        fleet_push_error(L, resp->err_kind != ERR_NONE ? fleet_err_kind_name(resp->err_kind) : "decode", problem);
        if (resp->status > 0) {
            lua_pushinteger(L, resp->status);
            lua_setfield(L, -2, "status");
        }
        return 2;
    }
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, resp->status);
    lua_setfield(L, -2, "status");
    lua_pushnumber(L, expires_at);
    lua_setfield(L, -2, "expires_at");
    return 1;
}

void fleet_apps_register(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"apps", l_apps},
        {"app_sign", l_app_sign},
        {"app_add_installation", l_app_add_installation},
        {"app_disable", l_app_disable},
        {NULL, NULL},
    };
    lua_pushvalue(L, lua_upvalueindex(1));
    luaL_setfuncs(L, funcs, 1);
}
