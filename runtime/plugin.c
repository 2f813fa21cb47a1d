/* Provider plugins.
 *
 * A plugin is loaded as a text chunk (never bytecode, which could crash
 * the VM) with its own _ENV whose reads fall through to a read-only base of
 * safe globals, under an instruction budget so a runaway top level cannot
 * hang the host. Its table is checked field by field here, so a mistake is
 * reported with the file and the field instead of failing mid-run. */
#include "plugin.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <lauxlib.h>

#include "host.h"
#include "log.h"
#include "lstate.h"
#include "urlpath.h"

struct plugin {
    char *name;
    char *file;
    int table_ref;
};

struct plugin_set {
    struct plugin *items;
    size_t n;
};

/* ---- the sandbox ---- */

static int readonly_newindex(lua_State *L)
{
    return luaL_error(L, "the shared environment of plugins is read-only (field '%s')", lua_tostring(L, 2));
}

/* Makes the table on top of the stack read-only: it is replaced by an
 * empty proxy whose reads fall through to it. */
static void make_readonly(lua_State *L)
{
    lua_newtable(L);                   /* [lib, proxy] */
    lua_newtable(L);                   /* [lib, proxy, mt] */
    lua_pushvalue(L, -3);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, readonly_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
    lua_remove(L, -2);                 /* [proxy] */
}

/* require, for plugins: cjson and fleet.plugin only, each as a read-only
 * view of its own, so a plugin can neither reach io, os or the host's
 * modules through it nor change a module the host and scripts use. */
static int plugin_require(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    if (strcmp(name, "cjson") != 0 && strcmp(name, "fleet.plugin") != 0)
        return luaL_error(L, "plugins may require only cjson and fleet.plugin, not '%s'", name);
    lua_settop(L, 1);
    lua_getglobal(L, "require");
    lua_insert(L, 1);
    lua_call(L, 1, 1);
    make_readonly(L);
    return 1;
}

/* Metatables a plugin set itself (a weak-keyed set in the registry). Only
 * these can a plugin read or replace: the metatables of strings and of
 * the host's objects (the api object, errors) are shared with the host
 * and with scripts, and changing one would change them everywhere. */
#define PLUGIN_METATABLES "fleet.plugin_metatables"

static void push_plugin_metatables(lua_State *L)
{
    if (lua_getfield(L, LUA_REGISTRYINDEX, PLUGIN_METATABLES) == LUA_TTABLE)
        return;
    lua_pop(L, 1);
    lua_newtable(L);
    lua_newtable(L);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, PLUGIN_METATABLES);
}

/* Pushes the metatable of the value at idx if a plugin made it; returns
 * whether it did (nothing is pushed otherwise). */
static int push_plugin_made_metatable(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    if (lua_type(L, idx) != LUA_TTABLE || !lua_getmetatable(L, idx))
        return 0;
    push_plugin_metatables(L);     /* [mt, set] */
    lua_pushvalue(L, -2);
    int made = lua_rawget(L, -2) != LUA_TNIL;
    lua_pop(L, 2);
    if (!made)
        lua_pop(L, 1);
    return made;
}

/* getmetatable, for plugins: nil for every value whose metatable the
 * plugin did not set (strings, the host's objects). */
static int plugin_getmetatable(lua_State *L)
{
    luaL_checkany(L, 1);
    if (!push_plugin_made_metatable(L, 1)) {
        lua_pushnil(L);
        return 1;
    }
    /* its __metatable field if it has one, as Lua's getmetatable does */
    luaL_getmetafield(L, 1, "__metatable");
    return 1;
}

/* setmetatable, for plugins: on a table with no metatable or one the
 * plugin set; the new metatable is remembered as the plugin's. */
static int plugin_setmetatable(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    int t = lua_type(L, 2);
    luaL_argexpected(L, t == LUA_TNIL || t == LUA_TTABLE, 2, "nil or table");
    if (lua_getmetatable(L, 1)) {
        lua_pop(L, 1);
        if (!push_plugin_made_metatable(L, 1))
            return luaL_error(L, "plugins may set metatables only on tables they made");
        lua_pop(L, 1);
        if (luaL_getmetafield(L, 1, "__metatable") != LUA_TNIL)
            return luaL_error(L, "cannot change a protected metatable");
    }
    lua_settop(L, 2);
    if (t == LUA_TTABLE) {
        push_plugin_metatables(L);
        lua_pushvalue(L, 2);
        lua_pushboolean(L, 1);
        lua_rawset(L, -3);
        lua_pop(L, 1);
    }
    lua_setmetatable(L, 1);
    return 1;
}

