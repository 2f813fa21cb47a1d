#!/bin/sh
# gitfleet's benchmark against octokit and PyGithub: see bench/run.py.
#
#   bench/run.sh PATH/TO/gitfleet        (make bench does this after tools/deps.sh bench)
#
# Installs the pinned npm peers into bench/node_modules (git-ignored) when
# they are missing or older than bench/package-lock.json, then runs
# bench/run.py, which builds the floor program, starts the emulators and
# prints the tables (also written to bench/results/latest.md).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
if [ $# -ne 1 ]; then
    echo "usage: bench/run.sh PATH/TO/gitfleet" >&2
    exit 2
fi
for tool in node npm cc pkg-config lua5.4 /usr/bin/time; do
    command -v "$tool" >/dev/null 2>&1 || { echo "bench: $tool is missing (tools/deps.sh bench)" >&2; exit 1; }
done
stamp="$here/node_modules/.package-lock.json"
if [ ! -f "$stamp" ] || [ "$here/package-lock.json" -nt "$stamp" ]; then
    echo "bench: installing the npm peers into bench/node_modules" >&2
    (cd "$here" && npm ci --no-audit --no-fund --loglevel=error) >&2
fi
exec python3 "$here/run.py" "$1"
