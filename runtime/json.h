/* JSON response bodies to Lua values, decoded once, straight from the
 * transfer's buffer.
 *
 * A page of repositories carries far more than the records need (GitHub
 * sends about 100 fields a repository, the records keep 23): with a keep
 * set the decoder still checks the whole text, but builds Lua values only
 * for the fields named, so the rest costs no allocation and no garbage.
 * Integers that fit are Lua integers; null is the lua-cjson null (a NULL
 * light userdata), so code written for lua-cjson works unchanged. */
#ifndef FLEET_JSON_H
#define FLEET_JSON_H

#include <stddef.h>

#include <lua.h>

/* Decodes text and pushes the value. `items`: where the top level is an
 * object, the name of its field holding the page's items (Bitbucket's
 * "values"); NULL when the top level is the items array itself. `keep`:
 * the stack index of a keep table, or 0 to build everything. A keep table
 * names the fields of each item to build: { id = true, owner = { login =
 * true } } — true builds the whole value, a table keeps the named fields of
 * a nested object. Outside the items everything is built.
 * Returns 1 with the value pushed, or 0 with an error message pushed
 * ("offset N: what"). May raise only for lack of memory. */
int fleet_json_decode(lua_State *L, const char *text, size_t len, const char *items, int keep);

/* Registers core.decode(text [, items [, keep]]) -> value | nil, err. */
void fleet_json_register(lua_State *L);

#endif
