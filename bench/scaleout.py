#!/usr/bin/env python3
"""gitfleet's scale-out benchmark: `gitfleet worker` processes sharing tokens and
one queue through Redis (shared:), against the bundled emulator.

    bench/scaleout.py PATH/TO/gitfleet        (or BENCH_ONLY=scaleout make bench)

Two jobs, each on its own emulator, with a redis-server of its own (free port,
temporary folder):

  (s1) limited: 3 tokens of 20 requests per 3 s; 4 organisations of 3,000
       repositories plus 200 small owners. 1, 2 and 4 workers on one queue; then
       4 independent `gitfleet fetch` processes (a quarter of the owners each, no
       shared:), the way overlapping crawls run today. Wall against the minimum
       the limits allow (every request in windows of 60), requests refused for a
       spent budget (the emulator's count), Redis round trips per HTTP request
       (from the workers' own fleet.stats()).
  (s2) no limits: the 200 small owners; 1 `gitfleet fetch` process against 1 and
       2 workers.
  (s3) no limits: the 200-owner job of bench/run.py's (a) (38,029 repositories,
       542 pages, six large organisations); 1 `gitfleet fetch` against 2
       workers, alternating, and, for reference, 2 `gitfleet fetch` processes
       with the owners split in advance into halves of equal repository
       counts (which no queue can know before it fetches): the most two
       processes get out of this machine's two cores on this job. The
       emulator renders every page once per token first (it caches per
       account), so it costs little and the clients' CPU is what is
       compared.

BENCH_SCALEOUT picks the jobs (default s1,s2,s3).

Every run's output must hold each expected repository exactly once (else
FAILED). Besides wall time, (s2) and (s3) report the CPU seconds the
gitfleet processes of a run used together (user + system) and Redis's own
(its INFO cpu): where two workers fall short of the reference, CPU says
whether they did more work or waited. Medians over BENCH_ROUNDS rounds
(default 3). Standard library only; talks to 127.0.0.1 only. Results:
stdout and bench/results/scaleout.md.

Files: a worker writes one file per owner, so what the file system charges
for creating a file counts here. Every run's output stays until the bench
ends (about 25 MB a run of s3): deleting each round's files before the next
made ext4 without a journal scan past the just-deleted inodes on every
create. BENCH_DIR picks the folder the bench works in (default: the system's
temporary folder); the report says what creating 200 empty files cost there
before the first round, which on one machine was 4 ms in a quiet folder and
58-171 ms in a /tmp where test suites had just deleted thousands of files.
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EMULATOR = ROOT / "spec" / "support" / "emulator.py"
TOKENS = [("t1", "ghp_scale_token_1", "scale1"), ("t2", "ghp_scale_token_2", "scale2"),
          ("t3", "ghp_scale_token_3", "scale3")]
QUOTA = {"limit": 20, "window": 3}
SMALL = {"count": 200, "total_repos": 4000, "prefix": "small", "large": 0}
BIG = [{"name": f"big-org-{i}", "kind": "org", "repos": 3000} for i in range(1, 5)]


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Emulator:
    def __init__(self, work: Path, scenario: dict):
        self.dir = Path(tempfile.mkdtemp(dir=work))
        (self.dir / "scenario.json").write_text(json.dumps(scenario))
        self.proc = subprocess.Popen(
            [sys.executable, str(EMULATOR), "--port", "0", "--port-file", str(self.dir / "port"),
             "--scenario", str(self.dir / "scenario.json"), "--quiet", "--parent-pid", str(os.getpid())],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            if (self.dir / "port").exists() and (self.dir / "port").read_text().endswith("\n"):
                break
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{int((self.dir / 'port').read_text())}"

    def control(self, path: str, body: dict | None = None):
        req = urllib.request.Request(self.url + path, method="POST" if body is not None else "GET",
                                     data=json.dumps(body).encode() if body is not None else None)
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read() or b"null")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


class Redis:
    def __init__(self, work: Path):
        self.dir = Path(tempfile.mkdtemp(dir=work))
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            if self.cli("PING") == "PONG":
                return
            time.sleep(0.05)
        raise SystemExit("bench: redis-server did not start")

    def cli(self, *args) -> str:
        r = subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True)
        return r.stdout.strip()

    def cpu(self) -> float:
        """CPU seconds the server has used so far (its INFO cpu)."""
        fields = dict(line.split(":", 1) for line in self.cli("INFO", "cpu").splitlines() if ":" in line)
        return float(fields["used_cpu_user"]) + float(fields["used_cpu_sys"])

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def expected(world: dict, owners: list[str]) -> int:
    o = world["owners"]
    return sum(o[n]["repos"] if o[n]["kind"] == "org" else o[n]["public"] for n in owners)


def config(path: Path, emu: Emulator, redis: Redis | None, tokens=TOKENS) -> Path:
    lines = ["providers:", "  github:", f'    base_url: "{emu.url}"', "    tokens:"]
    lines += [f'      - {{ label: {l}, token: "{t}", account: {a} }}' for l, t, a in tokens]
    lines += ["http: { max_connections: 64, per_token_concurrency: 8 }",
              "retry: { base_delay: 0.05, max_delay: 2, reset_margin: 0.25 }", "cache: { enabled: false }"]
    if redis:
        lines += ["shared:", f'  url: "redis://127.0.0.1:{redis.port}"', "  lease: 10"]
    path.write_text("\n".join(lines) + "\n")
    return path


def count_records(files: list[Path]) -> tuple[int, int]:
    seen, n, dup = set(), 0, 0
    for f in files:
        for line in f.read_text().splitlines():
            name = json.loads(line)["full_name"]
            n += 1
            dup += name in seen
            seen.add(name)
    return n, dup


def run_processes(cmds: list[list[str]], work: Path) -> tuple[float, list[str], float]:
    """Runs cmds at once: wall seconds, each one's stderr, and the CPU seconds
    (user + system) the processes used together."""
    errs = [work / f"err{i}" for i in range(len(cmds))]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=open(e, "w"), stdin=subprocess.DEVNULL)
             for c, e in zip(cmds, errs)]
    # A blocking wait returns the moment a process ends; wait(timeout) polls
    # every 50 ms, which would add up to 50 ms to every wall measured here.
    watchdog = threading.Timer(1800, lambda: [p.kill() for p in procs])
    watchdog.start()
    for p in procs:
        p.wait()
    wall = time.monotonic() - start
    watchdog.cancel()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, [e.read_text() for e in errs], cpu


def workers_run(gf: str, cfg: Path, emu: Emulator, redis: Redis, owners_file: Path, n: int, want: int,
                work: Path) -> dict:
    emu.control("/_emulator/reset", {})
    redis.cli("FLUSHALL")
    subprocess.run([gf, "--config", str(cfg), "queue", "push", "--queue", "bench", "--owners-file",
                    str(owners_file)], check=True, capture_output=True)
    out = Path(tempfile.mkdtemp(dir=work))  # kept until the bench ends: see the top
    redis_cpu = redis.cpu()
    wall, errs, cpu = run_processes([[gf, "--config", str(cfg), "worker", "--queue", "bench", "-d", str(out)]] * n,
                                    out)
    redis_cpu = redis.cpu() - redis_cpu
    stats = emu.control("/_emulator/stats")
    got, dup = count_records(sorted(out.glob("*/*.ndjson")))
    requests = trips = 0
    for e in errs:
        for line in e.splitlines():
            if "Redis round trips" in line:
                words = line.split()
                requests += int(words[2])
                trips += int(words[4])
    return {"wall": wall, "cpu": cpu, "redis_cpu": redis_cpu, "refused": stats["primary_limited"],
            "requests": stats["requests"], "trips_per_request": trips / requests if requests else None,
            "ok": got == want and dup == 0, "got": got, "dup": dup}


def fetch_run(gf: str, cfg: Path, emu: Emulator, parts: list[Path], want: int, work: Path) -> dict:
    emu.control("/_emulator/reset", {})
    out = Path(tempfile.mkdtemp(dir=work))  # kept until the bench ends: see the top
    cmds = [[gf, "--config", str(cfg), "fetch", "--no-progress", "--format", "ndjson", "--output",
             str(out / f"part{i}.ndjson"), "--owners-file", str(p)] for i, p in enumerate(parts)]
    wall, _, cpu = run_processes(cmds, out)
    stats = emu.control("/_emulator/stats")
    got, dup = count_records(sorted(out.glob("part*.ndjson")))
    return {"wall": wall, "cpu": cpu, "redis_cpu": None, "refused": stats["primary_limited"],
            "requests": stats["requests"], "trips_per_request": None, "ok": got == want and dup == 0, "got": got,
            "dup": dup}


def warm_per_token(gf: str, emu: Emulator, owners_file: Path, want: int, work: Path):
    """One fetch with each token alone, so the emulator has rendered every page
    for every account before anything is measured."""
    for i, tok in enumerate(TOKENS):
        fetch_run(gf, config(work / f"warm{i}.yaml", emu, None, [tok]), emu, [owners_file], want, work)


def create_cost(work: Path, n: int = 200) -> float:
    """Milliseconds to create n empty files in a new folder under work (kept)."""
    folder = Path(tempfile.mkdtemp(dir=work))
    start = time.perf_counter()
    for i in range(n):
        os.close(os.open(folder / f"f{i}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    return (time.perf_counter() - start) * 1000


def split_by_size(world: dict, owners: list[str], work: Path) -> list[Path]:
    """Two owners files of about equal repository counts, largest first to
    the lighter half: the split a queue would make if it knew the sizes."""
    halves: list[list[str]] = [[], []]
    load = [0, 0]
    for o in sorted(owners, key=lambda o: -expected(world, [o])):
        k = 0 if load[0] <= load[1] else 1
        halves[k].append(o)
        load[k] += expected(world, [o])
    files = []
    for k, half in enumerate(halves):
        f = work / f"half{k}.txt"
        f.write_text("\n".join(sorted(half)) + "\n")
        files.append(f)
    return files


def outcome(runs: list[dict]) -> str:
    return ("ok" if all(r["ok"] for r in runs) else "FAILED") if runs else "not run"


def speedup_table(job: str, keys: tuple, rows: dict, names: dict) -> list[str]:
    """Rows of wall time against the first key's (one `gitfleet fetch`)."""
    out = [f"| ({job}) | wall s | speed-up against 1 process | CPU s, gitfleet | CPU s, Redis | "
           "Redis round trips / request | output |",
           "|---|---|---|---|---|---|---|"]
    base = med(rows.get(keys[0], []), "wall")
    for key in keys:
        runs = rows.get(key, [])
        wall = med(runs, "wall")
        out.append(f"| {names[key]} | {fmt(wall)} | {fmt(base / wall if base and wall else None)}× | "
                   f"{fmt(med(runs, 'cpu'))} | {fmt(med(runs, 'redis_cpu'), '{:.3f}')} | "
                   f"{fmt(med(runs, 'trips_per_request'), '{:.3f}')} | {outcome(runs)} |")
    return out