/* Pushes a new base table for one plugin: read-only, over read-only views
 * of the libraries. Each plugin gets its own, so that what one plugin does
 * to its globals (rawset included) no other plugin, the host or a script
 * sees. docs/providers.md ("The sandbox") lists what is here. */
static void push_plugin_base(lua_State *L)
{
    static const char *const globals[] = {
        "assert", "error", "ipairs", "next", "pairs", "pcall", "select", "tonumber", "tostring", "type",
        "xpcall", "rawequal", "rawget", "rawlen", "rawset", "_VERSION", NULL,
    };
    static const char *const libraries[] = {"string", "table", "math", "utf8", NULL};
    lua_newtable(L);                   /* [base] */
    for (const char *const *g = globals; *g; g++) {
        lua_getglobal(L, *g);
        lua_setfield(L, -2, *g);
    }
    lua_pushcfunction(L, plugin_getmetatable);
    lua_setfield(L, -2, "getmetatable");
    lua_pushcfunction(L, plugin_setmetatable);
    lua_setfield(L, -2, "setmetatable");
    for (const char *const *g = libraries; *g; g++) {
        lua_getglobal(L, *g);
        make_readonly(L);
        lua_setfield(L, -2, *g);
    }
    /* os: only the clock and dates. */
    lua_newtable(L);
    lua_getglobal(L, "os");
    static const char *const os_fields[] = {"time", "date", "clock", "difftime", NULL};
    for (const char *const *f = os_fields; *f; f++) {
        lua_getfield(L, -1, *f);
        lua_setfield(L, -3, *f);
    }
    lua_pop(L, 1);
    make_readonly(L);
    lua_setfield(L, -2, "os");
    lua_pushcfunction(L, plugin_require);
    lua_pushliteral(L, "cjson");
    lua_call(L, 1, 1);                 /* [base, json view] */
    lua_setfield(L, -2, "json");
    lua_pushcfunction(L, plugin_require);
    lua_setfield(L, -2, "require");
    make_readonly(L);
}

static void instruction_budget_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    luaL_error(L, "exceeded the instruction budget for loading a plugin (lua.plugin_instructions)");
}

/* ---- checking the table ---- */

struct field {
    const char *path; /* "auth.header" */
    int type;         /* LUA_TSTRING, LUA_TTABLE, LUA_TFUNCTION, LUA_TNUMBER */
    int required;
};

/* Fields of the plugin contract (docs/providers.md). */
static const struct field contract[] = {
    {"base_url", LUA_TSTRING, 1},
    {"title", LUA_TSTRING, 0},
    {"auth", LUA_TTABLE, 1},
    {"auth.header", LUA_TSTRING, 1},
    {"auth.scheme", LUA_TSTRING, 0},
    {"budget", LUA_TTABLE, 0},
    {"budget.limit", LUA_TSTRING, 0},
    {"budget.remaining", LUA_TSTRING, 0},
    {"budget.used", LUA_TSTRING, 0},
    {"budget.reset", LUA_TSTRING, 0},
    {"budget.reset_kind", LUA_TSTRING, 0},
    {"budget.resource", LUA_TSTRING, 0},
    {"budget.default_resource", LUA_TSTRING, 0},
    {"budget.per_account", LUA_TBOOLEAN, 0},
    {"limits", LUA_TTABLE, 0},
    {"limits.statuses", LUA_TTABLE, 0},
    {"limits.secondary_patterns", LUA_TTABLE, 0},
    {"pagination", LUA_TTABLE, 1},
    {"pagination.style", LUA_TSTRING, 1},
    {"headers", LUA_TTABLE, 0},
    {"repositories", LUA_TFUNCTION, 1},
    {"normalize_repository", LUA_TFUNCTION, 1},
    {"repository_keys", LUA_TTABLE, 0},
    {"user_info", LUA_TFUNCTION, 0},
    {"account", LUA_TFUNCTION, 0},
    {"repository_details", LUA_TFUNCTION, 0},
    {"contributors", LUA_TFUNCTION, 0},
    {"branches", LUA_TFUNCTION, 0},
    {"rate_limit", LUA_TFUNCTION, 0},
    {NULL, 0, 0},
};

/* Pushes the value at a dotted path of the table at idx (nil if a part is
 * missing or not a table). */
static int get_path(lua_State *L, int idx, const char *path)
{
    idx = lua_absindex(L, idx);
    lua_pushvalue(L, idx);
    const char *p = path;
    while (*p) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        if (lua_type(L, -1) != LUA_TTABLE) {
            lua_pop(L, 1);
            lua_pushnil(L);
            return LUA_TNIL;
        }
        lua_pushlstring(L, p, n);
        lua_rawget(L, -2);
        lua_remove(L, -2);
        p += n + (dot ? 1 : 0);
    }
    return lua_type(L, -1);
}

