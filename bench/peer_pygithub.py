"""Peer for bench/run.py: list every repository of the given owners with
PyGithub 1.55 (Debian's python3-github), and write one JSON line per
repository with the fields gitfleet writes.

    BENCH_TOKENS=tok1,tok2,... python3 bench/peer_pygithub.py BASE_URL OWNERS_FILE OUTPUT

PyGithub 1.55 has no rate-limit handling and no retries of its own (its
GithubRetry came in 2.0), so this does what a user of 1.55 must write by hand:

- rate limits: catch RateLimitExceededException and sleep until the reset
  the exception's headers carry (GET /rate_limit when they are missing),
  plus a small margin;
- faults (5xx, dropped connections, truncated bodies): retry the page fetch
  with exponential backoff and full jitter, a bounded number of times.

A PaginatedList follows the Link header and keeps the pages it has fetched,
so after a failure iterating it again resumes at the page that failed.

Owners go to a thread pool (BENCH_OWNERS_IN_FLIGHT, default 8); owner i uses
token i % len(tokens). PyGithub 1.55's Requester keeps one connection object
whose request()/getresponse() pair stores the request on the object, so one
Github instance must not be shared by threads: each thread has its own client
per token. Exit status 0 when every owner was listed, 1 otherwise.
"""

import concurrent.futures
import json
import os
import random
import sys
import threading
import time

import requests
from github import Github, GithubException, RateLimitExceededException, UnknownObjectException

MAX_ATTEMPTS = 6          # tries per page, the first included (gitfleet's retry.max_attempts)
BASE_DELAY = 0.05         # seconds; doubles per retry, full jitter (the bench's gitfleet config)
MAX_DELAY = 2.0
RESET_MARGIN = 0.25       # seconds added to a rate-limit reset (the bench's gitfleet config)
MAX_RATE_WAITS = 20       # rate-limit waits per owner before giving up

BASE_URL, OWNERS_FILE, OUTPUT = sys.argv[1:4]
TOKENS = [t for t in os.environ.get("BENCH_TOKENS", "").split(",") if t]
IN_FLIGHT = int(os.environ.get("BENCH_OWNERS_IN_FLIGHT", "8"))

local = threading.local()
out_lock = threading.Lock()
stats = {"repositories": 0, "retries": 0, "rate_limit_waits": 0, "failed_owners": 0}


def client(token):
    clients = getattr(local, "clients", None)
    if clients is None:
        clients = local.clients = {}
    if token not in clients:
        clients[token] = Github(base_url=BASE_URL, login_or_token=token, per_page=100)
    return clients[token]


def iso(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ") if dt is not None else None


def record(r):
    raw = r._rawData  # 1.55 models neither visibility nor topics; raw_data would refetch each repository
    return {
        "provider": "github", "id": r.id, "name": r.name, "full_name": r.full_name,
        "owner": r.owner.login if r.owner else None, "description": r.description,
        "html_url": r.html_url, "clone_url": r.clone_url, "ssh_url": r.ssh_url,
        "default_branch": r.default_branch, "language": r.language, "private": r.private,
        "visibility": raw.get("visibility"), "fork": r.fork, "archived": r.archived,
        "stargazers_count": r.stargazers_count, "forks_count": r.forks_count,
        "watchers_count": r.watchers_count, "open_issues_count": r.open_issues_count,
        "topics": raw.get("topics"), "created_at": iso(r.created_at), "updated_at": iso(r.updated_at),
        "pushed_at": iso(r.pushed_at),
    }


def wait_for_reset(g, exc):
    reset = (exc.headers or {}).get("x-ratelimit-reset")
    if reset is not None:
        reset = int(reset)
    else:
        reset = g.get_rate_limit().core.reset.timestamp()
    with out_lock:
        stats["rate_limit_waits"] += 1
    time.sleep(max(0.0, reset - time.time()) + RESET_MARGIN)


def retryable(exc):
    if isinstance(exc, RateLimitExceededException):
        return False
    if isinstance(exc, GithubException):
        return exc.status >= 500
    # A dropped connection is a RequestException. A truncated body is not
    # always one: urllib3 1.26 does not enforce Content-Length, so PyGithub
    # gets the first part of the page and its json.loads fails (ValueError).
    return isinstance(exc, (requests.exceptions.RequestException, ValueError))


def with_retries(g, fn, progress=lambda: 0):
    """fn() with the rate-limit wait and the fault retry loop around it.

    The attempt count starts again whenever progress() grew, i.e. it bounds
    the tries of one page, not of a whole listing.
    """
    attempt, waits, seen = 0, 0, progress()
    for _ in range(100_000):  # bound: far more pages than any owner here has
        try:
            return fn()
        except RateLimitExceededException as exc:
            waits += 1
            if waits > MAX_RATE_WAITS:
                raise
            wait_for_reset(g, exc)
        except Exception as exc:  # noqa: BLE001 - sorted by retryable()
            if progress() > seen:
                attempt, seen = 0, progress()
            attempt += 1
            if not retryable(exc) or attempt >= MAX_ATTEMPTS:
                raise
            with out_lock:
                stats["retries"] += 1
            time.sleep(random.uniform(0, min(MAX_DELAY, BASE_DELAY * 2 ** (attempt - 1))))
    raise RuntimeError("retry loop bound reached")


def fetch_owner(index, name, out):
    g = client(TOKENS[index % len(TOKENS)])
    # An organisation lists its private repositories to members; a user's
    # list is the public one. GET /orgs/NAME answers 404 for a user.
    try:
        owner = with_retries(g, lambda: g.get_organization(name))
    except UnknownObjectException:
        owner = with_retries(g, lambda: g.get_user(name))
    repos = owner.get_repos()
    done = [0]

    def drain():
        lines = []
        try:
            for k, repo in enumerate(repos):
                if k < done[0]:
                    continue  # written before the page that failed
                lines.append(json.dumps(record(repo), ensure_ascii=False, separators=(",", ":")))
                done[0] += 1
                if len(lines) == 100:
                    flush(lines, out)
        finally:
            flush(lines, out)  # what was read before a failure, too

    with_retries(g, drain, progress=lambda: done[0])


def flush(lines, out):
    if not lines:
        return
    text = "\n".join(lines) + "\n"
    with out_lock:
        out.write(text)
        stats["repositories"] += len(lines)
    lines.clear()


def main():
    with open(OWNERS_FILE, encoding="utf-8") as f:
        owners = [line.strip() for line in f if line.strip()]
    failed = 0
    with open(OUTPUT, "w", encoding="utf-8") as out, \
            concurrent.futures.ThreadPoolExecutor(max_workers=IN_FLIGHT) as pool:
        futures = {pool.submit(fetch_owner, i, name, out): name for i, name in enumerate(owners)}
        for fut in concurrent.futures.as_completed(futures):
            exc = fut.exception()
            if exc is not None:
                failed += 1
                print(f"pygithub: {futures[fut]}: {type(exc).__name__}: {exc}", file=sys.stderr)
    stats["failed_owners"] = failed
    print(json.dumps(dict(peer="pygithub", **stats)), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
