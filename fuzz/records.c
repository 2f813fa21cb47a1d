/* Response-body decoding and record normalisation, as a page of a listing
 * goes through the host: cjson.decode, each provider plugin's
 * normalize_repository, then the record writers
 * (loutput.c over output.c).
 *
 * One Lua state is made once, with cjson and the built-in fleet.X modules
 * (runtime/lua/fleet/, which plugins may require) preloaded, and every
 * plugin in ../providers loaded as plugin.c loads it: a text chunk whose
 * _ENV falls through to a read-only base of the safe globals plus
 * json = cjson. For each input that decodes to a table, every plugin
 * normalises, under pcall: the value itself (as a details body); each
 * element when it is an array (the host calls normalize(items[i]) on
 * whatever a page holds); and, for a plugin whose pages are in a body
 * field (Bitbucket's "values"), each element of that field.
 *
 * A plugin that raises, or returns something other than a table, is a
 * finding about that plugin: it is reported (and the input saved in
 * $FUZZ_FINDINGS_DIR/records-plugins/) but does not stop the run, unless
 * FUZZ_PLUGIN_ERRORS=fatal (and, if FUZZ_PLUGIN_ERROR_MATCH is set, the
 * "plugin: message" holds that text).
 *
 * Each record (with raw = the item, as --raw does) goes to an ndjson, a
 * json and a csv writer, writing to memfds, and the files are checked with
 * the independent parsers of fuzz_check.h: valid JSON (and UTF-8) per line
 * / as one array, RFC 4180 rows with one cell per column, and exactly as
 * many records as the writers accepted. The only encoding failure allowed
 * is nesting deeper than the writer's limit.
 *
 * libFuzzer cannot see into the Lua VM, so a line hook feeds the plugins'
 * line-to-line transitions to it as extra coverage counters, and so do the
 * JSON type at each key path of the body and each distinct plugin error:
 * a plugin that indexes a field fails on the line that works for a table,
 * so line coverage alone gives no reason to keep a number in that field. */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>

#include "fuzz_check.h"
#include "host.h"
#include "lfleet.h"
#include "sched.h"

#ifndef PROVIDERS_DIR
#define PROVIDERS_DIR "providers"
#endif
#ifndef RUNTIME_LUA_DIR
#define RUNTIME_LUA_DIR "runtime/lua"
#endif

#define INSTRUCTION_BUDGET 20000000 /* per input: a plugin that loops is a finding too */

int luaopen_cjson(lua_State *L);

/* The writer's links to the host and its scheduler, which this harness
 * does not have: no host (upvalue 1 is NULL), never a signal, no task, so
 * every close commits at once. */
volatile sig_atomic_t fleet_signal_received;
struct fleet_host *fleet_host_from(lua_State *S) { return lua_touserdata(S, lua_upvalueindex(1)); }
struct fleet_task *fleet_sched_current(struct fleet_sched *s, lua_State *S) { return NULL; }
void fleet_sched_abandon(struct fleet_sched *s, int signo) {}
void fleet_sched_wake(struct fleet_sched *s, struct fleet_task *t) {}
struct fleet_background *fleet_host_background(struct fleet_host *host) { return NULL; }

static lua_State *L;
static int driver_ref = LUA_NOREF;
static int memfds[3] = {-1, -1, -1}; /* ndjson, json, csv */
static const uint8_t *current;      /* the input being run, for reports */
static size_t current_size;
static long budget;
static unsigned long runs;

/* ---- Lua coverage for libFuzzer ---- */

#define COV_SIZE (1 << 14)
__attribute__((section("__libfuzzer_extra_counters"))) static uint8_t lua_cov[COV_SIZE];
static uintptr_t prev_loc;

static void hook(lua_State *S, lua_Debug *ar)
{
    if (ar->event == LUA_HOOKCOUNT) {
        budget -= 1000;
        if (budget < 0)
            luaL_error(S, "instruction budget exhausted (an endless loop?)");
        return;
    }
    lua_getinfo(S, "f", ar);
    uintptr_t fn = (uintptr_t)lua_topointer(S, -1);
    lua_pop(S, 1);
    uintptr_t loc = (fn >> 4) * 2654435761u ^ (uintptr_t)ar->currentline * 40503u;
    size_t i = (loc ^ prev_loc) & (COV_SIZE - 1);
    if (lua_cov[i] < 255)
        lua_cov[i]++;
    prev_loc = loc >> 1;
}