static int check_contract(lua_State *L, int idx, const char *file, char *err, size_t errlen)
{
    for (const struct field *f = contract; f->path; f++) {
        int t = get_path(L, idx, f->path);
        lua_pop(L, 1);
        if (t == LUA_TNIL && !f->required)
            continue;
        if (t != f->type) {
            snprintf(err, errlen, "%s: field '%s' %s a %s%s%s", file, f->path,
                     t == LUA_TNIL ? "is missing; it must be" : "must be", lua_typename(L, f->type),
                     t == LUA_TNIL ? "" : ", not a ", t == LUA_TNIL ? "" : lua_typename(L, t));
            return -1;
        }
    }
    get_path(L, idx, "pagination.style");
    const char *style = lua_tostring(L, -1);
    int ok = strcmp(style, "link") == 0 || strcmp(style, "body") == 0 || strcmp(style, "none") == 0;
    lua_pop(L, 1);
    if (!ok) {
        snprintf(err, errlen, "%s: field 'pagination.style' must be \"link\", \"body\" or \"none\"", file);
        return -1;
    }
    get_path(L, idx, "base_url");
    const char *problem = fleet_base_url_problem(lua_tostring(L, -1));
    lua_pop(L, 1);
    if (problem) {
        snprintf(err, errlen, "%s: field 'base_url': %s", file, problem);
        return -1;
    }
    if (get_path(L, idx, "budget.reset_kind") == LUA_TSTRING) {
        const char *k = lua_tostring(L, -1);
        ok = strcmp(k, "epoch") == 0 || strcmp(k, "delta") == 0;
        if (!ok) {
            lua_pop(L, 1);
            snprintf(err, errlen, "%s: field 'budget.reset_kind' must be \"epoch\" or \"delta\"", file);
            return -1;
        }
    }
    lua_pop(L, 1);
    const char *arrays[] = {"limits.statuses", "limits.secondary_patterns"};
    for (int a = 0; a < 2; a++) {
        if (get_path(L, idx, arrays[a]) == LUA_TTABLE) {
            lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
            for (lua_Integer i = 1; i <= n; i++) {
                int t = lua_rawgeti(L, -1, i);
                lua_pop(L, 1);
                if (t != (a == 0 ? LUA_TNUMBER : LUA_TSTRING)) {
                    lua_pop(L, 1);
                    snprintf(err, errlen, "%s: field '%s' must list %s", file, arrays[a],
                             a == 0 ? "HTTP status numbers" : "strings");
                    return -1;
                }
            }
        }
        lua_pop(L, 1);
    }
    return 0;
}

/* ---- loading ---- */

static int load_one(struct fleet_host *host, const char *file, char *err, size_t errlen)
{
    lua_State *L = host->L;
    int top = lua_gettop(L);
    if (luaL_loadfilex(L, file, "t") != LUA_OK) {
        snprintf(err, errlen, "%s", lua_tostring(L, -1));
        lua_settop(L, top);
        return -1;
    }
    /* [chunk] give it its own _ENV over the read-only base */
    lua_newtable(L);
    lua_newtable(L);
    push_plugin_base(L);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, -2);
    lua_setupvalue(L, -2, 1);

    int budget = host->cfg.lua.plugin_instructions > 0x7fffffff ? 0x7fffffff : (int)host->cfg.lua.plugin_instructions;
    lua_sethook(L, instruction_budget_hook, LUA_MASKCOUNT, budget);
    int status = fleet_lstate_pcall(L, 0, 1);
    lua_sethook(L, NULL, 0, 0);
    if (status != LUA_OK) {
        const char *msg = status == LUA_ERRMEM ? fleet_lstate_status_text(host, status) : lua_tostring(L, -1);
        snprintf(err, errlen, "%s: error while loading the plugin: %s", file, msg ? msg : "?");
        lua_settop(L, top);
        return -1;
    }
    if (lua_type(L, -1) != LUA_TTABLE) {
        snprintf(err, errlen, "%s: a provider plugin must return a table, not %s", file, luaL_typename(L, -1));
        lua_settop(L, top);
        return -1;
    }
    if (check_contract(L, -1, file, err, errlen) != 0) {
        lua_settop(L, top);
        return -1;
    }
    return 0; /* [table] */
}

