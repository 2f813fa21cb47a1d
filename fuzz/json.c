/* fleet_json_decode (runtime/json.c) on arbitrary bytes: the decoder that
 * turns every response body into Lua values.
 *
 * Checks: the Lua stack is left with exactly one value (or one message);
 * decoding with a keep set — a page's items filtered, a page object around
 * them — succeeds exactly when the full decode does, since skipped text is
 * validated as strictly as built text; a kept field holds what the full
 * decode holds (compared structurally); an error message names an offset
 * inside the input. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "fuzz_check.h"
#include "json.h"

static lua_State *L;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    L = luaL_newstate();
    if (!L)
        abort();
    luaL_openlibs(L);
    /* keep sets: an item's fields (one nested), as plugins name them */
    if (luaL_dostring(L, "return { id = true, name = true, owner = { login = true }, topics = true, parent = {} }"))
        abort();
    lua_setglobal(L, "KEEP");
    /* structural equality of two decoded values; for `sub`, only the
     * fields a keep set names (nested keep sets apply to nested values) */
    if (luaL_dostring(L,
                      "local function same(a, b, keep)\n"
                      "  if type(a) ~= 'table' or type(b) ~= 'table' then\n"
                      "    return a == b or (a ~= a and b ~= b)\n"
                      "  end\n"
                      "  for k, v in next, a do\n"
                      "    if not same(v, b[k], nil) then return false end\n"
                      "  end\n"
                      "  for k in next, b do if a[k] == nil then return false end end\n"
                      "  return true\n"
                      "end\n"
                      "local function kept(full, part, keep)\n"
                      "  if type(full) ~= 'table' then return same(full, part) end\n"
                      "  if full[1] ~= nil or next(full) == nil then -- an array: each element\n"
                      "    for i = 1, #full do if not kept(full[i], part[i], keep) then return false end end\n"
                      "    return true\n"
                      "  end\n"
                      "  for k, v in next, part do\n"
                      "    local sub = keep[k]\n"
                      "    if sub == nil then return false end -- built but not kept\n"
                      "    if type(sub) == 'table' then\n"
                      "      if not kept(full[k], v, sub) then return false end\n"
                      "    elseif not same(full[k], v) then return false end\n"
                      "  end\n"
                      "  for k in next, keep do\n"
                      "    if (full[k] == nil) ~= (part[k] == nil) then return false end\n"
                      "  end\n"
                      "  return true\n"
                      "end\n"
                      "KEPT = kept\n"))
        abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    int base = lua_gettop(L);

    int full_ok = fleet_json_decode(L, text, size, NULL, 0);
    FUZZ_CHECK(lua_gettop(L) == base + 1, "the stack holds %d values, not 1", lua_gettop(L) - base);
    if (!full_ok) {
        const char *msg = lua_tostring(L, -1);
        long offset = -1;
        FUZZ_CHECK(msg && sscanf(msg, "offset %ld:", &offset) == 1, "an error without an offset: %s",
                   msg ? msg : "(none)");
        FUZZ_CHECK(offset >= 0 && (size_t)offset <= size, "offset %ld outside the %zu bytes", offset, size);
    }

    /* The items filtered: as a page of repositories is decoded. */
    lua_getglobal(L, "KEEP");
    int keep = lua_gettop(L);
    int part_ok = fleet_json_decode(L, text, size, NULL, keep);
    FUZZ_CHECK(part_ok == full_ok, "with a keep set the decode %s, without it %s", part_ok ? "succeeds" : "fails",
               full_ok ? "succeeds" : "fails");
    FUZZ_CHECK(lua_gettop(L) == base + 3, "the stack is off after a filtered decode");
    /* Only a top-level array has its elements filtered (an object at the
     * top is an error body, decoded whole). */
    size_t first = 0;
    while (first < size && strchr(" \t\r\n", text[first]))
        first++;
    if (full_ok && first < size && text[first] == '[') {
        lua_getglobal(L, "KEPT");
        lua_pushvalue(L, base + 1);
        lua_pushvalue(L, base + 3);
        lua_pushvalue(L, keep);
        lua_call(L, 3, 1);
        FUZZ_CHECK(lua_toboolean(L, -1), "the kept fields differ from the full decode");
        lua_pop(L, 1);
    }

    /* A page object with its items in "values" (Bitbucket). */
    int page_ok = fleet_json_decode(L, text, size, "values", keep);
    FUZZ_CHECK(page_ok == full_ok, "as a page the decode %s, without a keep set %s", page_ok ? "succeeds" : "fails",
               full_ok ? "succeeds" : "fails");
    lua_settop(L, base);
    lua_gc(L, LUA_GCSTEP, 0);
    return 0;
}