/* cov(text): one more feature, for shapes of the decoded body and for
 * each distinct plugin error, which line coverage cannot tell apart (a
 * line that indexes a number fails on the same line that indexes a table). */
static int l_cov(lua_State *S)
{
    size_t len;
    const char *text = luaL_checklstring(S, 1, &len);
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)text[i]) * 1099511628211ULL;
    size_t i = (size_t)(h ^ (h >> 29)) & (COV_SIZE - 1);
    if (lua_cov[i] < 255)
        lua_cov[i]++;
    return 0;
}

/* ---- plugin problems ---- */

struct seen {
    char **keys;
    size_t n;
};
static struct seen seen;

static uint64_t fnv1a(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 1099511628211ULL;
    return h;
}

static void save_input(const char *plugin, const char *msg)
{
    const char *dir = getenv("FUZZ_FINDINGS_DIR");
    if (!dir || !*dir)
        return;
    char sub[4096], file[4200];
    snprintf(sub, sizeof sub, "%s/records-plugins", dir);
    mkdir(dir, 0755);
    mkdir(sub, 0755);
    uint64_t h = fnv1a(msg, strlen(msg));
    snprintf(file, sizeof file, "%s/%s-%016llx.json", sub, plugin, (unsigned long long)h);
    FILE *f = fopen(file, "wb");
    if (f) {
        fwrite(current, 1, current_size, f);
        fclose(f);
    }
    snprintf(file, sizeof file, "%s/%s-%016llx.txt", sub, plugin, (unsigned long long)h);
    f = fopen(file, "wb");
    if (f) {
        fprintf(f, "%s\n", msg);
        fclose(f);
    }
}

/* report(plugin, item, message): one line per distinct message. */
static int l_report(lua_State *S)
{
    const char *plugin = luaL_checkstring(S, 1);
    lua_Integer item = luaL_checkinteger(S, 2);
    const char *msg = luaL_checkstring(S, 3);
    const char *mode = getenv("FUZZ_PLUGIN_ERRORS"), *match = getenv("FUZZ_PLUGIN_ERROR_MATCH");
    char key[1024];
    snprintf(key, sizeof key, "%s: %s", plugin, msg);
    /* MATCH: only that problem is fatal, so minimising keeps to it. */
    bool fatal = mode && strcmp(mode, "fatal") == 0 && (!match || strstr(key, match));
    for (size_t i = 0; i < seen.n; i++)
        if (strcmp(seen.keys[i], key) == 0 && !fatal)
            return 0;
    char **grown = realloc(seen.keys, (seen.n + 1) * sizeof *grown);
    if (!grown || !(grown[seen.n] = strdup(key)))
        abort();
    seen.keys = grown;
    seen.n++;
    fprintf(stderr, "records: plugin %s, %s: %s\n", plugin, item == 1 ? "the whole body" : "an element", msg);
    save_input(plugin, key);
    if (fatal)
        fuzz_fail("plugin %s raised on bad data: %s", plugin, msg);
    return 0;
}

/* ---- setup ---- */

/* The read-only base of plugin.c's push_plugin_base. */
static int readonly_newindex(lua_State *S)
{
    return luaL_error(S, "the shared environment of plugins is read-only (field '%s')", lua_tostring(S, 2));
}

static void push_plugin_base(lua_State *S)
{
    static const char *const globals[] = {
        "assert", "error", "ipairs", "next", "pairs", "pcall", "select", "tonumber", "tostring", "type",
        "xpcall", "setmetatable", "getmetatable", "rawequal", "rawget", "rawlen", "rawset", "require",
        "string", "table", "math", "utf8", "_VERSION", NULL,
    };
    lua_newtable(S); /* [base] */
    for (const char *const *g = globals; *g; g++) {
        lua_getglobal(S, *g);
        lua_setfield(S, -2, *g);
    }
    lua_newtable(S);
    lua_getglobal(S, "os");
    static const char *const os_fields[] = {"time", "date", "clock", "difftime", NULL};
    for (const char *const *f = os_fields; *f; f++) {
        lua_getfield(S, -1, *f);
        lua_setfield(S, -3, *f);
    }
    lua_pop(S, 1);
    lua_setfield(S, -2, "os");
    lua_getglobal(S, "require");
    lua_pushliteral(S, "cjson");
    lua_call(S, 1, 1);
    lua_setfield(S, -2, "json");
    lua_newtable(S); /* [base, mt] */
    lua_pushcfunction(S, readonly_newindex);
    lua_setfield(S, -2, "__newindex");
    lua_pushboolean(S, 0);
    lua_setfield(S, -2, "__metatable");
    lua_setmetatable(S, -2);
}

