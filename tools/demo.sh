#!/bin/sh
# make demo: start the bundled provider emulator with three tokens and tight
# rate limits, fetch a dozen owners with gitfleet, show what happened, and
# stop the emulator. Nothing leaves this machine.
set -eu
bin=${1:-./gitfleet}
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
emu_pid=""
cleanup() {
    [ -n "$emu_pid" ] && kill "$emu_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

cat >"$work/scenario.json" <<'JSON'
{
  "seed": 42,
  "owners": [
    {"name": "acme", "kind": "org", "repos": 900},
    {"name": "globex", "kind": "org", "repos": 650},
    {"name": "initech", "kind": "org", "repos": 420},
    {"name": "umbrella", "kind": "org", "repos": 310},
    {"name": "hooli", "kind": "org", "repos": 260},
    {"name": "stark", "kind": "org", "repos": 180},
    {"name": "wayne", "kind": "org", "repos": 120},
    {"name": "octocat", "kind": "user", "repos": 8},
    {"name": "ada", "kind": "user", "repos": 35},
    {"name": "grace", "kind": "user", "repos": 61},
    {"name": "linus", "kind": "user", "repos": 14},
    {"name": "margaret", "kind": "user", "repos": 23}
  ],
  "tokens": [
    {"token": "ghp_demoAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "provider": "github", "account": "demo-bot-1"},
    {"token": "ghp_demoBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB", "provider": "github", "account": "demo-bot-2"},
    {"token": "ghp_demoCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC", "provider": "github", "account": "demo-bot-3"}
  ],
  "limits": {"github": {"limit": 12, "window": 4}},
  "faults": {"rate": 0.05, "kinds": ["5xx", "drop"], "seed": 5}
}
JSON

python3 "$here/spec/support/emulator.py" --port 0 --port-file "$work/port" \
    --scenario "$work/scenario.json" --parent-pid $$ --quiet >/dev/null 2>"$work/emulator.log" &
emu_pid=$!
i=0
while [ ! -s "$work/port" ]; do
    i=$((i + 1))
    if [ $i -gt 100 ]; then echo "demo: the emulator did not start:" >&2; cat "$work/emulator.log" >&2; exit 1; fi
    sleep 0.1
done
port=$(cat "$work/port")

cat >"$work/gitfleet.yaml" <<YAML
# Three tokens of three accounts, each allowed 12 requests per 4 seconds.
providers:
  github:
    base_url: http://127.0.0.1:$port
    tokens:
      - { label: bot-1, token: "\${DEMO_TOKEN_1}", account: demo-bot-1 }
      - { label: bot-2, token: "\${DEMO_TOKEN_2}", account: demo-bot-2 }
      - { label: bot-3, token: "\${DEMO_TOKEN_3}", account: demo-bot-3 }
retry: { base_delay: 0.1, reset_margin: 0.25 }
cache: { path: $work/cache.sqlite }
YAML

echo "== gitfleet fetch of 12 owners from the emulator at http://127.0.0.1:$port"
echo "   (3 tokens, 12 requests per 4 s each, 5% injected faults; -v shows waits and retries)"
echo
DEMO_TOKEN_1=ghp_demoAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA \
DEMO_TOKEN_2=ghp_demoBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB \
DEMO_TOKEN_3=ghp_demoCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC \
    "$bin" --config "$work/gitfleet.yaml" -v fetch --format ndjson --output "$work/repos.ndjson" \
        acme globex initech umbrella hooli stark wayne octocat ada grace linus margaret
status=$?
echo
echo "== $(wc -l <"$work/repos.ndjson") records written; the first two:"
head -n 2 "$work/repos.ndjson"
echo
echo "== repositories per owner:"
python3 -c '
import json, sys, collections
c = collections.Counter(json.loads(l)["owner"] for l in open(sys.argv[1]))
for owner, n in c.most_common(): print(f"   {owner:10} {n:5}")
' "$work/repos.ndjson"
echo
echo "== what the emulator saw: requests refused because a token was spent (should be 0):"
python3 -c '
import json, urllib.request, sys
s = json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/_emulator/stats"))
print("  ", s["primary_limited"], "of", s["requests"], "requests;", "faults injected:", s["faults"])
' "$port"
exit $status
