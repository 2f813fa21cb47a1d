/* Files a command writes (the queue worker's DIR/PROVIDER/OWNER.ndjson):
 * fleet.core.mkdir, which plain Lua cannot do, and fleet.core.file_name,
 * the name of an owner's file. */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include <lauxlib.h>

#include "lfleet.h"
#include "sha256.h"

/* fleet.core.mkdir(path) -> true | nil, message: the folder and its
 * parents, like mkdir -p; an existing folder is fine. */
static int l_mkdir(lua_State *L)
{
    size_t len;
    const char *path = luaL_checklstring(L, 1, &len);
    luaL_argcheck(L, len > 0 && len < 4096 && strlen(path) == len, 1, "expected a path");
    /* Mostly the folder is there already (a worker asks once per owner):
     * one stat instead of a mkdir and a stat per part of the path. */
    struct stat there;
    if (stat(path, &there) == 0 && S_ISDIR(there.st_mode)) {
        lua_pushboolean(L, 1);
        return 1;
    }
    char buf[4096];
    memcpy(buf, path, len + 1);
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char c = *p;
        *p = '\0';
        struct stat st;
        if (mkdir(buf, 0777) != 0 && (errno != EEXIST || stat(buf, &st) != 0 || !S_ISDIR(st.st_mode))) {
            int e = errno == EEXIST ? ENOTDIR : errno;
            lua_pushnil(L);
            lua_pushfstring(L, "cannot make folder %s: %s", buf, strerror(e));
            return 2;
        }
        if (c == '\0')
            break;
        *p = c;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* A file name holds at most 255 bytes, and the writer's temporary file
 * beside it adds 17 (".NAME.gitfleet-XXXXXX") to NAME.ndjson. A GitLab
 * path of subgroups is up to 256 bytes before escaping, and each '/' in
 * it takes three. */
#define NAME_KEPT 200   /* longest name written out whole */
#define NAME_HEAD 183   /* of a longer one, the part kept before its digest */

static int is_plain(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == '-';
}

/* fleet.core.file_name(name) -> a file name for name, with no folder in
 * it: every byte outside [A-Za-z0-9._-] written %XX (a subgroup "a/b" is
 * "a%2Fb"), and a leading '.' as %2E. A name longer than 200 bytes so
 * written keeps its first 183 (never half of a %XX) and ends with '~' and
 * 32 hex digits of the SHA-256 of the whole name: '~' is not in any other
 * name, so two owners never share a file. */
static int l_file_name(lua_State *L)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t len;
    const unsigned char *name = (const unsigned char *)luaL_checklstring(L, 1, &len);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = name[i];
        if (is_plain(c) && !(i == 0 && c == '.')) {
            luaL_addchar(&b, (char)c);
        } else {
            luaL_addchar(&b, '%');
            luaL_addchar(&b, hex[c >> 4]);
            luaL_addchar(&b, hex[c & 15]);
        }
    }
    if (luaL_bufflen(&b) <= NAME_KEPT) {
        luaL_pushresult(&b);
        return 1;
    }
    size_t head = NAME_HEAD;
    const char *written = luaL_buffaddr(&b);
    if (written[head - 1] == '%')
        head -= 1;
    else if (written[head - 2] == '%')
        head -= 2;
    unsigned char digest[32];
    fleet_sha256(name, len, digest);
    char tail[1 + 32];
    tail[0] = '~';
    for (int i = 0; i < 16; i++) {
        tail[1 + 2 * i] = hex[digest[i] >> 4];
        tail[2 + 2 * i] = hex[digest[i] & 15];
    }
    luaL_pushresult(&b);
    lua_pushlstring(L, lua_tostring(L, -1), head);
    lua_pushlstring(L, tail, sizeof tail);
    lua_concat(L, 2);
    return 1;
}

void fleet_files_register(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"mkdir", l_mkdir},
        {"file_name", l_file_name},
        {NULL, NULL},
    };
    lua_pushvalue(L, lua_upvalueindex(1));
    luaL_setfuncs(L, fns, 1);
}