/* package.preload loader of a built-in module (runtime/lua/fleet/X.lua),
 * which the host compiles in (lstate.c) and plugins may require. */
static int load_builtin(lua_State *S)
{
    if (luaL_loadfilex(S, lua_tostring(S, lua_upvalueindex(1)), "t") != LUA_OK)
        return lua_error(S);
    lua_pushvalue(S, 1);
    lua_call(S, 1, 1);
    return 1;
}

/* Preloads every fleet.X but fleet itself (init.lua needs fleet.core, the
 * host's C side, which no plugin may use). */
static void preload_builtins(lua_State *S, const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        fuzz_fail("cannot open the built-in modules' folder %s: %s", dir, strerror(errno));
    luaL_getsubtable(S, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (e->d_name[0] == '.' || len <= 4 || strcmp(e->d_name + len - 4, ".lua") != 0 ||
            strcmp(e->d_name, "init.lua") == 0)
            continue;
        lua_pushfstring(S, "%s/%s", dir, e->d_name);
        lua_pushcclosure(S, load_builtin, 1);
        lua_pushfstring(S, "fleet.%s", e->d_name);
        lua_pushlstring(S, lua_tostring(S, -1), strlen(lua_tostring(S, -1)) - 4); /* drop ".lua" */
        lua_remove(S, -2);
        lua_insert(S, -2);
        lua_settable(S, -3);
    }
    closedir(d);
    lua_pop(S, 1);
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Loads each providers/NAME.lua into plugins[NAME] = {source text, plugin
 * table}; [base, plugins] on the stack. Returns how many loaded. */
static int load_plugins(lua_State *S, const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        fuzz_fail("cannot open the plugin folder %s: %s", dir, strerror(errno));
    char *names[64];
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 64) {
        size_t len = strlen(e->d_name);
        if (e->d_name[0] != '.' && len > 4 && strcmp(e->d_name + len - 4, ".lua") == 0)
            names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof *names, by_name);
    int loaded = 0;
    for (size_t i = 0; i < n; i++) {
        char file[4096], chunk[256];
        snprintf(file, sizeof file, "%s/%s", dir, names[i]);
        snprintf(chunk, sizeof chunk, "@providers/%s", names[i]);
        names[i][strlen(names[i]) - 4] = '\0';
        FILE *f = fopen(file, "rb");
        struct fz_vec text = {0};
        char buf[8192];
        size_t k;
        while (f && (k = fread(buf, 1, sizeof buf, f)) > 0)
            fz_add(&text, buf, k);
        if (f)
            fclose(f);
        int status = f ? luaL_loadbufferx(S, (const char *)text.p, text.len, chunk, "t") : LUA_ERRFILE;
        if (status == LUA_OK) {
            lua_newtable(S); /* [base, plugins, chunk, env] */
            lua_newtable(S);
            lua_pushvalue(S, -5);
            lua_setfield(S, -2, "__index");
            lua_setmetatable(S, -2);
            lua_setupvalue(S, -2, 1);
            status = lua_pcall(S, 0, 1, 0);
        }
        if (status != LUA_OK || !lua_istable(S, -1)) {
            fprintf(stderr, "records: skipping plugin %s: %s\n", names[i],
                    status != LUA_OK ? lua_tostring(S, -1) : "it returns no table");
            lua_pop(S, 1);
        } else if (lua_getfield(S, -1, "normalize_repository") != LUA_TFUNCTION) {
            fprintf(stderr, "records: skipping plugin %s: no normalize_repository\n", names[i]);
            lua_pop(S, 2);
        } else {
            lua_pop(S, 1); /* [base, plugins, table]: keep {source, table} */
            lua_createtable(S, 2, 0);
            lua_pushlstring(S, (const char *)text.p, text.len);
            lua_rawseti(S, -2, 1);
            lua_insert(S, -2);
            lua_rawseti(S, -2, 2);
            lua_setfield(S, -2, names[i]);
            loaded++;
        }
        fz_free(&text);
        free(names[i]);
    }
    return loaded;
}

