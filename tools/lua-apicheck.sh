#!/bin/sh
# Builds Lua 5.4 with its C API checks on (LUA_USE_APICHECK) and AddressSanitizer,
# from Debian's source package of the Lua the release build links, into
# DIR/liblua.a and DIR/include. The sanitizer build links it, so a C function
# that pushes more values than its stack has room for, or pops what is not
# there, aborts the spec that did it instead of corrupting memory.
#
# Usage: tools/lua-apicheck.sh DIR
# Needs dpkg-dev (dpkg-source) and network access to Debian's archive. The
# machine's apt configuration is not changed: the source index is fetched
# into DIR/work/apt (removed after), from a copy of the machine's Debian
# sources marked deb-src.
set -eu

dir=$1
# Built already, by this version of the script.
[ "$dir/liblua.a" -nt "$0" ] && [ -f "$dir/include/lua.h" ] && exit 0

package=lua5.4
# The version installed, so the headers the release build uses match; else
# the archive's current one.
version=$(dpkg-query -W -f='${Version}' liblua5.4-dev 2>/dev/null || true)

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
work="$dir/work"
rm -rf "$work"
mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial" "$work/apt/sources"

# deb-src entries for the machine's Debian archives (deb822 or one-line form).
for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && sed 's/^Types: deb$/Types: deb-src/' "$f" >"$work/apt/sources/$(basename "$f")"
done
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] && sed -n 's/^deb \(.*\)/deb-src \1/p' "$f" >>"$work/apt/sources/machine.list"
done
apt_private="-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts=$work/apt/sources
 -o Dir::State::Lists=$work/apt/lists -o Dir::Cache=$work/apt/cache -o APT::Sandbox::User=root"

echo "gitfleet: building Lua $version with API checks into $dir" >&2
# shellcheck disable=SC2086
apt-get -q $apt_private update >&2
# shellcheck disable=SC2086
(cd "$work" && { apt-get -q $apt_private source --download-only "$package${version:+=$version}" >&2 ||
    apt-get -q $apt_private source --download-only "$package" >&2; })
(cd "$work" && dpkg-source -x ./*.dsc src >&2)

src="$work/src/src"
objs=""
for c in "$src"/l*.c; do
    case $(basename "$c") in lua.c | luac.c) continue ;; esac
    o="$work/$(basename "$c" .c).o"
    # The definitions Debian's build uses (src/Makefile), plus the API checks;
    # never NDEBUG, which would turn the checks (assert) off.
    ${CC:-cc} -std=gnu99 -O1 -g -fno-omit-frame-pointer -fsanitize=address \
        -DLUA_COMPAT_5_3 -DLUA_USE_LINUX -DLUA_USE_APICHECK -c "$c" -o "$o"
    objs="$objs $o"
done
mkdir -p "$dir/include"
# shellcheck disable=SC2086
ar rcs "$dir/liblua.a.tmp" $objs
for h in lua.h luaconf.h lualib.h lauxlib.h lua.hpp; do
    cp "$src/$h" "$dir/include/"
done
mv "$dir/liblua.a.tmp" "$dir/liblua.a"
rm -rf "$work"