static int has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n > m && strcmp(s + n - m, suffix) == 0;
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int load_dir(struct fleet_host *host, struct plugin_set *set, const char *dir, int must_exist, char *err,
                    size_t errlen)
{
    DIR *d = opendir(dir);
    if (!d) {
        /* A configured folder that is not there yet is not fatal: a
         * provider that needs a plugin from it fails with its own message. */
        if (must_exist)
            fleet_log(FLEET_LOG_WARN, "plugin folder %s cannot be read: %s", dir, strerror(errno));
        return 0;
    }
    char **names = NULL;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || !has_suffix(e->d_name, ".lua"))
            continue;
        char **grown = realloc(names, (n + 1) * sizeof *names);
        if (!grown || !(grown[n] = strdup(e->d_name))) {
            names = grown ? grown : names;
            break;
        }
        names = grown;
        n++;
    }
    closedir(d);
    qsort(names, n, sizeof *names, by_name);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        if (rc == 0) {
            char file[4096];
            snprintf(file, sizeof file, "%s/%s", dir, names[i]);
            names[i][strlen(names[i]) - 4] = 0;
            if (load_one(host, file, err, errlen) != 0) {
                rc = -1;
            } else {
                int ref = luaL_ref(host->L, LUA_REGISTRYINDEX);
                struct plugin *p = NULL;
                for (size_t k = 0; k < set->n; k++)
                    if (strcmp(set->items[k].name, names[i]) == 0)
                        p = &set->items[k];
                if (p) {
                    fleet_log(FLEET_LOG_DEBUG, "plugin %s from %s replaces %s", names[i], file, p->file);
                    luaL_unref(host->L, LUA_REGISTRYINDEX, p->table_ref);
                    free(p->file);
                } else {
                    struct plugin *grown = realloc(set->items, (set->n + 1) * sizeof *grown);
                    if (!grown) {
                        snprintf(err, errlen, "out of memory");
                        rc = -1;
                    } else {
                        set->items = grown;
                        p = &set->items[set->n++];
                        p->name = strdup(names[i]);
                    }
                }
                if (p) {
                    p->file = strdup(file);
                    p->table_ref = ref;
                }
            }
        }
        free(names[i]);
    }
    free(names);
    return rc;
}

/* ---- instances ---- */

static char *field_string(lua_State *L, int ref, const char *path)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    get_path(L, -1, path);
    char *s = lua_type(L, -1) == LUA_TSTRING ? strdup(lua_tostring(L, -1)) : NULL;
    lua_pop(L, 2);
    return s;
}