/* fleet.core's writer, registered as lfleet.c registers it: from a C
 * function whose upvalue 1 is the host (unused by the writer). */
static int open_writer(lua_State *S)
{
    lua_newtable(S);
    fleet_output_register(S);
    return 1;
}

/* Run once with cjson, core.writer, plugins, the sorted plugin names, the
 * three paths, report and cov; returns the function run per input, and the
 * number of CSV columns. */
static const char driver[] =
    "local cjson, writer, plugins, names, paths, report, cov = ...\n"
    "-- the host's record shape and clean-up (fleet.records)\n"
    "local records = require('fleet.records')\n"
    "local fields = records.repository_fields\n"
    "local csv_fields = { 'raw.owner.login', 'raw' } -- a dotted path, a table flattened\n"
    "for i, f in ipairs(fields) do table.insert(csv_fields, i, f) end\n"
    "local null = cjson.null\n"
    "-- names the plugins' sources mention: keys that can matter to them\n"
    "local known = {}\n"
    "for _, name in ipairs(names) do\n"
    "  for word in plugins[name][1]:gmatch('[%a_][%w_]*') do known[word] = true end\n"
    "  plugins[name] = plugins[name][2]\n"
    "end\n"
    "-- features: the JSON type at each key path (of known names), 3 levels down\n"
    "local function shape(x, depth, prefix)\n"
    "  for k, val in next, x do\n"
    "    local key = prefix .. (math.type(k) and '#' or known[k] and k or '?')\n"
    "    cov(key .. '=' .. (val == null and 'null' or math.type(val) or type(val)))\n"
    "    if depth < 3 and type(val) == 'table' then shape(val, depth + 1, key .. '.') end\n"
    "  end\n"
    "end\n"
    "local function is_array(t)\n"
    "  local n = rawlen(t)\n"
    "  if n == 0 then return false end\n"
    "  local count = 0\n"
    "  for k in next, t do\n"
    "    if math.type(k) ~= 'integer' or k < 1 or k > n then return false end\n"
    "    count = count + 1\n"
    "  end\n"
    "  return count == n\n"
    "end\n"
    "local function write(w, rec, counts, k)\n"
    "  local ok, err = w:write(rec)\n"
    "  if ok then counts[k] = counts[k] + 1 return end\n"
    "  if not tostring(err):find('nesting too deep', 1, true) then\n"
    "    error('the ' .. k .. ' writer refused a record: ' .. tostring(err), 0)\n"
    "  end\n"
    "end\n"
    "return function(input)\n"
    "  local ok, data = pcall(cjson.decode, input)\n"
    "  if not ok or type(data) ~= 'table' then return false end\n"
    "  shape(data, 1, '')\n"
    "  local elements = {}\n"
    "  if is_array(data) then\n"
    "    for i = 1, rawlen(data) do elements[i] = data[i] end\n"
    "  end\n"
    "  local nd = assert(writer('ndjson', paths[1], { fields = fields, all_fields = true, null = cjson.null }))\n"
    "  local js = assert(writer('json', paths[2], { fields = fields, null = cjson.null }))\n"
    "  local cs = assert(writer('csv', paths[3], { fields = csv_fields, null = cjson.null }))\n"
    "  local counts = { 0, 0, 0 }\n"
    "  for _, name in ipairs(names) do\n"
    "    local plugin = plugins[name]\n"
    "    local api = { name = name, base_url = plugin.base_url }\n"
    "    local items = { data }\n"
    "    for i = 1, #elements do items[#items + 1] = elements[i] end\n"
    "    -- a page in the body: the host's items_of(data, pagination.items)\n"
    "    local field = type(plugin.pagination) == 'table' and plugin.pagination.items\n"
    "    local page = field and data[field]\n"
    "    if type(page) == 'table' then\n"
    "      for i = 1, #page do items[#items + 1] = page[i] end\n"
    "    end\n"
    "    for i = 1, #items do\n"
    "      local item = items[i]\n"
    "      local ok2, rec = pcall(plugin.normalize_repository, item, api, i == 1)\n"
    "      if not ok2 then\n"
    "        cov(name .. tostring(rec))\n"
    "        report(name, i, 'raised: ' .. tostring(rec))\n"
    "      elseif type(rec) ~= 'table' then\n"
    "        report(name, i, 'returned a ' .. type(rec) .. ', not a table')\n"
    "      else\n"
    "        rec.provider = name\n"
    "        rec.raw = item\n"
    "        write(nd, rec, counts, 1)\n"
    "        write(js, rec, counts, 2)\n"
    "        write(cs, rec, counts, 3)\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  assert(nd:close())\n"
    "  assert(js:close())\n"
    "  assert(cs:close())\n"
    "  return true, counts[1], counts[2], counts[3]\n"
    "end, #csv_fields\n";

