/* fleet.core.mkdir: folders for the files a command writes (the queue
 * worker's DIR/PROVIDER/), which plain Lua cannot make. */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include <lauxlib.h>

#include "lfleet.h"

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

void fleet_files_register(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"mkdir", l_mkdir},
        {NULL, NULL},
    };
    lua_pushvalue(L, lua_upvalueindex(1));
    luaL_setfuncs(L, fns, 1);
}
