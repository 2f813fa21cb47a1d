/* The URLs the provider plugins build from an owner and a repository name,
 * as the host would send them.
 *
 * The input is OWNER, a NUL byte, then REPO (no NUL: all of it is OWNER).
 * Every plugin in ../providers (loaded with fleet.plugin and cjson from
 * ../runtime/lua) is called as the host calls it: repositories(api, OWNER),
 * and repository_details, branches and contributors with (OWNER, REPO),
 * with a stand-in api that records each path it is asked for. The same
 * calls with placeholder names give the endpoint intended.
 *
 * A call that raises (util.escape refuses "", "." and "..") sends nothing,
 * and so does a URL the host refuses (fleet_url_path_problem, urlpath.c).
 * Every other URL must be one libcurl leaves as it is: its URL parser,
 * which normalises dot segments unless told not to, gives back the same
 * path, on the plugin's own host; and that path, segment by segment and
 * percent-decoded, is the intended one with the names in their places. So
 * no owner or repository name can move a request to another endpoint. */
#include <stdint.h>
#include <string.h>

#include <curl/curl.h>
#include <lauxlib.h>
#include <lualib.h>

#include "fuzz_check.h"
#include "urlpath.h"

/* PROVIDERS_DIR and RUNTIME_LUA_DIR come from the Makefile. */

int luaopen_cjson(lua_State *L);

#define OWNER_MARK "\x01O\x01"
#define REPO_MARK "\x01R\x01"

/* Lua side: drive(owner, repo) -> { url, intended_url, ... } for every call
 * of every plugin that did not raise. */
static const char driver[] =
    "local dir, OWNER, REPO = ...\n"
    "local util = require('fleet.plugin')\n"
    "local plugins = {}\n"
    "for _, name in ipairs({ 'bitbucket', 'gitea', 'github', 'gitlab' }) do\n"
    "  local env = setmetatable({ json = require('cjson') }, { __index = _G })\n"
    "  plugins[#plugins + 1] = assert(loadfile(dir .. '/' .. name .. '.lua', 't', env))()\n"
    "end\n"
    "local empty = { next = function() return nil end }\n"
    "local function api_for(paths)\n"
    "  local api = { value = util.value }\n"
    "  function api:pages(path) paths[#paths + 1] = path return empty end\n"
    "  function api:owner_pages(_, a, _, b) paths[#paths + 1] = a paths[#paths + 1] = b return empty end\n"
    "  function api:get(path) paths[#paths + 1] = path return {} end\n"
    "  function api:collect(path) paths[#paths + 1] = path return {} end\n"
    "  return api\n"
    "end\n"
    "local calls = { 'repositories', 'repository_details', 'branches', 'contributors' }\n"
    "local function paths_of(P, call, owner, repo)\n"
    "  local paths = {}\n"
    "  local ok = pcall(P[call], api_for(paths), owner, call == 'repositories' and {} or repo, {})\n"
    "  return ok and paths or nil\n"
    "end\n"
    "return function(owner, repo)\n"
    "  local out = {}\n"
    "  for _, P in ipairs(plugins) do\n"
    "    for _, call in ipairs(calls) do\n"
    "      if P[call] then\n"
    "        local got = paths_of(P, call, owner, repo)\n"
    "        local want = assert(paths_of(P, call, OWNER, REPO), 'the placeholders were refused')\n"
    "        if got then\n"
    "          assert(#got == #want, call .. ': another number of requests')\n"
    "          for i = 1, #got do\n"
    "            out[#out + 1] = P.base_url .. got[i]\n"
    "            out[#out + 1] = P.base_url .. want[i]\n"
    "          end\n"
    "        end\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  return out\n"
    "end\n";

static lua_State *L;
static int drive_ref = LUA_NOREF;

static void setup(void)
{
    if (L)
        return;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    L = luaL_newstate();
    luaL_openlibs(L);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_cjson);
    lua_setfield(L, -2, "cjson");
    lua_pop(L, 1);
    lua_getglobal(L, "package");
    lua_pushstring(L, RUNTIME_LUA_DIR "/?.lua");
    lua_setfield(L, -2, "path");
    lua_pop(L, 1);
    if (luaL_loadbufferx(L, driver, sizeof driver - 1, "=provider_url", "t") != LUA_OK)
        fuzz_fail("the driver does not load: %s", lua_tostring(L, -1));
    lua_pushstring(L, PROVIDERS_DIR);
    lua_pushstring(L, OWNER_MARK);
    lua_pushstring(L, REPO_MARK);
    if (lua_pcall(L, 3, 1, 0) != LUA_OK)
        fuzz_fail("the plugins do not load: %s", lua_tostring(L, -1));
    drive_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decodes s[0..n) into out (at least n bytes); returns the length. */
static size_t decode(const char *s, size_t n, char *out)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && n - i >= 3 && hex_value(s[i + 1]) >= 0 && hex_value(s[i + 2]) >= 0) {
            out[k++] = (char)(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2]));
            i += 2;
        } else {
            out[k++] = s[i];
        }
    }
    return k;
}