#define MAX_CSV 128 /* columns the CSV check can hold */
static int ncsv;    /* the CSV writer's columns */

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    L = luaL_newstate();
    if (!L)
        abort();
    luaL_openlibs(L);
    lua_gc(L, LUA_GCGEN, 0, 0); /* as lstate.c */
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_cjson);
    lua_setfield(L, -2, "cjson");
    lua_pop(L, 1);
    const char *builtins = getenv("FUZZ_RUNTIME_LUA_DIR");
    preload_builtins(L, builtins && *builtins ? builtins : RUNTIME_LUA_DIR "/fleet");

    const char *dir = getenv("FUZZ_PROVIDERS_DIR");
    push_plugin_base(L); /* [base] */
    lua_newtable(L);     /* [base, plugins] */
    if (load_plugins(L, dir && *dir ? dir : PROVIDERS_DIR) == 0)
        fuzz_fail("no provider plugin could be loaded from %s", dir && *dir ? dir : PROVIDERS_DIR);
    lua_remove(L, -2); /* [plugins] */

    if (luaL_loadbufferx(L, driver, sizeof driver - 1, "=records-driver", "t") != LUA_OK)
        fuzz_fail("the driver does not compile: %s", lua_tostring(L, -1));
    lua_insert(L, -2); /* [driver, plugins] */
    lua_getglobal(L, "require");
    lua_pushliteral(L, "cjson");
    lua_call(L, 1, 1);
    lua_insert(L, -2); /* [driver, cjson, plugins] */
    lua_pushlightuserdata(L, NULL);
    lua_pushcclosure(L, open_writer, 1);
    lua_call(L, 0, 1);
    lua_getfield(L, -1, "writer");
    lua_remove(L, -2);
    lua_insert(L, -2); /* [driver, cjson, writer, plugins] */
    lua_newtable(L);   /* the names, sorted */
    lua_pushnil(L);
    int n = 0;
    while (lua_next(L, -3)) {
        lua_pop(L, 1);
        lua_pushvalue(L, -1);
        lua_rawseti(L, -3, ++n);
    }
    lua_getglobal(L, "table");
    lua_getfield(L, -1, "sort");
    lua_remove(L, -2);
    lua_pushvalue(L, -2);
    lua_call(L, 1, 0);
    lua_newtable(L);
    for (int i = 0; i < 3; i++) {
        memfds[i] = memfd_create("fuzz-records", 0);
        if (memfds[i] < 0)
            fuzz_fail("memfd_create: %s", strerror(errno));
        lua_pushfstring(L, "/proc/self/fd/%d", memfds[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_pushcfunction(L, l_report);
    lua_pushcfunction(L, l_cov);
    if (lua_pcall(L, 7, 2, 0) != LUA_OK)
        fuzz_fail("the driver failed to start: %s", lua_tostring(L, -1));
    ncsv = (int)lua_tointeger(L, -1);
    if (ncsv < 1 || ncsv >= MAX_CSV)
        fuzz_fail("%d CSV columns", ncsv);
    lua_pop(L, 1);
    driver_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_sethook(L, hook, LUA_MASKLINE | LUA_MASKCOUNT, 1000);
    return 0;
}

/* ---- checking what the writers wrote ---- */

static void slurp(int fd, struct fz_vec *out)
{
    char chunk[8192];
    ssize_t k;
    off_t off = 0;
    out->len = 0;
    fz_add(out, "", 0);
    while ((k = pread(fd, chunk, sizeof chunk, off)) > 0) {
        fz_add(out, chunk, (size_t)k);
        off += k;
    }
}

static void check_ndjson(const struct fz_vec *f, lua_Integer records)
{
    lua_Integer lines = 0;
    size_t start = 0;
    for (size_t i = 0; i < f->len; i++) {
        if (f->p[i] != '\n')
            continue;
        const char *why = NULL;
        FUZZ_CHECK(fz_json_text(f->p + start, i - start, &why) && f->p[start] == '{',
                   "ndjson line %lld is not a JSON object: %s", (long long)lines + 1, why ? why : "not an object");
        lines++;
        start = i + 1;
    }
    FUZZ_CHECK(start == f->len, "the ndjson file does not end with a newline");
    FUZZ_CHECK(lines == records, "ndjson: %lld lines for %lld records", (long long)lines, (long long)records);
}

static void check_json(const struct fz_vec *f, lua_Integer records)
{
    const char *why = NULL;
    FUZZ_CHECK(f->len >= 3 && f->p[0] == '[' && f->p[f->len - 1] == '\n', "the json file is not an array");
    FUZZ_CHECK(fz_json_text(f->p, f->len, &why), "the json file is not valid JSON: %s", why);
    /* "[" rec ",\n" rec ... "]\n": strings hold no raw newline. */
    lua_Integer newlines = 0;
    for (size_t i = 0; i < f->len; i++)
        newlines += f->p[i] == '\n';
    FUZZ_CHECK(newlines == (records ? records : 1), "json: %lld newlines for %lld records", (long long)newlines,
               (long long)records);
}

static void check_csv(const struct fz_vec *f, lua_Integer records)
{
    static struct fz_vec cells[MAX_CSV + 1];
    size_t pos = 0;
    lua_Integer rows = 0;
    while (pos < f->len) {
        const char *why = "wrong number of cells";
        int n = fz_csv_record(f->p, f->len, &pos, cells, ncsv + 1, &why);
        FUZZ_CHECK(n == ncsv, "csv row %lld: %d cells, not %d (%s)", (long long)rows, n, ncsv, why);
        for (int i = 0; i < ncsv; i++)
            FUZZ_CHECK(fz_utf8_valid(cells[i].p, cells[i].len), "csv row %lld cell %d: ill-formed UTF-8",
                       (long long)rows, i);
        rows++;
    }
    FUZZ_CHECK(f->len >= 2 && f->p[f->len - 2] == '\r' && f->p[f->len - 1] == '\n',
               "the csv file does not end in CRLF");
    FUZZ_CHECK(rows == records + 1, "csv: %lld rows (with the header) for %lld records", (long long)rows,
               (long long)records);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int top = lua_gettop(L);
    current = data;
    current_size = size;
    budget = INSTRUCTION_BUDGET;
    lua_rawgeti(L, LUA_REGISTRYINDEX, driver_ref);
    lua_pushlstring(L, (const char *)data, size);
    if (lua_pcall(L, 1, 4, 0) != LUA_OK)
        fuzz_fail("%s", lua_tostring(L, -1));
    bool opened = lua_toboolean(L, top + 1);
    lua_Integer counts[3];
    for (int i = 0; i < 3; i++)
        counts[i] = lua_tointeger(L, top + 2 + i);
    lua_settop(L, top);
    if (opened) {
        struct fz_vec f = {0};
        slurp(memfds[0], &f);
        check_ndjson(&f, counts[0]);
        slurp(memfds[1], &f);
        check_json(&f, counts[1]);
        slurp(memfds[2], &f);
        check_csv(&f, counts[2]);
        fz_free(&f);
    }
    /* Empty the files so that the next input that does not decode is not
     * checked against this one's output. */
    for (int i = 0; i < 3; i++)
        if (ftruncate(memfds[i], 0) != 0)
            fuzz_fail("ftruncate: %s", strerror(errno));
    if (++runs % 512 == 0)
        lua_gc(L, LUA_GCCOLLECT, 0);
    return 0;
}