static char *lower_dup(char *s)
{
    for (char *p = s; p && *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    return s;
}

static char *origin_of(const char *url)
{
    const char *p = strstr(url, "://");
    const char *end = p ? strpbrk(p + 3, "/?#") : NULL;
    return end ? strndup(url, (size_t)(end - url)) : strdup(url);
}

static int make_instance(struct fleet_host *host, struct fleet_provider *pv, const char *name,
                         const struct plugin *pl, const char *base_url, int ntokens)
{
    lua_State *L = host->L;
    memset(pv, 0, sizeof *pv);
    pv->name = strdup(name);
    pv->plugin = strdup(pl->name);
    pv->plugin_file = strdup(pl->file);
    pv->table_ref = pl->table_ref;
    pv->base_url = base_url ? strdup(base_url) : field_string(L, pl->table_ref, "base_url");
    if (pv->base_url) {
        size_t n = strlen(pv->base_url);
        while (n > 0 && pv->base_url[n - 1] == '/')
            pv->base_url[--n] = 0; /* paths are joined with a leading '/' */
        pv->origin = origin_of(pv->base_url);
    }
    pv->auth_header = field_string(L, pl->table_ref, "auth.header");
    pv->auth_scheme = field_string(L, pl->table_ref, "auth.scheme");
    pv->h_limit = lower_dup(field_string(L, pl->table_ref, "budget.limit"));
    pv->h_remaining = lower_dup(field_string(L, pl->table_ref, "budget.remaining"));
    pv->h_used = lower_dup(field_string(L, pl->table_ref, "budget.used"));
    pv->h_reset = lower_dup(field_string(L, pl->table_ref, "budget.reset"));
    pv->h_resource = lower_dup(field_string(L, pl->table_ref, "budget.resource"));
    pv->default_resource = field_string(L, pl->table_ref, "budget.default_resource");
    char *kind = field_string(L, pl->table_ref, "budget.reset_kind");
    pv->reset_is_delta = kind && strcmp(kind, "delta") == 0;
    free(kind);
    lua_rawgeti(L, LUA_REGISTRYINDEX, pl->table_ref);
    get_path(L, -1, "budget.per_account");
    pv->budget_per_account = lua_toboolean(L, -1);
    lua_pop(L, 2);
    pv->ntokens = ntokens;

    lua_rawgeti(L, LUA_REGISTRYINDEX, pl->table_ref);
    if (get_path(L, -1, "limits.statuses") == LUA_TTABLE) {
        lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
        for (lua_Integer i = 1; i <= n && pv->nlimit_statuses < 8; i++) {
            lua_rawgeti(L, -1, i);
            pv->limit_statuses[pv->nlimit_statuses++] = (int)lua_tointeger(L, -1);
            lua_pop(L, 1);
        }
    } else {
        pv->limit_statuses[0] = 403;
        pv->limit_statuses[1] = 429;
        pv->nlimit_statuses = 2;
    }
    lua_pop(L, 1);
    if (get_path(L, -1, "limits.secondary_patterns") == LUA_TTABLE) {
        size_t n = lua_rawlen(L, -1);
        pv->secondary_patterns = calloc(n + 1, sizeof *pv->secondary_patterns);
        for (size_t i = 1; pv->secondary_patterns && i <= n; i++) {
            lua_rawgeti(L, -1, (lua_Integer)i);
            pv->secondary_patterns[pv->nsecondary_patterns++] = strdup(lua_tostring(L, -1));
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 2);
    if (!pv->name || !pv->plugin || !pv->plugin_file || !pv->base_url || !pv->origin || !pv->auth_header)
        return -1;
    return 0;
}

static const struct plugin *find_plugin(const struct plugin_set *set, const char *name)
{
    for (size_t i = 0; i < set->n; i++)
        if (strcmp(set->items[i].name, name) == 0)
            return &set->items[i];
    return NULL;
}

int fleet_plugins_load(struct fleet_host *host, char *err, size_t errlen)
{
    struct plugin_set set = {0};
    int rc = -1;
    if (host->providers_dir && load_dir(host, &set, host->providers_dir, 0, err, errlen) != 0)
        goto out;
    for (size_t i = 0; i < host->cfg.nplugin_paths; i++)
        if (load_dir(host, &set, host->cfg.plugin_paths[i], 1, err, errlen) != 0)
            goto out;

    size_t cap = host->cfg.nproviders + set.n;
    host->providers = calloc(cap ? cap : 1, sizeof *host->providers);
    if (!host->providers) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    /* Configured instances first, in the order the config gives them. */
    for (size_t i = 0; i < host->cfg.nproviders; i++) {
        const struct fleet_provider_conf *pc = &host->cfg.providers[i];
        const char *plugin = pc->plugin ? pc->plugin : pc->name;
        const struct plugin *pl = find_plugin(&set, plugin);
        if (!pl) {
            int n = snprintf(err, errlen, "%s: provider '%s' needs plugin '%s', which is not installed (installed:",
                             pc->where, pc->name, plugin);
            for (size_t k = 0; k < set.n && n > 0 && (size_t)n < errlen; k++)
                n += snprintf(err + n, errlen - (size_t)n, " %s", set.items[k].name);
            if (n > 0 && (size_t)n < errlen)
                snprintf(err + n, errlen - (size_t)n, ")");
            goto out;
        }
        if (make_instance(host, &host->providers[host->nproviders++], pc->name, pl, pc->base_url,
                          (int)pc->ntokens) != 0) {
            snprintf(err, errlen, "out of memory");
            goto out;
        }
    }
    /* Then every plugin that no configured instance is named after. */
    for (size_t i = 0; i < set.n; i++) {
        if (fleet_host_provider(host, set.items[i].name))
            continue;
        if (make_instance(host, &host->providers[host->nproviders++], set.items[i].name, &set.items[i], NULL,
                          0) != 0) {
            snprintf(err, errlen, "out of memory");
            goto out;
        }
    }
    rc = 0;
out:
    for (size_t i = 0; i < set.n; i++) {
        free(set.items[i].name);
        free(set.items[i].file);
    }
    free(set.items);
    return rc;
}

void fleet_plugins_free(struct fleet_host *host)
{
    for (size_t i = 0; i < host->nproviders; i++) {
        struct fleet_provider *p = &host->providers[i];
        free(p->name);
        free(p->plugin);
        free(p->plugin_file);
        free(p->base_url);
        free(p->origin);
        free(p->auth_header);
        free(p->auth_scheme);
        free(p->h_limit);
        free(p->h_remaining);
        free(p->h_used);
        free(p->h_reset);
        free(p->h_resource);
        free(p->default_resource);
        for (size_t j = 0; j < p->nsecondary_patterns; j++)
            free(p->secondary_patterns[j]);
        free(p->secondary_patterns);
    }
    free(host->providers);
    host->providers = NULL;
    host->nproviders = 0;
}
