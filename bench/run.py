#!/usr/bin/env python3
"""gitfleet's benchmark: gitfleet against octokit and PyGithub on the bundled emulator.

    bench/run.py PATH/TO/gitfleet          (bench/run.sh installs the npm peers first)

Workloads, each on its own emulator (spec/support/emulator.py on 127.0.0.1):

  (a) 200 owners, about 40,000 repositories, no rate limits;
  (b) the same with 10% injected faults (5xx, dropped connections, truncated bodies);
  (c) 3 tokens of 20 requests per 3 s over 4 organisations of 3,000 repositories
      (120 pages of 100), against the minimum those limits allow;
  (d) (a) again with gitfleet's conditional-request cache warm (on (a)'s emulator);
  (latency) (a) with every response held 150 ms, as from a far provider, against the
      ceiling the allowed concurrency sets (requests × latency ÷ requests in flight
      allowed), and gitfleet again with a secondary limit of a few requests per token.
  (coldcache) (a) against an emulator that answers without gzip: gitfleet with a fresh
      cache against gitfleet --no-cache, alternating, then a second run on each filled
      cache (all 304s, the same output), and the cache file's size against the one the
      same job leaves when the emulator gzips (gitfleet only, no peers needed).

In every round the clients run one after another (gitfleet, octokit, PyGithub,
gitfleet, ...), each under GNU time, with the emulator reset before each run;
the table shows medians over BENCH_ROUNDS rounds (default 3). A run whose output
does not hold the expected repositories (counted from GET /_emulator/world) is
FAILED and not timed. The floors — the same pages fetched by libcurl with no
parsing, and the same bytes decoded by lua-cjson with no I/O — show the headroom.

  (s) scale-out: `gitfleet worker` processes sharing tokens and a queue through
      Redis (bench/scaleout.py; BENCH_WORKLOADS=s runs it alone).

Environment: BENCH_ROUNDS (3), BENCH_WORKLOADS (a,b,c,d,latency,coldcache,s: the workloads to run,
e.g. BENCH_WORKLOADS=latency for that one alone), BENCH_KEEP=1 keeps
the scratch directory, BENCH_PYGITHUB_PYTHON (an interpreter with PyGithub),
BENCH_QUIET_WAIT (15: seconds to wait before a run for the machine to go quiet).
Results: stdout and bench/results/latest.md (raw numbers: latest.json).
Python 3 standard library only. Talks to 127.0.0.1 only.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
import scaleout  # noqa: E402  (bench/scaleout.py: the scale-out workload, s)
BENCH = ROOT / "bench"
EMULATOR = ROOT / "spec" / "support" / "emulator.py"

TOKENS = [  # (label, token, account): fake tokens the emulator knows
    ("t1", "ghp_bench_token_1", "bench1"),
    ("t2", "ghp_bench_token_2", "bench2"),
    ("t3", "ghp_bench_token_3", "bench3"),
]
HTTP = {"max_connections": 64, "per_token_concurrency": 8}
RETRY = {"base_delay": 0.05, "max_delay": 2, "reset_margin": 0.25}
CACHE_MAX = "1GiB"            # the whole of (a) fits: (d) measures revalidation, not eviction
OWNERS_IN_FLIGHT = 8          # the peers'; gitfleet fetch runs 64 owners at once by default
RUN_TIMEOUT = 900             # seconds per client run
FAULTS = {"rate": 0.10, "kinds": ["5xx", "drop", "truncate"], "seed": 11}
QUOTA = {"limit": 20, "window": 3}
TIME_FMT = "%e %U %S %M"
LATENCY = 0.15                # seconds the emulator holds each response in (latency)
LATENCY_SECONDARY = {"max_concurrency": 5, "retry_after": 1}  # a provider that takes 5 at once per token

SCENARIO_A = {"seed": 1, "generate": {"count": 200, "total_repos": 40000, "large": 6}, "cache_mb": 4096}
SCENARIO_C = {"seed": 1, "cache_mb": 1024,
              "owners": [{"name": f"quota-org-{i}", "kind": "org", "repos": 3000} for i in range(1, 5)]}

CLIENTS = ("gitfleet", "octokit", "pygithub")
TITLES = {"gitfleet": "gitfleet", "octokit": "octokit", "pygithub": "PyGithub",
          "floor": "transfer floor (libcurl, no parsing)", "gitfleet-unlimited": "gitfleet, no limits",
          "gitfleet-secondary": "gitfleet, secondary limit", "gitfleet-nocache": "gitfleet --no-cache"}


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def sh(cmd, **kw) -> str:
    """Output of a short command, '' when it fails (used for versions only)."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kw).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def drop(cache: Path | None) -> None:
    if cache is not None:
        shutil.rmtree(cache.parent, ignore_errors=True)


def cache_file_size(cache: Path) -> int:
    """The cache's bytes on disk: the file and its WAL (gitfleet has exited: no -shm of note)."""
    return sum(f.stat().st_size for f in cache.parent.iterdir() if f.name.startswith(cache.name))


def same_records(a: str, b: str) -> bool:
    """The two outputs hold the same records (owners finish in any order) and are then removed."""
    try:
        with open(a, encoding="utf-8") as fa, open(b, encoding="utf-8") as fb:
            return sorted(fa) == sorted(fb)
    finally:
        Path(a).unlink(missing_ok=True)
        Path(b).unlink(missing_ok=True)


def cpu_busy() -> float:
    """Seconds of CPU the whole machine has spent busy (all CPUs), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    # user, nice, system, irq, softirq; not idle, iowait or steal (the hypervisor's)
    return sum(fields[i] for i in (0, 1, 2, 5, 6) if i < len(fields)) / os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """user + system seconds of one process, from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


# ---------------------------------------------------------------------------
# The emulator
# ---------------------------------------------------------------------------


class Emulator:
    def __init__(self, name: str, scenario: dict, work: Path, args=()):
        self.name = name
        self.dir = work / f"emulator-{name}"
        self.dir.mkdir()
        scenario = dict(scenario, tokens=[{"token": t, "provider": "github", "account": a} for _, t, a in TOKENS])
        (self.dir / "scenario.json").write_text(json.dumps(scenario))
        port_file = self.dir / "port"
        self.log = open(self.dir / "emulator.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, str(EMULATOR), "--port", "0", "--port-file", str(port_file),
             "--scenario", str(self.dir / "scenario.json"), "--quiet", "--parent-pid", str(os.getpid()), *args],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        for _ in range(1200):  # building a world of 40,000 repositories takes a few seconds
            if port_file.exists() and port_file.read_text().strip():
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"emulator {name} exited: {(self.dir / 'emulator.log').read_text()}")
            time.sleep(0.1)
        else:
            raise RuntimeError(f"emulator {name} did not start in 120 s")
        self.base = f"http://127.0.0.1:{int(port_file.read_text())}"

    def call(self, path: str, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method="GET" if body is None else "POST")
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.load(resp)

    def world(self):
        return self.call("/_emulator/world")

    def stats(self):
        return self.call("/_emulator/stats")

    def reset(self):
        self.call("/_emulator/reset", {})

    def configure(self, patch: dict):
        self.call("/_emulator/config", patch)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


