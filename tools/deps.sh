#!/bin/sh
# Installs the Debian packages a group of make targets needs, if any is
# missing. Usage: tools/deps.sh GROUP...   (groups: build test sanitize valgrind fuzz bench)
# As root it runs apt-get; otherwise it prints the exact command to run.
set -eu

pkgs_build="gcc libc6-dev make pkg-config liblua5.4-dev libcurl4-openssl-dev libyaml-dev libsqlite3-dev zlib1g-dev lua-cjson lua-cjson-dev ca-certificates libhiredis-dev libssl-dev libdeflate-dev"
pkgs_test="lua5.4 lua-busted lua-socket lua-cjson python3 tmux openssl curl nghttp2-server procps clang libclang-rt-14-dev redis-server git"
pkgs_sanitize="gcc dpkg-dev xz-utils"
pkgs_valgrind="valgrind"
pkgs_fuzz="clang libclang-rt-14-dev"
pkgs_bench="nodejs npm python3-github time redis-server"

wanted=""
for group in "$@"; do
    eval "wanted=\"\$wanted \$pkgs_$group\""
done

missing=""
for p in $wanted; do
    case " $missing " in *" $p "*) continue ;; esac
    # Node.js from elsewhere (NodeSource) brings its own npm, and Debian's
    # npm package would conflict with it: a working command is enough.
    case $p in
    nodejs) command -v node >/dev/null 2>&1 && continue ;;
    npm) command -v npm >/dev/null 2>&1 && continue ;;
    esac
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [ "$status" = "install ok installed" ] || missing="$missing $p"
done
[ -n "$missing" ] || exit 0

cmd="apt-get install -y --no-install-recommends$missing"
if [ "$(id -u)" -ne 0 ]; then
    echo "gitfleet: missing Debian packages:$missing" >&2
    echo "gitfleet: run: sudo apt-get update && sudo $cmd" >&2
    exit 1
fi
echo "gitfleet: installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >&2
$cmd >&2