def med(runs: list[dict], key: str):
    vals = [r[key] for r in runs if r["ok"] and r[key] is not None]
    return statistics.median(vals) if vals else None


def fmt(v, spec="{:.2f}"):
    return "—" if v is None else spec.format(v)


def main(gitfleet: str) -> int:
    rounds = max(1, int(os.environ.get("BENCH_ROUNDS", "3")))
    work = Path(tempfile.mkdtemp(prefix="gitfleet-scaleout-", dir=os.environ.get("BENCH_DIR") or None))
    gf = str(work / "gitfleet")
    shutil.copy2(gitfleet, gf)  # a rebuild during the bench cannot change what is measured
    src = Path(gitfleet).parent / "providers"
    shutil.copytree(src if src.is_dir() else ROOT / "providers", work / "providers")
    rows: dict[str, list[dict]] = {}
    jobs = set(os.environ.get("BENCH_SCALEOUT", "s1,s2,s3").split(","))
    started = time.time()
    creates = create_cost(work)
    log(f"creating 200 empty files in {work} took {creates:.1f} ms")
    if creates > 20:
        log("files are slow to create here (many were deleted here lately?): the workers' one file per owner will "
            "cost more than in a quiet folder; BENCH_DIR picks another")
    try:
        tokens = [{"token": t, "provider": "github", "account": a} for _, t, a in TOKENS]
        redis = Redis(work)
        requests_needed = 0
        want = want2 = want3 = 0
        if "s1" in jobs:
            # (s1) limited
            emu = Emulator(work, {"seed": 1, "owners": BIG, "generate": SMALL, "tokens": tokens,
                                  "limits": {"github": QUOTA}})
            world = emu.control("/_emulator/world")
            owners = [o["name"] for o in BIG] + sorted(n for n in world["owners"] if n.startswith("small-"))
            want = expected(world, owners)
            owners_file = work / "owners.txt"
            owners_file.write_text("\n".join(owners) + "\n")
            parts = []
            for k in range(4):
                p = work / f"quarter{k}.txt"
                p.write_text("\n".join(owners[k::4]) + "\n")
                parts.append(p)
            shared_cfg = config(work / "shared.yaml", emu, redis)
            plain_cfg = config(work / "plain.yaml", emu, None)
            for r in range(rounds):
                for n in (1, 2, 4):
                    log(f"(s1) round {r + 1}: {n} worker(s)")
                    rows.setdefault(f"s1-{n}", []).append(workers_run(gf, shared_cfg, emu, redis, owners_file, n, want,
                                                                      work))
                log(f"(s1) round {r + 1}: 4 independent processes")
                rows.setdefault("s1-indep", []).append(fetch_run(gf, plain_cfg, emu, parts, want, work))
            requests_needed = med(rows["s1-1"], "requests") or 0
            emu.stop()
        if "s2" in jobs:
            # (s2) no limits
            emu = Emulator(work, {"seed": 1, "generate": SMALL, "tokens": tokens, "limits": {"github": None}})
            world = emu.control("/_emulator/world")
            small = sorted(world["owners"])
            want2 = expected(world, small)
            small_file = work / "small.txt"
            small_file.write_text("\n".join(small) + "\n")
            shared_cfg = config(work / "shared2.yaml", emu, redis)
            plain_cfg = config(work / "plain2.yaml", emu, None)
            for r in range(rounds):
                log(f"(s2) round {r + 1}: 1 process")
                rows.setdefault("s2-fetch", []).append(fetch_run(gf, plain_cfg, emu, [small_file], want2, work))
                for n in (1, 2):
                    log(f"(s2) round {r + 1}: {n} worker(s)")
                    rows.setdefault(f"s2-{n}", []).append(workers_run(gf, shared_cfg, emu, redis, small_file, n, want2,
                                                                      work))
            emu.stop()
        if "s3" in jobs:
            # (s3) the 200-owner job of (a), no limits
            emu = Emulator(work, {"seed": 1, "generate": {"count": 200, "total_repos": 40000, "large": 6},
                                  "cache_mb": 4096, "tokens": tokens, "limits": {"github": None}})
            world = emu.control("/_emulator/world")
            every = sorted(world["owners"])
            want3 = expected(world, every)
            every_file = work / "every.txt"
            every_file.write_text("\n".join(every) + "\n")
            warm_per_token(gf, emu, every_file, want3, work)
            shared_cfg = config(work / "shared3.yaml", emu, redis)
            plain_cfg = config(work / "plain3.yaml", emu, None)
            halves = split_by_size(world, every, work)
            for r in range(rounds):
                log(f"(s3) round {r + 1}: 1 process")
                rows.setdefault("s3-fetch", []).append(fetch_run(gf, plain_cfg, emu, [every_file], want3, work))
                log(f"(s3) round {r + 1}: 2 workers")
                rows.setdefault("s3-2", []).append(workers_run(gf, shared_cfg, emu, redis, every_file, 2, want3, work))
                log(f"(s3) round {r + 1}: 2 processes, owners split in advance")
                rows.setdefault("s3-split", []).append(fetch_run(gf, plain_cfg, emu, halves, want3, work))
            emu.stop()
        redis.stop()
    finally:
        if os.environ.get("BENCH_KEEP"):
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    per_window = QUOTA["limit"] * len(TOKENS)
    windows = math.ceil(requests_needed / per_window) if requests_needed else None
    minimum = (windows - 1) * QUOTA["window"] if windows else None
    # The emulator's window opens at its first request and resets at the next
    # whole second after open + window: a window opened just after a reset
    # lasts window + 1 s, whatever the client does.
    emulator_floor = (windows - 1) * (QUOTA["window"] + 1) if windows else None
    names = {"s1-1": "1 worker", "s1-2": "2 workers", "s1-4": "4 workers",
             "s1-indep": "4 independent `fetch` processes, no shared:", "s2-fetch": "1 `gitfleet fetch` process",
             "s2-1": "1 worker", "s2-2": "2 workers", "s3-fetch": "1 `gitfleet fetch` process",
             "s3-2": "2 workers", "s3-split": "2 `fetch` processes, owners split in advance by size (reference)"}
    out = ["## Scale-out: workers sharing tokens and one queue through Redis", "",
           f"{time.strftime('%Y-%m-%d %H:%M %Z')}; medians of {rounds} rounds; `bench/scaleout.py` "
           f"(took {(time.time() - started) / 60:.1f} min); creating 200 empty files in the bench's folder took "
           f"{creates:.1f} ms before the first round.", "",
           f"(s1) 3 tokens of {QUOTA['limit']} requests per {QUOTA['window']} s; 4 organisations of 3,000 "
           f"repositories + 200 small owners ({want:,} repositories, {fmt(requests_needed, '{:.0f}')} requests "
           f"for one worker, {fmt(windows, '{:.0f}')} windows of {per_window}): the limits allow no less than "
           f"{fmt(minimum, '{:.0f}')} s; the emulator's windows, which reset at the next whole second after their "
           f"first request + {QUOTA['window']} s, allow no less than about {fmt(emulator_floor, '{:.0f}')} s.", "",
           "| (s1) | wall s | × minimum | × emulator floor | refused | Redis round trips / request | output |",
           "|---|---|---|---|---|---|---|"]
    for key in ("s1-1", "s1-2", "s1-4", "s1-indep"):
        runs = rows.get(key, [])
        wall = med(runs, "wall")
        out.append(f"| {names[key]} | {fmt(wall, '{:.1f}')} | {fmt(wall / minimum if wall and minimum else None)} | "
                   f"{fmt(wall / emulator_floor if wall and emulator_floor else None)} | "
                   f"{fmt(med(runs, 'refused'), '{:.0f}')} | {fmt(med(runs, 'trips_per_request'), '{:.3f}')} | "
                   f"{outcome(runs)} |")
    out += ["", f"(s2) no limits: the 200 small owners ({want2:,} repositories).", ""]
    out += speedup_table("s2", ("s2-fetch", "s2-1", "s2-2"), rows, names)
    out += ["", f"(s3) no limits: the 200-owner job of bench/run.py's (a) ({want3:,} repositories, six large "
            "organisations), the emulator warmed for every token; rounds alternate.", ""]
    out += speedup_table("s3", ("s3-fetch", "s3-2", "s3-split"), rows, names)
    for key, what in (("s3-2", "2 workers"), ("s3-split", "2 processes split in advance")):
        pairs = [f["wall"] / w["wall"] for f, w in zip(rows.get("s3-fetch", []), rows.get(key, []))
                 if f["ok"] and w["ok"]]
        if pairs:
            out += ["", f"Speed-up of each round (1 process ÷ {what}): " + ", ".join(f"{x:.2f}" for x in pairs) +
                    f"; median {statistics.median(pairs):.2f}×."]
    report = "\n".join(out) + "\n"
    print(report)
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / "scaleout.md").write_text(report)
    (results / "scaleout.json").write_text(json.dumps(rows, indent=1))
    return 0 if all(r["ok"] for runs in rows.values() for r in runs) else 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: bench/scaleout.py PATH/TO/gitfleet", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(os.path.abspath(sys.argv[1])))