def expected_count(world: dict) -> int:
    """Organisations show every repository to any valid token; users their public ones
    (no bench token's account is one of the world's users)."""
    return sum(o["repos"] if o["kind"] == "org" else o["public"] for o in world["owners"].values())


def page_urls(world: dict, base: str) -> list[str]:
    """Every listing page, written as the clients write them: page 1 without page=,
    the others as the Link header gives them."""
    urls = []
    for name, o in world["owners"].items():
        kind, count = ("orgs", o["repos"]) if o["kind"] == "org" else ("users", o["public"])
        for page in range(1, max(1, math.ceil(count / 100)) + 1):
            urls.append(f"{base}/{kind}/{name}/repos?per_page=100" + (f"&page={page}" if page > 1 else ""))
    return urls


# ---------------------------------------------------------------------------
# Running and checking one client
# ---------------------------------------------------------------------------


class Bench:
    def __init__(self, gitfleet: str, work: Path, peers=True):
        self.work = work
        self.gitfleet, self.providers = self.snapshot(gitfleet)
        self.rounds = max(1, int(os.environ.get("BENCH_ROUNDS", "3")))
        self.results: dict = {}
        self.meta: dict = {}
        self.seq = 0
        self.loud_streak = 0
        self.floor_bin = self.build_floor()
        self.pygithub_python = self.find_pygithub() if peers else None
        self.node_modules = BENCH / "node_modules"
        if peers and not (self.node_modules / "@octokit" / "rest").is_dir():
            raise SystemExit("bench: bench/node_modules is missing: run bench/run.sh (it runs npm ci)")
        self.version = (sh([self.gitfleet, "--version"]).splitlines() or ["?"])[0]

    # -- set-up ---------------------------------------------------------------

    def snapshot(self, gitfleet: str):
        """A copy of the binary and its provider plugins, so that a rebuild during the
        bench (make in another shell) cannot change what is measured half-way."""
        src = Path(gitfleet).parent / "providers"
        if not src.is_dir():
            src = ROOT / "providers"
        providers = self.work / "providers"
        shutil.copytree(src, providers)
        binary = self.work / "gitfleet"
        shutil.copy2(gitfleet, binary)
        return str(binary), providers

    def build_floor(self) -> Path:
        out = self.work / "floor_transfer"
        flags = shlex.split(sh(["pkg-config", "--cflags", "--libs", "libcurl"]) or "-lcurl")
        subprocess.run(["cc", "-O2", "-o", str(out), str(BENCH / "floor_transfer.c"), *flags], check=True)
        return out

    @staticmethod
    def find_pygithub() -> str:
        candidates = [os.environ.get("BENCH_PYGITHUB_PYTHON"), "/usr/bin/python3", shutil.which("python3")]
        for py in filter(None, candidates):
            if subprocess.run([py, "-c", "import github"], capture_output=True).returncode == 0:
                return py
        raise SystemExit("bench: no python3 with PyGithub (Debian: apt-get install python3-github)")

    def gitfleet_config(self, emu: Emulator, cache: Path) -> Path:
        self.seq += 1
        path = self.work / f"gitfleet-{self.seq}.yaml"
        tokens = "\n".join(f"        - {{ label: {label}, token: {tok}, account: {acct} }}" for label, tok, acct in TOKENS)
        path.write_text(
            "providers:\n  github:\n"
            f"    base_url: {emu.base}\n    tokens:\n{tokens}\n"
            f"http: {{ max_connections: {HTTP['max_connections']}, per_token_concurrency: {HTTP['per_token_concurrency']} }}\n"
            f"retry: {{ base_delay: {RETRY['base_delay']}, max_delay: {RETRY['max_delay']}, "
            f"reset_margin: {RETRY['reset_margin']} }}\n"
            f"cache: {{ path: {cache}, max_size: {CACHE_MAX} }}\n")
        path.chmod(0o600)
        return path

    @staticmethod
    def floor_concurrency(config: Path) -> int:
        """Transfers in flight gitfleet allows: the smaller of http.max_connections and
        per_token_concurrency × tokens, read back from the config it was given."""
        text = config.read_text()
        max_conn = int(re.search(r"max_connections:\s*(\d+)", text).group(1))
        per_token = int(re.search(r"per_token_concurrency:\s*(\d+)", text).group(1))
        return min(max_conn, per_token * len(re.findall(r"token: ", text)))

    def write_url_list(self, name: str, urls: list[str], tokens: list[str]) -> Path:
        path = self.work / f"urls-{name}.txt"
        path.write_text("".join(f"{tokens[i % len(tokens)]} {u}\n" for i, u in enumerate(urls)))
        return path

    def warm_emulator(self, emu: Emulator, world: dict, urls: list[str]):
        """Have the emulator render every response once per token (it caches them per
        account), so that no client pays for the first rendering."""
        extra = [f"{emu.base}/{'orgs' if o['kind'] == 'org' else 'users'}/{n}" for n, o in world["owners"].items()]
        for _, tok, _ in TOKENS:
            lst = self.write_url_list(f"warm-{emu.name}", urls + extra, [tok])
            subprocess.run([str(self.floor_bin), "24", str(lst)], check=True, stdout=subprocess.DEVNULL,
                           timeout=RUN_TIMEOUT)
        emu.reset()

    # -- one run ---------------------------------------------------------------

    def wait_for_quiet(self) -> float:
        """Other people's builds and tests may share this machine: before a run, wait (at
        most BENCH_QUIET_WAIT s, default 15) for a second in which they use under 0.25 CPU.
        After three runs in a row found none, only one second is sampled: the machine is
        busy for good and waiting would only make the bench longer. Returns the seconds
        waited; the report says how quiet the runs were."""
        limit = float(os.environ.get("BENCH_QUIET_WAIT", "15"))
        if self.loud_streak >= 3:
            limit = min(limit, 1.0)
        started = time.time()
        quiet = False
        for _ in range(int(limit) + 1):
            before = cpu_busy()
            time.sleep(1.0)
            quiet = cpu_busy() - before < 0.25
            if quiet or time.time() - started >= limit:
                break
        self.loud_streak = 0 if quiet else self.loud_streak + 1
        return time.time() - started

    def command(self, client: str, emu: Emulator, owners: Path, out: Path, cache: Path | None, extra=None):
        if client in ("gitfleet", "gitfleet-unlimited", "gitfleet-secondary", "gitfleet-nocache"):
            cfg = self.gitfleet_config(emu, cache)
            env = {"GITFLEET_PROVIDERS": str(self.providers)}
            no_cache = ["--no-cache"] if client == "gitfleet-nocache" else []
            return [self.gitfleet, "--config", str(cfg), *no_cache, "fetch", "--no-progress", "--format", "ndjson",
                    "--output", str(out), "--owners-file", str(owners)], env
        env = {"BENCH_TOKENS": ",".join(t for _, t, _ in TOKENS), "BENCH_OWNERS_IN_FLIGHT": str(OWNERS_IN_FLIGHT)}
        if client == "octokit":
            return ["node", str(BENCH / "peer_octokit.mjs"), emu.base, str(owners), str(out)], env
        if client == "pygithub":
            return [self.pygithub_python, str(BENCH / "peer_pygithub.py"), emu.base, str(owners), str(out)], env
        if client == "floor":
            return [str(self.floor_bin), str(extra["concurrency"]), str(extra["urls"])], {}
        raise ValueError(client)

    def run(self, workload: str, client: str, emu: Emulator, owners: Path, expected: int | None,
            cache: Path | None = None, extra=None, align=False, keep_output=False) -> dict:
        """Run one client under GNU time and check its output. The harness only waits meanwhile."""
        self.seq += 1
        tag = f"{workload}-{client}-{self.seq}"
        out = self.work / f"{tag}.ndjson"
        timef, errf = self.work / f"{tag}.time", self.work / f"{tag}.stderr"
        cmd, env = self.command(client, emu, owners, out, cache, extra)
        emu.reset()
        res_quiet = self.wait_for_quiet()
        if align:  # start just after a whole second: the first window then resets 4 s later
            now = time.time()
            time.sleep(math.floor(now) + 1.02 - now)
        busy0, emu0 = cpu_busy(), process_cpu(emu.proc.pid)
        launch = time.time()
        with open(errf, "w") as err, open(self.work / f"{tag}.stdout", "w") as so:
            proc = subprocess.Popen(["/usr/bin/time", "-f", TIME_FMT, "-o", str(timef), *cmd],
                                    stdout=so, stderr=err, env={**os.environ, **env}, start_new_session=True)
            try:
                rc = proc.wait(RUN_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                rc = "timeout"
        busy, emu_cpu = cpu_busy() - busy0, process_cpu(emu.proc.pid) - emu0
        stats = emu.stats()
        res = {"client": client, "rc": rc, "launch": launch, "quiet_wait": res_quiet,
               "quiet": self.loud_streak == 0, "requests": stats["requests"],
               "by_status": stats["by_status"], "faults": stats["faults"], "not_modified": stats["not_modified"],
               "primary_limited": stats["primary_limited"], "max_in_flight": stats["max_in_flight"]}
        try:
            wall, user, system, rss = timef.read_text().split()[-4:]
            res.update(wall=float(wall), cpu=float(user) + float(system), rss_mb=int(rss) / 1024)
        except (OSError, ValueError):
            res.update(wall=None, cpu=None, rss_mb=None)
        # CPU the machine spent on anything but this client and the emulator: noise.
        res["emulator_cpu"] = emu_cpu
        if res["wall"]:
            res["foreign_cpu_share"] = max(0.0, busy - emu_cpu - res["cpu"]) / res["wall"]
        res["per_token"] = [t["requests"] for _, t in sorted(stats["tokens"].items(), key=lambda kv: int(kv[0]))]
        res["secondary_per_token"] = [t["secondary_limited"] for _, t in sorted(stats["tokens"].items(),
                                                                                key=lambda kv: int(kv[0]))]
        res["max_in_flight_per_token"] = [t["max_in_flight"] for _, t in sorted(stats["tokens"].items(),
                                                                                  key=lambda kv: int(kv[0]))]
        stderr = errf.read_text(errors="replace")
        res["peer_stats"] = next((json.loads(l) for l in reversed(stderr.splitlines()) if l.startswith('{"peer"')), None)
        res["stderr_tail"] = stderr.strip().splitlines()[-3:]
        if client == "floor":
            m = re.search(r"pages=(\d+) bytes=(\d+) failed=(\d+)", (self.work / f"{tag}.stdout").read_text())
            res["ok"] = rc == 0 and m is not None and m.group(3) == "0"
            res["why"] = "" if res["ok"] else f"exit {rc}"
        else:
            res.update(self.check_output(out, expected))
            if rc == "timeout":
                res.update(ok=False, why=f"timed out after {RUN_TIMEOUT} s")
        if keep_output:
            res["output"] = str(out)
        else:
            out.unlink(missing_ok=True)
        self.results.setdefault(workload, []).append(res)
        state = f"{res['wall']:.2f} s" if res["ok"] else f"FAILED ({res['why']})"
        log(f"({workload}) {TITLES.get(client, client)}: {state}, {res['requests']} requests")
        return res

    @staticmethod
    def check_output(out: Path, expected: int) -> dict:
        names, lines = set(), 0
        try:
            with open(out, encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        lines += 1
                        names.add(json.loads(line).get("full_name"))
        except (OSError, ValueError, AttributeError) as exc:
            return {"ok": False, "count": lines, "why": f"unreadable output: {exc}"}
        if lines == expected and len(names) == expected:
            return {"ok": True, "count": lines, "why": ""}
        why = f"{lines} repositories, {expected} expected"
        if len(names) != lines:
            why += f", {lines - len(names)} duplicates"
        return {"ok": False, "count": lines, "why": why}

    # -- workloads -------------------------------------------------------------

    def owners_file(self, emu: Emulator, world: dict) -> Path:
        path = self.work / f"owners-{emu.name}.txt"
        path.write_text("".join(f"{n}\n" for n in world["owners"]))
        return path

    def workload_a_d(self, want: set):
        emu = Emulator("a", dict(SCENARIO_A, limits={"github": None}), self.work)
        try:
            world = emu.world()
            expected, owners = expected_count(world), self.owners_file(emu, world)
            urls = page_urls(world, emu.base)
            self.meta["a"] = {"expected": expected, "owners": len(world["owners"]), "pages": len(urls),
                              "orgs": world["totals"]["orgs"], "users": world["totals"]["users"]}
            log(f"(a) {len(world['owners'])} owners, {expected} repositories, {len(urls)} pages; warming the emulator")
            self.warm_emulator(emu, world, urls)
            tokens = [t for _, t, _ in TOKENS]
            floor = {"urls": self.write_url_list("floor-a", urls, tokens),
                     "concurrency": self.floor_concurrency(self.gitfleet_config(emu, self.work / "unused.sqlite"))}
            self.meta["floor_concurrency"] = floor["concurrency"]
            warm_cache = None
            for r in range(self.rounds):
                for client in CLIENTS:
                    cache = self.fresh_cache(f"a-{r}") if client == "gitfleet" else None
                    res = self.run("a", client, emu, owners, expected, cache=cache)
                    if cache and res["ok"]:
                        drop(warm_cache)  # keep one warm cache for (d), not three
                        warm_cache = cache
                self.run("a", "floor", emu, owners, None, extra=floor)
            self.parse_floor(urls)
            if "d" in want:
                for r in range(self.rounds):
                    for client in CLIENTS:
                        cache = None
                        if client == "gitfleet":
                            cache = self.copy_cache(warm_cache, self.work / f"cache-d-{r}")
                        self.run("d", client, emu, owners, expected, cache=cache)
                        drop(cache)
        finally:
            emu.stop()

    def workload_coldcache(self):
        """(a)'s job against an emulator without gzip: a fresh cache against --no-cache,
        alternating; then each filled cache once more (all 304s, the same records); and the
        cache file's size against the one the same job leaves when the emulator gzips."""
        emu = Emulator("coldcache", dict(SCENARIO_A, limits={"github": None}), self.work, args=["--no-gzip"])
        try:
            world = emu.world()
            expected, owners = expected_count(world), self.owners_file(emu, world)
            urls = page_urls(world, emu.base)
            self.meta["coldcache"] = {"expected": expected, "owners": len(world["owners"]), "pages": len(urls)}
            log(f"(coldcache) {len(world['owners'])} owners, {len(urls)} pages, no gzip; warming the emulator")
            self.warm_emulator(emu, world, urls)
            for r in range(self.rounds):
                cache = self.fresh_cache(f"cold-{r}")
                first = self.run("coldcache", "gitfleet", emu, owners, expected, cache=cache, keep_output=True)
                self.run("coldcache", "gitfleet-nocache", emu, owners, expected, cache=self.work / "unused.sqlite")
                first["cache_bytes"] = cache_file_size(cache)
                second = self.run("coldcache-again", "gitfleet", emu, owners, expected, cache=cache,
                                  keep_output=True)
                second["same_output"] = same_records(first.pop("output"), second.pop("output"))
                drop(cache)
            emu.configure({"gzip": True})
            cache = self.fresh_cache("cold-gzip")
            res = self.run("coldcache-gzip", "gitfleet", emu, owners, expected, cache=cache)
            res["cache_bytes"] = cache_file_size(cache)
            drop(cache)
        finally:
            emu.stop()

    def fresh_cache(self, name: str) -> Path:
        """A path for an empty gitfleet cache, alone in its directory (SQLite may add -wal/-shm)."""
        d = self.work / f"cache-{name}"
        d.mkdir()
        return d / "http.sqlite"

    @staticmethod
    def copy_cache(src: Path | None, dest_dir: Path) -> Path:
        """A copy of (a)'s cache (with any SQLite -wal/-shm beside it), so every (d) run starts alike."""
        dest_dir.mkdir()
        if src is not None:
            for f in src.parent.iterdir():
                shutil.copy2(f, dest_dir / f.name)
        return dest_dir / "http.sqlite"

    def parse_floor(self, urls: list[str]):
        """Every page body once into files, then lua-cjson decodes them, read into memory first."""
        pages = self.work / "pages"
        pages.mkdir()
        lst = self.write_url_list("save", urls, [TOKENS[0][1]])
        subprocess.run([str(self.floor_bin), "--save", str(pages), "24", str(lst)], check=True,
                       stdout=subprocess.DEVNULL, timeout=RUN_TIMEOUT)
        listing = self.work / "pages.list"
        listing.write_text("".join(f"{p}\n" for p in sorted(os.listdir(pages))))
        size = sum(f.stat().st_size for f in pages.iterdir())
        runs = []
        for _ in range(self.rounds):
            self.wait_for_quiet()
            timef = self.work / "parse.time"
            proc = subprocess.run(["/usr/bin/time", "-f", TIME_FMT, "-o", str(timef), "lua5.4",
                                   str(BENCH / "floor_parse.lua"), str(pages), str(listing)],
                                  capture_output=True, text=True, timeout=RUN_TIMEOUT)
            m = re.search(r"records=(\d+) cpu=([\d.]+)", proc.stdout)
            if proc.returncode != 0 or not m:
                raise RuntimeError(f"parse floor failed: {proc.stderr.strip()}")
            rss = int(timef.read_text().split()[-1]) / 1024
            runs.append({"decode": float(m.group(2)), "records": int(m.group(1)), "rss_mb": rss})
        shutil.rmtree(pages)
        self.results["parse_floor"] = runs
        self.meta["parse_bytes"] = size
        log(f"(a) parse floor: {statistics.median(r['decode'] for r in runs):.2f} s for {size / 1e6:.0f} MB of JSON")

    def workload_b(self):
        emu = Emulator("b", dict(SCENARIO_A, limits={"github": None}), self.work)
        try:
            world = emu.world()
            expected, owners = expected_count(world), self.owners_file(emu, world)
            log(f"(b) {expected} repositories with {FAULTS['rate']:.0%} faults; warming the emulator")
            self.warm_emulator(emu, world, page_urls(world, emu.base))
            emu.configure({"faults": FAULTS})  # after the warm-up; every reset re-seeds the draws
            for r in range(self.rounds):
                for client in CLIENTS:
                    cache = self.fresh_cache(f"b-{r}") if client == "gitfleet" else None
                    self.run("b", client, emu, owners, expected, cache=cache)
                    drop(cache)
        finally:
            emu.stop()

    def workload_c(self):
        emu = Emulator("c", dict(SCENARIO_C, limits={"github": QUOTA}), self.work)
        try:
            world = emu.world()
            expected, owners = expected_count(world), self.owners_file(emu, world)
            urls = page_urls(world, emu.base)
            self.meta["c"] = {"expected": expected, "pages": len(urls)}
            log(f"(c) {expected} repositories, {len(urls)} pages, 3 tokens of {QUOTA['limit']} per {QUOTA['window']} s")
            emu.configure({"limits": {"github": None}})
            self.warm_emulator(emu, world, urls)
            for r in range(self.rounds):
                emu.configure({"limits": {"github": None}})
                cache = self.fresh_cache(f"c0-{r}")
                self.run("c", "gitfleet-unlimited", emu, owners, expected, cache=cache)
                drop(cache)
                emu.configure({"limits": {"github": QUOTA}})
                for client in CLIENTS:
                    cache = self.fresh_cache(f"c-{r}") if client == "gitfleet" else None
                    self.run("c", client, emu, owners, expected, cache=cache, align=True)
                    drop(cache)
        finally:
            emu.stop()

    def workload_latency(self):
        """(a)'s job with every response held LATENCY s: how much of the allowed concurrency each
        client uses. Then gitfleet alone against a provider whose secondary limit is below
        per_token_concurrency: the refusals it takes per token while finding that limit."""
        emu = Emulator("latency", dict(SCENARIO_A, limits={"github": None}), self.work)
        try:
            world = emu.world()
            expected, owners = expected_count(world), self.owners_file(emu, world)
            log(f"(latency) {expected} repositories, {LATENCY * 1000:.0f} ms a response; warming the emulator")
            self.warm_emulator(emu, world, page_urls(world, emu.base))  # without latency: it only renders
            emu.configure({"latency": LATENCY})
            allowed = self.floor_concurrency(self.gitfleet_config(emu, self.work / "unused.sqlite"))
            self.meta["latency"] = {"expected": expected, "owners": len(world["owners"]), "allowed": allowed}
            for r in range(self.rounds):
                for client in CLIENTS:
                    cache = self.fresh_cache(f"latency-{r}") if client == "gitfleet" else None
                    self.run("latency", client, emu, owners, expected, cache=cache)
                    drop(cache)
                emu.configure({"secondary": LATENCY_SECONDARY})
                cache = self.fresh_cache(f"latency-secondary-{r}")
                self.run("latency", "gitfleet-secondary", emu, owners, expected, cache=cache)
                drop(cache)
                emu.call("/_emulator/reset", {"config": True})  # the scenario's secondary limit, no latency
                emu.configure({"latency": LATENCY})
        finally:
            emu.stop()


# ---------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, digits=2):
    return "—" if v is None else f"{v:.{digits}f}"


def ratio(v, base):
    return "—" if v is None or not base else f"{v / base:.2f}×"


def summarize(runs: list[dict]) -> dict:
    """Medians over the runs that returned the expected repositories, and the run
    closest to the median wall time (its counters go in the notes)."""
    ok = [r for r in runs if r["ok"]]
    s = {"n": len(runs), "ok": len(ok), "failed": [r for r in runs if not r["ok"]],
         "wall": med(r["wall"] for r in ok), "cpu": med(r["cpu"] for r in ok),
         "rss": med(r["rss_mb"] for r in ok), "rc": [r["rc"] for r in ok if r["rc"] != 0],
         "wall_min": min((r["wall"] for r in ok), default=None), "wall_max": max((r["wall"] for r in ok), default=None)}
    s["typical"] = min(ok, key=lambda r: abs(r["wall"] - s["wall"])) if ok else (runs[0] if runs else None)
    return s


def requests_note(r: dict) -> str:
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(r["by_status"].items()))
    return f"{r['requests']} requests ({statuses})"


def client_notes(workload: str, client: str, s: dict, bench: "Bench") -> list[str]:
    r = s["typical"]
    notes = []
    if r is None:
        return notes
    if s["ok"] > 1:
        notes.append(f"wall {s['wall_min']:.2f}–{s['wall_max']:.2f} s over {s['ok']} runs")
    notes.append(requests_note(r))
    peer = r.get("peer_stats") or {}
    if workload == "b":
        faults = ", ".join(f"{k} {v}" for k, v in sorted(r["faults"].items()))
        notes.append(f"faults injected: {faults or 'none'}")
        if peer.get("retries") is not None:
            notes.append(f"{peer['retries']} hand-written retries")
    if workload == "c":
        notes.append("requests per token " + "/".join(map(str, r.get("per_token", []))))
        if r["primary_limited"]:
            notes.append(f"{r['primary_limited']} requests refused by the limit (403)")
    if peer.get("rate_limit_waits"):
        notes.append(f"{peer['rate_limit_waits']} rate-limit waits")
    if peer.get("unreadable_pages"):
        notes.append(f"{peer['unreadable_pages']} pages with an unreadable (truncated) body taken as \"\"")
    if workload == "d":
        if client == "gitfleet":
            pages = r["not_modified"] + r["by_status"].get("200", 0)
            notes.append(f"warm cache: {r['not_modified']} of {pages} pages answered 304 Not Modified")
        else:
            notes.append("no persistent cache: (a) again")
    if s["rc"]:
        notes.append(f"exit status {', '.join(map(str, s['rc']))} in runs with the right count")
    if s["failed"]:
        whys = sorted({f["why"] for f in s["failed"]})
        notes.insert(0, f"**FAILED** in {len(s['failed'])} of {s['n']} runs: {'; '.join(whys)}")
    return notes


def table(workload: str, bench: "Bench", rows=CLIENTS, extra_note=None) -> list[str]:
    runs = bench.results.get(workload, [])
    sums = {c: summarize([r for r in runs if r["client"] == c]) for c in rows}
    base = sums.get("gitfleet")
    lines = ["| client | wall s | CPU s | peak RSS MB | wall ratio | CPU ratio | RSS ratio | notes |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for c in rows:
        s = sums[c]
        if s["n"] == 0:
            continue
        notes = client_notes(workload, c, s, bench)
        if extra_note:
            notes += extra_note(c, s)
        if s["failed"] and s["ok"]:
            notes.append(f"the {s['ok']} good runs: median wall {fmt(s['wall'])} s")
        if s["failed"]:
            cells = ["FAILED", "—", "—", "—", "—", "—"]
        else:
            cells = [fmt(s["wall"]), fmt(s["cpu"]), fmt(s["rss"], 1)]
            if base and not base["failed"]:
                cells += [ratio(s["wall"], base["wall"]), ratio(s["cpu"], base["cpu"]), ratio(s["rss"], base["rss"])]
            else:
                cells += ["—", "—", "—"]
        lines.append(f"| {TITLES[c]} | " + " | ".join(cells) + " | " + "; ".join(notes) + " |")
    return lines


def section_a(bench: "Bench") -> list[str]:
    m = bench.meta["a"]
    out = [f"## (a) {m['owners']} owners ({m['orgs']} organisations, {m['users']} users), "
           f"{m['expected']:,} repositories, {m['pages']} pages, no rate limits", ""]
    out += table("a", bench)
    fl = summarize([r for r in bench.results["a"] if r["client"] == "floor"])
    pf = bench.results.get("parse_floor", [])
    decode = med(r["decode"] for r in pf)
    out += ["", f"Floors — what the machine allows for the same {m['pages']} pages:", "",
            "| floor | wall s | CPU s | peak RSS MB | notes |", "|---|---:|---:|---:|---|",
            f"| transfer: libcurl multi, keep-alive, {bench.meta['floor_concurrency']} in flight, bodies discarded "
            f"| {fmt(fl['wall'])} | {fmt(fl['cpu'])} | {fmt(fl['rss'], 1)} | "
            f"`bench/floor_transfer.c`; in flight = min(http.max_connections, per_token_concurrency × 3 tokens)"
            + (f"; **FAILED** in {len(fl['failed'])} runs" if fl["failed"] else "") + " |",
            f"| parse: lua-cjson decode, no I/O | {fmt(decode)} | {fmt(decode)} | {fmt(med(r['rss_mb'] for r in pf), 1)} "
            f"| `bench/floor_parse.lua`, {bench.meta.get('parse_bytes', 0) / 1e6:.0f} MB of JSON read into memory "
            f"first; CPU time of the decode loop (single-threaded, so wall ≈ CPU); RSS includes the bodies |"]
    gf = summarize([r for r in bench.results["a"] if r["client"] == "gitfleet"])
    floors = [(v, name) for v, name in ((fl["wall"], "transfer"), (decode, "parse")) if v is not None]
    if gf["wall"] and floors:
        high, name = max(floors)
        if gf["wall"] >= high:
            out += ["", f"Headroom: gitfleet's {gf['wall']:.2f} s is {gf['wall'] - high:.2f} s "
                    f"({gf['wall'] / high:.2f}×) above the higher floor ({name}, {high:.2f} s)."]
        else:
            out += ["", f"gitfleet's {gf['wall']:.2f} s is under the higher floor ({name}, {high:.2f} s): it builds "
                    "only the fields records need (a plugin's `repository_keys`) where the parse floor decodes "
                    f"every field; its distance from the transfer floor is {gf['wall'] - fl['wall']:.2f} s "
                    f"({gf['wall'] / fl['wall']:.2f}×)." if fl["wall"] else ""]
    return out


def section_c(bench: "Bench") -> list[str]:
    m = bench.meta["c"]
    runs = bench.results.get("c", [])
    unl = summarize([r for r in runs if r["client"] == "gitfleet-unlimited"])
    # Every run starts 0.02 s after a whole second: its first request opens the
    # window, which resets at the next whole second after first request + 3 s.
    waits = [math.floor(r["launch"]) + 1 + QUOTA["window"] - r["launch"] for r in runs
             if r["client"] in CLIENTS and r["launch"]]
    wait = med(waits)
    floor = wait + unl["wall"] if wait is not None and unl["wall"] else None
    # The first window's pages can be fetched while it runs: only the pages beyond
    # the first window's budget must come after the reset.
    budget = QUOTA["limit"] * len(TOKENS)
    late_share = max(0, m["pages"] - budget) / m["pages"]
    tight = wait + unl["wall"] * late_share if floor else None

    def vs_floor(c, s):
        if not (floor and s["wall"] and not s["failed"]):
            return []
        return [f"{s['wall'] / floor:.2f}× the limit floor ({s['wall'] / tight:.2f}× the tighter one)"]

    out = [f"## (c) Quota-bound: 3 tokens of {QUOTA['limit']} requests per {QUOTA['window']} s, "
           f"4 organisations of 3,000 repositories ({m['expected']:,} repositories, {m['pages']} pages)", ""]
    out += table("c", bench, extra_note=vs_floor)
    total_budget = QUOTA["limit"] * len(TOKENS)
    out += ["", "octokit and PyGithub tie an owner to a token (owner i → token i mod 3), so one token lists two "
            f"of the four organisations ({2 * m['pages'] // 4} pages, three windows of {QUOTA['limit']}) while the "
            "others run out of work; gitfleet's pool hands each request to the token with the most budget left."]
    out += ["", f"Minimum the limits allow: {fmt(floor)} s = one reset wait of {fmt(wait)} s "
            f"(the window the first {total_budget} requests open resets at the next whole second after first "
            f"request + {QUOTA['window']} s; each run is launched 0.02 s after a whole second, so this is measured "
            f"from the launch, which is at most the client's start-up earlier than its first request) + "
            f"{fmt(unl['wall'])} s, gitfleet's own time for the same job with the limits off "
            f"(median of {unl['ok']} runs, {requests_note(unl['typical']) if unl['typical'] else '—'}).",
            "",
            f"That floor counts the whole job after the wait, but the first window's {budget} pages can be "
            f"fetched before the reset; only the other {m['pages'] - budget} must follow it. The tighter minimum "
            f"is therefore the reset wait + {late_share:.0%} of the unlimited time: {fmt(tight)} s."]
    return out


def section_latency(bench: "Bench") -> list[str]:
    m = bench.meta["latency"]
    allowed = m["allowed"]

    def vs_ceiling(c, s):
        r = s["typical"]
        if not (s["wall"] and r and not s["failed"]):
            return []
        ceiling = r["requests"] * LATENCY / allowed
        return [f"{s['wall'] / ceiling:.2f}× its ceiling ({ceiling:.2f} s = {r['requests']} requests × "
                f"{LATENCY} s ÷ {allowed}); {r['requests'] * LATENCY / r['wall']:.1f} requests in flight on average"]

    out = [f"## (latency) (a)'s {m['owners']} owners ({m['expected']:,} repositories) with every response held "
           f"{LATENCY * 1000:.0f} ms", "",
           f"A far provider: the emulator holds each response {LATENCY} s (`latency`), serving the others "
           f"meanwhile. The ceiling is what the allowed concurrency permits: a client's requests × {LATENCY} s ÷ "
           f"{allowed} in flight (min(http.max_connections, per_token_concurrency × 3 tokens), gitfleet's "
           "configuration; the peers set no such limit).", ""]
    out += table("latency", bench, extra_note=vs_ceiling)
    sec = [r for r in bench.results.get("latency", []) if r["client"] == "gitfleet-secondary"]
    ss = summarize(sec)
    if ss["n"]:
        refusals = [max(r["secondary_per_token"]) for r in sec if r["ok"]]
        typical = ss["typical"]
        out += ["", f"gitfleet against the same provider with a secondary limit of "
                f"{LATENCY_SECONDARY['max_concurrency']} requests in flight per token (Retry-After "
                f"{LATENCY_SECONDARY['retry_after']} s) where 8 are configured: "
                + (f"**FAILED** in {len(ss['failed'])} of {ss['n']} runs; " if ss["failed"] else "")
                + f"median wall {fmt(ss['wall'])} s; secondary-limit refusals per token "
                f"{'/'.join(map(str, typical['secondary_per_token']))} in the median run, at most "
                f"{max(refusals, default=0)} on any token in any run; most in flight per token "
                f"{'/'.join(map(str, typical['max_in_flight_per_token']))}."]
    return out


def section_coldcache(bench: "Bench") -> list[str]:
    m = bench.meta["coldcache"]
    runs = bench.results["coldcache"]
    cold = summarize([r for r in runs if r["client"] == "gitfleet"])
    plain = summarize([r for r in runs if r["client"] == "gitfleet-nocache"])
    again = bench.results.get("coldcache-again", [])
    gz = bench.results.get("coldcache-gzip", [])
    sizes = [r["cache_bytes"] for r in runs if r["client"] == "gitfleet" and r["ok"]]
    gz_size = gz[0]["cache_bytes"] if gz and gz[0]["ok"] else None
    pages = lambda r: r["not_modified"] + r["by_status"].get("200", 0)
    out = [f"## (coldcache) (a) with plain bodies: {m['owners']} owners, {m['expected']:,} repositories, "
           f"{m['pages']} pages, the emulator started with `--no-gzip`", "",
           "gitfleet with a fresh cache and gitfleet `--no-cache`, alternating; then each filled cache once "
           "more.", "",
           "| run | wall s | CPU s | peak RSS MB | vs --no-cache (wall / CPU) | notes |",
           "|---|---:|---:|---:|---|---|"]
    for title, s in (("fresh cache", cold), ("`--no-cache`", plain)):
        notes = [f"wall {fmt(s['wall_min'])}–{fmt(s['wall_max'])} s over {s['ok']} runs"]
        if s["failed"]:
            notes.insert(0, f"**FAILED** in {len(s['failed'])} of {s['n']} runs")
        if s is cold and sizes:
            notes.append(f"cache file {med(sizes) / 1e6:.1f} MB"
                         + (f" ({med(sizes) / gz_size:.2f}× the {gz_size / 1e6:.1f} MB the same job leaves "
                            "when the emulator gzips)" if gz_size else ""))
        out.append(f"| {title} | {fmt(s['wall'])} | {fmt(s['cpu'])} | {fmt(s['rss'], 1)} | "
                   f"{ratio(s['wall'], plain['wall'])} / {ratio(s['cpu'], plain['cpu'])} | {'; '.join(notes)} |")
    if again:
        s = summarize(again)
        all_304 = all(r["ok"] and r["not_modified"] == pages(r) for r in again)
        same = all(r.get("same_output") for r in again)
        out.append(f"| again, cache filled | {fmt(s['wall'])} | {fmt(s['cpu'])} | {fmt(s['rss'], 1)} | "
                   f"{ratio(s['wall'], plain['wall'])} / {ratio(s['cpu'], plain['cpu'])} | "
                   f"{'every page 304' if all_304 else '**not every page 304**'}; "
                   f"{'the same records' if same else '**records differ**'} in {len(again)} of {len(again)} runs |")
    return out


def noise_line(bench: "Bench") -> str:
    """How much CPU other processes took during the timed runs (from /proc/stat, less the
    client's and the emulator's own): the bench is only as good as the machine is quiet."""
    shares = [(r["foreign_cpu_share"], w, r["client"]) for w, runs in bench.results.items() if isinstance(runs, list)
              for r in runs if r.get("foreign_cpu_share") is not None]
    if not shares:
        return "- other processes' CPU during the runs: not measured"
    mean = sum(x for x, _, _ in shares) / len(shares)
    worst = max(shares)
    line = (f"- other processes' CPU during the timed runs: {mean:.2f} CPUs on average, at most {worst[0]:.2f} "
            f"(({worst[1]}) {TITLES.get(worst[2], worst[2])})")
    if worst[0] > 0.1:
        line += " — **the machine was not quiet: these numbers are noisier than a quiet machine's**"
    limit = float(os.environ.get("BENCH_QUIET_WAIT", "15"))
    runs = [r for runs in bench.results.values() if isinstance(runs, list) for r in runs if "quiet" in r]
    if runs:
        loud = sum(1 for r in runs if not r["quiet"])
        line += (f"; before each run the harness waited up to {limit:.0f} s for a second with under 0.25 CPU of "
                 f"other work ({sum(r['quiet_wait'] for r in runs) / len(runs):.1f} s on average; {loud} of "
                 f"{len(runs)} runs started without one)")
    return line


def machine_and_versions(bench: "Bench") -> list[str]:
    cpu = ""
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = ""
    try:
        kb = int(next(l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal")))
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    osname = ""
    try:
        osname = next(l.split("=", 1)[1].strip().strip('"') for l in open("/etc/os-release") if l.startswith("PRETTY_NAME"))
    except (OSError, StopIteration):
        pass

    def npm_version(pkg):
        try:
            return json.loads((bench.node_modules / pkg / "package.json").read_text())["version"]
        except (OSError, ValueError, KeyError):
            return "?"

    octo = ", ".join(f"{p} {npm_version(p)}" for p in (
        "@octokit/rest", "@octokit/core", "@octokit/plugin-throttling", "@octokit/plugin-retry",
        "@octokit/plugin-paginate-rest", "@octokit/request", "bottleneck"))
    pyg = sh([bench.pygithub_python, "-c",
              "import importlib.metadata as m, sys; print(m.version('PyGithub'), m.version('requests'), "
              "m.version('urllib3'), sys.version.split()[0])"]).split() if bench.pygithub_python else []
    pyg += ["?"] * (4 - len(pyg))
    return [
        "## Machine", "",
        f"- {sh(['nproc'])} CPUs (`nproc`), {cpu}, {mem} memory; {osname}, Linux {platform.release()}",
        "- the emulator, the client being measured and the harness share these CPUs; the harness only waits "
        "while a client runs",
        noise_line(bench),
        "", "## Versions", "",
        f"- gitfleet: {bench.version}",
        f"- Node.js {sh(['node', '--version'])}; {octo}",
        f"- PyGithub {pyg[0]} (requests {pyg[1]}, urllib3 {pyg[2]}) on Python {pyg[3]} ({bench.pygithub_python})",
        f"- emulator: Python {platform.python_version()} ({sys.executable})",
        f"- {sh(['curl', '--version']).splitlines()[0] if sh(['curl', '--version']) else 'curl ?'}; "
        f"libcurl {sh(['pkg-config', '--modversion', 'libcurl']) or '?'} (floor)",
        f"- {sh(['lua5.4', '-v']) or 'lua5.4 ?'}, lua-cjson {sh(['dpkg-query', '-W', '-f=${Version}', 'lua-cjson']) or '?'} (parse floor)",
    ]


def render(bench: "Bench", want: set, elapsed: float, command: str) -> str:
    rounds = bench.rounds
    gf_cmd = "gitfleet --config CFG fetch --no-progress --format ndjson --output FILE --owners-file OWNERS"
    out = [
        "# gitfleet benchmark", "",
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}. Medians of {rounds} runs per client; in each round the clients run "
        "one after another (gitfleet, octokit, PyGithub, then the floor), the emulator reset before each run. "
        "Wall, CPU (user + sys) and peak RSS come from GNU time around the client process only. Ratios are the "
        "client's value ÷ gitfleet's (above 1×: more than gitfleet). A run whose output does not hold exactly the "
        "expected repositories (from `GET /_emulator/world`: an organisation's are all visible to any valid token, "
        "a user's only the public ones) is FAILED and not timed.", "",
        "Clients:", "",
        f"- **gitfleet**: `{gf_cmd}` (64 owners at once, its default). 3 tokens, each with `account:` set — "
        "documented config that spares the one `GET /user` per token the pool otherwise makes to learn which "
        f"tokens share a budget. `http: {{max_connections: {HTTP['max_connections']}, per_token_concurrency: "
        f"{HTTP['per_token_concurrency']}}}`, `retry: {{base_delay: {RETRY['base_delay']}, max_delay: "
        f"{RETRY['max_delay']}, reset_margin: {RETRY['reset_margin']}}}` (max_attempts 6, the default), "
        f"`cache.max_size: {CACHE_MAX}`; a fresh, empty cache for every run of (a)–(c).",
        "- **octokit**: `@octokit/rest` with `@octokit/plugin-retry` and `@octokit/plugin-throttling` "
        "(`bench/peer_octokit.mjs`): one Octokit client per token (owner i → token i mod 3), "
        f"{OWNERS_IN_FLIGHT} owners in flight, `octokit.paginate(listForOrg)` — `listForUser` after a 404 — with "
        "a map function that writes each page. Throttle handlers return true to retry (up to 5 times); "
        "plugin-retry set to 5 retries with a 50 ms base (its waits are (n+1)² × base) to match gitfleet's "
        "retry settings. After a primary limit the throttling plugin waits until the reset + 1 s, rounded up "
        "to whole seconds (fixed in the plugin).",
        f"- **PyGithub** 1.55 (`bench/peer_pygithub.py`): `Github(base_url=EMU, login_or_token=TOKEN, per_page=100)`, "
        f"a pool of {OWNERS_IN_FLIGHT} threads (owner i → token i mod 3), `get_organization(o)` — `get_user(o)` "
        "after a 404 — then `get_repos()`, so one request more per owner than the others make. 1.55 has neither "
        "rate-limit handling nor retries, so the script does what a user must: catch "
        "`RateLimitExceededException` and sleep until the reset in its headers + 0.25 s; retry a failed page "
        "(5xx, connection errors, truncated bodies) up to 6 tries with exponential backoff and full jitter "
        "(0.05 s base, 2 s cap), resuming the listing at the page that failed. Its connection object is not "
        "thread-safe, so each thread has its own client per token.",
        "",
    ]
    if "a" in bench.meta:
        out += section_a(bench) + [""]
    if "b" in want and bench.results.get("b"):
        m = bench.meta["a"] if "a" in bench.meta else {}
        out += [f"## (b) (a) with {FAULTS['rate']:.0%} injected faults ({', '.join(FAULTS['kinds'])}; seed "
                f"{FAULTS['seed']}, re-seeded before every run, so each client meets the same draws in request order)",
                ""] + table("b", bench) + [""]
    if "c" in want and bench.results.get("c"):
        out += section_c(bench) + [""]
    if "latency" in want and bench.results.get("latency"):
        out += section_latency(bench) + [""]
    if "d" in want and bench.results.get("d"):
        out += ["## (d) (a) again, gitfleet's cache warm",
                "",
                "gitfleet starts each run with a copy of the cache a run of (a) filled, and revalidates with "
                "conditional requests; octokit and PyGithub have no persistent cache, so for them this is (a) "
                "run again (same emulator as (a)).", ""] + table("d", bench) + [""]
    if "coldcache" in want and bench.results.get("coldcache"):
        out += section_coldcache(bench) + [""]
    out += machine_and_versions(bench)
    out += ["", "## Command", "", f"`{command}` — the whole bench took {elapsed / 60:.1f} min ({elapsed:.0f} s).", ""]
    return "\n".join(out)


def main(argv) -> int:
    if len(argv) != 2:
        print("usage: bench/run.py PATH/TO/gitfleet   (normally through bench/run.sh or make bench)", file=sys.stderr)
        return 2
    gitfleet = os.path.abspath(argv[1])
    if not os.access(gitfleet, os.X_OK):
        print(f"bench: {gitfleet} is not an executable", file=sys.stderr)
        return 2
    if os.environ.get("BENCH_ONLY") == "scaleout":
        return scaleout.main(gitfleet)  # the scale-out row alone (bench/scaleout.py)
    want = {w.strip() for w in os.environ.get("BENCH_WORKLOADS", "a,b,c,d,latency,coldcache,s").split(",") if w.strip()}
    unknown = want - {"a", "b", "c", "d", "latency", "coldcache", "s"}
    if unknown:
        print(f"bench: unknown workload(s) in BENCH_WORKLOADS: {', '.join(sorted(unknown))} "
              "(use a, b, c, d, latency, coldcache, s)", file=sys.stderr)
        return 2
    command = " ".join(
        [f"{k}={os.environ[k]}" for k in ("BENCH_ROUNDS", "BENCH_WORKLOADS") if k in os.environ]
        + ["bench/run.sh", gitfleet])
    if os.environ.get("MAKELEVEL"):
        command = f"make bench ({command})"
    work = Path(tempfile.mkdtemp(prefix="gitfleet-bench-"))
    started = time.time()
    try:
        bench = Bench(gitfleet, work, peers=bool(want & {"a", "b", "c", "d", "latency"}))
        log(f"{bench.rounds} rounds; scratch in {work}")
        if want & {"a", "d"}:
            bench.workload_a_d(want)  # (d) reuses (a)'s emulator and gitfleet cache
        if "b" in want:
            bench.workload_b()
        if "c" in want:
            bench.workload_c()
        if "latency" in want:
            bench.workload_latency()
        if "coldcache" in want:
            bench.workload_coldcache()
    finally:
        if os.environ.get("BENCH_KEEP"):
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    results = BENCH / "results"
    results.mkdir(exist_ok=True)
    (results / "latest.json").write_text(json.dumps({"meta": bench.meta, "runs": bench.results}, indent=1))
    report = render(bench, want, time.time() - started, command)
    if "s" in want:  # scale-out through Redis: its own emulators and redis-server
        scaleout.main(gitfleet)
        report += "\n" + (results / "scaleout.md").read_text()
    print(report)
    (results / "latest.md").write_text(report)
    log(f"written to {results / 'latest.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