/* The intended segment, decoded, with the placeholders replaced by the
 * names: into out (a vector). */
static void intended_segment(const char *seg, size_t n, const uint8_t *owner, size_t owner_len,
                             const uint8_t *repo, size_t repo_len, struct fz_vec *out)
{
    char *plain = malloc(n + 1);
    if (!plain)
        abort();
    size_t len = decode(seg, n, plain);
    for (size_t i = 0; i < len;) {
        if (len - i >= 3 && memcmp(plain + i, OWNER_MARK, 3) == 0) {
            fz_add(out, owner, owner_len);
            i += 3;
        } else if (len - i >= 3 && memcmp(plain + i, REPO_MARK, 3) == 0) {
            fz_add(out, repo, repo_len);
            i += 3;
        } else {
            fz_add(out, plain + i, 1);
            i++;
        }
    }
    free(plain);
}

static char *url_part(CURLU *u, CURLUPart part)
{
    char *s = NULL;
    return curl_url_get(u, part, &s, 0) == CURLUE_OK ? s : NULL;
}

/* Checks one URL the host would send against the one intended. */
static void check(const char *url, const char *want, const uint8_t *owner, size_t owner_len, const uint8_t *repo,
                  size_t repo_len)
{
    if (fleet_url_path_problem(url))
        return; /* refused before any request */
    CURLU *got_u = curl_url(), *want_u = curl_url();
    if (!got_u || !want_u)
        abort();
    /* As libcurl parses a URL it sends: dot segments removed. */
    if (curl_url_set(got_u, CURLUPART_URL, url, 0) != CURLUE_OK) {
        curl_url_cleanup(got_u); /* libcurl would refuse it: nothing sent */
        curl_url_cleanup(want_u);
        return;
    }
    FUZZ_CHECK(curl_url_set(want_u, CURLUPART_URL, want, CURLU_PATH_AS_IS) == CURLUE_OK, "intended URL %s", want);
    char *got_host = url_part(got_u, CURLUPART_HOST), *want_host = url_part(want_u, CURLUPART_HOST);
    char *got_path = url_part(got_u, CURLUPART_PATH), *want_path = url_part(want_u, CURLUPART_PATH);
    FUZZ_CHECK(got_host && want_host && got_path && want_path, "URL parts of %s", url);
    FUZZ_CHECK(strcmp(got_host, want_host) == 0, "%s goes to host %s, not %s", url, got_host, want_host);

    /* The path libcurl would send is the path the plugin built. */
    const char *raw = strstr(url, "://") + 3;
    raw += strcspn(raw, "/?#");
    size_t raw_len = strcspn(raw, "?#");
    FUZZ_CHECK(strlen(got_path) == raw_len && memcmp(got_path, raw, raw_len) == 0,
               "libcurl changes the path of %s to %s", url, got_path);

    /* Segment by segment, the intended endpoint with the names in place. */
    const char *g = got_path, *w = want_path;
    for (;;) {
        size_t gn = strcspn(g, "/"), wn = strcspn(w, "/");
        struct fz_vec expect = {0};
        intended_segment(w, wn, owner, owner_len, repo, repo_len, &expect);
        char *plain = malloc(gn + 1);
        if (!plain)
            abort();
        size_t plain_len = decode(g, gn, plain);
        FUZZ_CHECK(fz_equals(&expect, plain, plain_len), "%s leaves the endpoint %s (segment '%.*s')", url, want,
                   (int)gn, g);
        free(plain);
        free(expect.p);
        FUZZ_CHECK((g[gn] == '/') == (w[wn] == '/'), "%s has another number of segments than %s", url, want);
        if (g[gn] != '/')
            break;
        g += gn + 1;
        w += wn + 1;
    }
    curl_free(got_host);
    curl_free(want_host);
    curl_free(got_path);
    curl_free(want_path);
    curl_url_cleanup(got_u);
    curl_url_cleanup(want_u);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup();
    const uint8_t *nul = memchr(data, 0, size);
    size_t owner_len = nul ? (size_t)(nul - data) : size;
    const uint8_t *repo = nul ? nul + 1 : data + size;
    size_t repo_len = nul ? size - owner_len - 1 : 0;

    lua_rawgeti(L, LUA_REGISTRYINDEX, drive_ref);
    lua_pushlstring(L, (const char *)data, owner_len);
    lua_pushlstring(L, (const char *)repo, repo_len);
    if (lua_pcall(L, 2, 1, 0) != LUA_OK)
        fuzz_fail("the driver failed: %s", lua_tostring(L, -1));
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    for (lua_Integer i = 1; i + 1 <= n; i += 2) {
        lua_rawgeti(L, -1, i);
        lua_rawgeti(L, -2, i + 1);
        check(lua_tostring(L, -2), lua_tostring(L, -1), data, owner_len, repo, repo_len);
        lua_pop(L, 2);
    }
    lua_pop(L, 1);
    lua_gc(L, LUA_GCCOLLECT, 0);
    return 0;
}
