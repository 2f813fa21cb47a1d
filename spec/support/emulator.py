#!/usr/bin/env python3
"""Provider emulator for gitfleet's specs and benchmarks.

One process serves GitHub (at / and /api/v3), GitLab (/api/v4), Bitbucket
Cloud (/2.0) and Gitea/Forgejo (/api/v1) over a deterministic world of owners
and repositories, with each provider's pagination, status codes, error bodies,
rate-limit headers and budgets, secondary limits, ETag/304, and injected
faults.  Control endpoints under /_emulator/ let a spec read counters, reset
them and change faults or limits at run time.  See spec/support/README.md.

Python 3.11 standard library only.  Usage:

    python3 spec/support/emulator.py [--host 127.0.0.1] [--port 0]
        [--scenario FILE.json] [--scenario-json TEXT] [--port-file FILE]
        [--pid-file FILE] [--parent-pid PID] [--quiet]
"""

from __future__ import annotations

import argparse
import base64
import bisect
import collections
import email.utils
import functools
import gzip
import hashlib
import http
import http.server
import itertools
import json
import math
import os
import random
import select
import signal
import ssl
import socket
import sys
import threading
import time
import traceback
import uuid
from urllib.parse import parse_qsl, unquote

import emulator_apps  # GitHub Apps: JWT verification, installations, expiring tokens

# ---------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------

PROVIDERS = ("github", "gitlab", "bitbucket", "gitea")
FAULT_KINDS = ("5xx", "drop", "truncate", "slow")

# Owners with pathological responses, served on the GitHub repo-list routes.
SPECIAL_OWNERS = ("x-oversize", "x-badutf8", "x-nested", "x-hugeheader", "x-hang", "x-slowbody", "x-lyinglast",
                  "x-nextloop")
# Owner of the synthetic upstream repositories that forks point to.  It is not
# listed in the world and cannot be used as a scenario owner name.
UPSTREAM_OWNER = "upstream-origin"

GITHUB_RATE_DOC = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"
GITHUB_PRIMARY_MESSAGE = (
    "API rate limit exceeded for user ID 1. If you reach out to GitHub Support for help, "
    "please include the request ID and timestamp."
)
GITHUB_ANON_PRIMARY_MESSAGE = (
    "API rate limit exceeded for 127.0.0.1. (But here's the good news: Authenticated requests "
    "get a higher rate limit. Check out the documentation for more details.)"
)
GITHUB_SECONDARY_MESSAGE = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
)
BITBUCKET_LIMIT_BODY = b"Rate limit for this resource has been exceeded"
GITLAB_LIMIT_BODY = b"Retry later\n"

DEFAULT_LIMITS = {
    "github": {"limit": 5000, "window": 3600, "status": 403},
    "gitlab": {"limit": 2000, "window": 60},
    "bitbucket": {"limit": 1000, "window": 3600},
    "gitea": None,
    "anonymous": {"limit": 60, "window": 3600},
}
DEFAULT_SECONDARY = {"max_concurrency": 100, "retry_after": 60, "status": 403}
DEFAULT_FAULTS = {"rate": 0.0, "kinds": list(FAULT_KINDS), "slow_seconds": 0.5, "retry_after": None, "seed": 7}
DEFAULT_GENERATE = {"count": 200, "total_repos": 40000, "prefix": "owner", "large": 6}
# Used when a scenario names neither "owners" nor "generate".
DEFAULT_OWNERS = [
    {"name": "acme", "kind": "org", "repos": 45,
     "subgroups": [{"name": "tools", "repos": 12, "subgroups": [{"name": "cli", "repos": 3}]}]},
    {"name": "alice", "kind": "user", "repos": 7},
    {"name": "bob", "kind": "user", "repos": 0},
    {"name": "globex", "kind": "org", "repos": 230},
    {"name": "umbrella", "kind": "org", "repos": 3},
]
SCENARIO_KEYS = {"seed", "owners", "generate", "tokens", "limits", "secondary", "faults", "redirects",
                 "gzip", "oversize_bytes", "slowbody_bytes", "cache_mb", "clock_offset", "topics_per_repo",
                 "latency", "apps"}
LIVE_KEYS = {"faults", "secondary", "limits", "redirects", "gzip", "oversize_bytes", "slowbody_bytes", "latency"}
MAX_LATENCY = 60  # seconds: more is a mistake, not a network

# The world's clock: every generated date lies before this instant, so the
# world is the same whenever it is built.
WORLD_START = 1262304000  # 2010-01-01T00:00:00Z
WORLD_END = 1719792000    # 2024-07-01T00:00:00Z

MAX_REQUEST_BODY = 1 << 20
JSON_TYPE = "application/json; charset=utf-8"
TEXT_TYPE = "text/plain; charset=utf-8"
HTML_TYPE = "text/html; charset=utf-8"

# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------


# "https" when the server speaks TLS (--tls-cert): links it builds use it.
SCHEME = "http"


def dumps(obj) -> bytes:
    """Compact UTF-8 JSON (raw UTF-8, not \\u escapes, as the real APIs send)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def http_date(ts: float) -> str:
    return email.utils.formatdate(ts, usegmt=True)


_date_line = (0, "")


def date_line(now: float) -> str:
    """The Date header line, formatted once per second (the tuple swap is atomic)."""
    global _date_line
    sec = int(now)
    cached = _date_line
    if cached[0] != sec:
        cached = (sec, "Date: " + http_date(sec) + "\r\n")
        _date_line = cached
    return cached[1]


def iso_z(ts: int) -> str:  # GitHub: 2011-01-26T19:01:12Z
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def iso_ms(ts: int, frac: int) -> str:  # GitLab: 2019-06-12T13:02:52.482Z
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + ".%03dZ" % (frac // 1000)


def iso_us(ts: int, frac: int) -> str:  # Bitbucket: 2018-03-07T13:47:52.402356+00:00
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + ".%06d+00:00" % frac


def iso_offset(ts: int) -> str:
    """Gitea (Go RFC 3339 in the server's zone); Codeberg's zone is +01:00."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts + 3600)) + "+01:00"


def int_param(value, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def stable_hex(*parts) -> str:
    return hashlib.sha1("|".join(str(p) for p in parts).encode()).hexdigest()


def stable_uuid(*parts) -> str:
    return "{%s}" % uuid.UUID(bytes=hashlib.md5("|".join(map(str, parts)).encode()).digest(), version=4)


def node_id(kind: str, ident: int) -> str:
    """GitHub's legacy global node id: base64("0<len(Type)>:<Type><id>"), e.g. MDQ6VXNlcjE= for user 1."""
    return base64.b64encode(f"0{len(kind)}:{kind}{ident}".encode()).decode()


def replace_query_param(query: str, values: dict) -> str:
    """Return `query` with the given parameters set, keeping the rest as sent.

    Works on the raw string so that the client's own encoding and parameter
    order survive into Link/next URLs, which clients must follow verbatim.
    """
    parts = [p for p in query.split("&") if p] if query else []
    todo = dict(values)
    out = []
    for part in parts:
        name = unquote(part.partition("=")[0])
        if name in todo:
            if todo[name] is not None:
                out.append(f"{name}={todo[name]}")
            todo[name] = None
        elif name not in values:
            out.append(part)
    out.extend(f"{k}={v}" for k, v in todo.items() if v is not None)
    return "&".join(out)


def _is_true(value) -> bool:
    return str(value).lower() in ("1", "true", "yes")


# ---------------------------------------------------------------------------
# Scenario: validation, defaults and live merges
# ---------------------------------------------------------------------------


class ScenarioError(ValueError):
    pass


def _require(cond, msg):
    if not cond:
        raise ScenarioError(msg)


def _as_list(value, what):
    # lua-cjson encodes an empty Lua table as {}: accept it as an empty array.
    if value is None or (isinstance(value, dict) and not value):
        return []
    _require(isinstance(value, list), f"{what} must be an array")
    return value


def _number(value, what, minimum=None, maximum=None, integer=False):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if integer:
        ok = ok and float(value).is_integer()
    _require(ok, f"{what} must be a{'n integer' if integer else ' number'}")
    _require(minimum is None or value >= minimum, f"{what} must be >= {minimum}")
    _require(maximum is None or value <= maximum, f"{what} must be <= {maximum}")
    return int(value) if integer else value


def _known_keys(obj, allowed, what):
    _require(isinstance(obj, dict), f"{what} must be an object")
    unknown = sorted(set(obj) - set(allowed))
    _require(not unknown, f"{what}: unknown key(s) {', '.join(unknown)}")


def _valid_name(name, what):
    _require(isinstance(name, str) and name and len(name) <= 100, f"{what} must be a non-empty string")
    _require(all(c.isascii() and (c.isalnum() or c in "-_.") for c in name) and name[0].isalnum(),
             f"{what} {name!r}: use letters, digits, '-', '_' and '.' only")
    return name


def normalize_limit(name, value, current):
    if value is None:
        return None
    _known_keys(value, ("limit", "window", "status"), f"limits.{name}")
    base = dict(current or DEFAULT_LIMITS.get(name) or {"limit": 1000, "window": 3600})
    base.update(value)
    base["limit"] = _number(base.get("limit"), f"limits.{name}.limit", 0, integer=True)
    base["window"] = _number(base.get("window", 3600), f"limits.{name}.window", 0.001)
    if name == "github":
        base["status"] = _number(base.get("status", 403), "limits.github.status", integer=True)
        _require(base["status"] in (403, 429), "limits.github.status must be 403 or 429")
    return base


def normalize_secondary(value, current):
    if value is None:
        return None
    _known_keys(value, ("max_concurrency", "retry_after", "status"), "secondary")
    out = dict(current or DEFAULT_SECONDARY)
    out.update(value)
    out["max_concurrency"] = _number(out["max_concurrency"], "secondary.max_concurrency", 1, integer=True)
    if out["retry_after"] is not None:
        out["retry_after"] = _number(out["retry_after"], "secondary.retry_after", 0, integer=True)
    out["status"] = _number(out["status"], "secondary.status", integer=True)
    _require(out["status"] in (403, 429), "secondary.status must be 403 or 429")
    return out


def normalize_faults(value, current):
    if value is None:
        return None
    _known_keys(value, ("rate", "kinds", "slow_seconds", "retry_after", "seed"), "faults")
    out = dict(current or DEFAULT_FAULTS)
    out.update(value)
    out["rate"] = _number(out["rate"], "faults.rate", 0, 1)
    kinds = _as_list(out["kinds"], "faults.kinds")
    _require(kinds, "faults.kinds must not be empty")
    for kind in kinds:
        _require(kind in FAULT_KINDS, f"faults.kinds: unknown kind {kind!r} (use {', '.join(FAULT_KINDS)})")
    out["kinds"] = list(kinds)
    out["slow_seconds"] = _number(out["slow_seconds"], "faults.slow_seconds", 0)
    if out["retry_after"] is not None:
        out["retry_after"] = _number(out["retry_after"], "faults.retry_after", 0, integer=True)
    out["seed"] = _number(out["seed"], "faults.seed", integer=True)
    return out


def normalize_redirects(value, current):
    out = dict(current or {})
    if value is None:
        return {}
    _require(isinstance(value, dict), "redirects must be an object")
    for owner, base in value.items():
        if base is None:
            out.pop(owner.lower(), None)
        else:
            _require(isinstance(base, str) and base.startswith(("http://", "https://")),
                     f"redirects.{owner} must be an http(s) base URL")
            out[owner.lower()] = base.rstrip("/")
    return out


def merge_live(live: dict, patch: dict) -> dict:
    """Return a new live configuration: `live` with `patch` merged into it."""
    _known_keys(patch, LIVE_KEYS, "config")
    out = dict(live)
    if "faults" in patch:
        out["faults"] = normalize_faults(patch["faults"], live["faults"])
    if "secondary" in patch:
        out["secondary"] = normalize_secondary(patch["secondary"], live["secondary"])
    if "limits" in patch:
        limits = patch["limits"]
        _known_keys(limits, PROVIDERS + ("anonymous",), "limits")
        out["limits"] = dict(live["limits"])
        for name, value in limits.items():
            out["limits"][name] = normalize_limit(name, value, live["limits"].get(name))
    if "redirects" in patch:
        out["redirects"] = normalize_redirects(patch["redirects"], live["redirects"])
    if "gzip" in patch:
        _require(isinstance(patch["gzip"], bool), "gzip must be a boolean")
        out["gzip"] = patch["gzip"]
    for key in ("oversize_bytes", "slowbody_bytes"):
        if key in patch:
            out[key] = _number(patch[key], key, 4, integer=True)
    if "latency" in patch:
        out["latency"] = normalize_latency(patch["latency"])
    return out


def normalize_latency(value):
    """Seconds added to every API response; null or 0 turns it off."""
    if value is None:
        return 0
    value = _number(value, "latency", 0, MAX_LATENCY)
    return value


def normalize_owner(spec, what, top=True):
    allowed = ("name", "kind", "repos", "subgroups") if top else ("name", "repos", "subgroups")
    _known_keys(spec, allowed, what)
    name = _valid_name(spec.get("name"), f"{what}.name")
    out = {"name": name, "repos": _number(spec.get("repos", 0), f"{what}.repos", 0, 1_000_000, integer=True)}
    if top:
        out["kind"] = spec.get("kind", "org")
        _require(out["kind"] in ("org", "user"), f"{what}.kind must be 'org' or 'user'")
    subs = _as_list(spec.get("subgroups"), f"{what}.subgroups")
    _require(not subs or not top or out["kind"] == "org", f"{what}: only an org can have subgroups")
    out["subgroups"] = [normalize_owner(s, f"{what}.subgroups[{i}]", top=False) for i, s in enumerate(subs)]
    return out


def normalize_scenario(raw) -> dict:
    raw = {} if raw is None else raw
    _known_keys(raw, SCENARIO_KEYS, "scenario")
    sc = {"seed": _number(raw.get("seed", 1), "seed", integer=True)}

    owners = raw.get("owners")
    generate = raw.get("generate")
    if owners is None and generate is None:
        owners = DEFAULT_OWNERS
    sc["owners"] = [normalize_owner(o, f"owners[{i}]") for i, o in enumerate(_as_list(owners, "owners"))]
    if generate is not None:
        _known_keys(generate, DEFAULT_GENERATE, "generate")
        g = dict(DEFAULT_GENERATE, **generate)
        g["count"] = _number(g["count"], "generate.count", 0, 100_000, integer=True)
        g["total_repos"] = _number(g["total_repos"], "generate.total_repos", 0, 2_000_000, integer=True)
        g["large"] = _number(g["large"], "generate.large", 0, g["count"], integer=True)
        g["prefix"] = _valid_name(g["prefix"], "generate.prefix")
        _require(g["count"] > 0 or g["total_repos"] == 0, "generate.total_repos needs generate.count > 0")
        sc["generate"] = g
    else:
        sc["generate"] = None

    tokens = []
    seen = set()
    for i, t in enumerate(_as_list(raw.get("tokens"), "tokens")):
        what = f"tokens[{i}]"
        _known_keys(t, ("token", "username", "password", "provider", "account"), what)
        _require(t.get("provider") in PROVIDERS, f"{what}.provider must be one of {', '.join(PROVIDERS)}")
        has_token = "token" in t
        _require(has_token != ("username" in t), f"{what}: give either token or username+password")
        if has_token:
            _require(isinstance(t["token"], str) and t["token"], f"{what}.token must be a non-empty string")
            key = (t["provider"], "token", t["token"])
        else:
            _require(isinstance(t["username"], str) and isinstance(t.get("password"), str),
                     f"{what}: username and password must be strings")
            key = (t["provider"], "basic", t["username"].lower())
        _require(key not in seen, f"{what}: duplicate credential for {t['provider']}")
        seen.add(key)
        account = t.get("account", t.get("username", f"token-{i}"))
        _require(isinstance(account, str) and account, f"{what}.account must be a non-empty string")
        _require(account.lower() != "anonymous", f"{what}.account: 'anonymous' is reserved")
        tokens.append(dict(t, account=account, index=i))
    sc["tokens"] = tokens

    live = {
        "limits": {name: (dict(v) if v else None) for name, v in DEFAULT_LIMITS.items()},
        "secondary": dict(DEFAULT_SECONDARY),
        "faults": None,
        "redirects": {},
        "gzip": True,
        "oversize_bytes": 64 << 20,
        "slowbody_bytes": 10 << 20,
        "latency": 0,
    }
    patch = {k: raw[k] for k in LIVE_KEYS if k in raw}
    sc["live"] = merge_live(live, patch)
    sc["cache_mb"] = _number(raw.get("cache_mb", 256), "cache_mb", 1, integer=True)
    # Seconds the emulator's clock runs ahead of (negative: behind) this
    # machine's: its Date headers and rate-limit resets are on that clock.
    sc["clock_offset"] = _number(raw.get("clock_offset", 0), "clock_offset", -86400, 86400)
    # Every repository gets this many topics (a page far larger than usual).
    sc["topics_per_repo"] = _number(raw.get("topics_per_repo", 0), "topics_per_repo", 0, 100_000, integer=True)
    sc["apps"] = _as_list(raw.get("apps"), "apps")
    return sc


def apply_clock_offset(seconds: float):
    """Moves the emulator's whole clock: every time.time() it reads (Dates,
    rate-limit windows and resets) is the machine's plus `seconds`."""
    if seconds:
        machine_time = time.time
        time.time = lambda: machine_time() + seconds


def apply_topics_per_repo(world, count: int):
    """Gives every repository the same `count` generated topics (one list)."""
    if count:
        topics = [f"topic-{i:05d}" for i in range(count)]
        for ns in world.all_namespaces():
            for repo in ns.repos:
                repo.topics = topics


# ---------------------------------------------------------------------------
# The world: owners, (GitLab) subgroups and repositories
# ---------------------------------------------------------------------------

ADJECTIVES = ("swift tiny bright silent rapid lazy brave calm clever eager fancy gentle happy jolly kind "
              "lively mighty noble proud quick shiny sturdy wise zesty amber cosmic crimson golden hidden "
              "iron lunar misty nimble polar rusty solar stellar urban vivid wild").split()
NOUNS = ("parser cache router engine widget crawler indexer bridge beacon compass ledger lens loom mapper "
         "matrix nexus orbit pilot prism quartz relay rocket sentinel shard signal spark sprout tensor "
         "thread tide toolkit tracker vault vector wave forge harbor garden atlas").split()
PURPOSES = ("log files", "HTTP APIs", "the command line", "Kubernetes clusters", "small teams",
            "embedded devices", "research data", "static sites", "Git repositories", "CI pipelines",
            "time series", "config files", "game servers", "home automation")
LANGUAGES = (("Python", 14), ("JavaScript", 12), ("TypeScript", 10), ("Go", 8), ("Rust", 6), ("C", 5),
             ("C++", 5), ("Java", 7), ("Ruby", 4), ("Lua", 3), ("Shell", 5), ("Kotlin", 2), ("Swift", 2),
             ("PHP", 3), ("C#", 3), ("Jupyter Notebook", 3), ("HTML", 3), ("Emacs Lisp", 1), ("Vim Script", 1))
LANGUAGE_NAMES = [name for name, weight in LANGUAGES]
LANGUAGE_CUMULATIVE = list(itertools.accumulate(weight for name, weight in LANGUAGES))
TOPICS = ("cli", "api", "devops", "machine-learning", "kubernetes", "docker", "database", "security",
          "testing", "web", "hacktoberfest", "json", "parser", "automation", "github-actions", "lua",
          "embedded", "data-science", "rust-lang", "python3", "terminal", "self-hosted", "monitoring")
LICENSES = {
    "mit": ("MIT License", "MIT", 13), "apache-2.0": ("Apache License 2.0", "Apache-2.0", 2),
    "gpl-3.0": ("GNU General Public License v3.0", "GPL-3.0", 9),
    "bsd-3-clause": ("BSD 3-Clause \"New\" or \"Revised\" License", "BSD-3-Clause", 5),
    "mpl-2.0": ("Mozilla Public License 2.0", "MPL-2.0", 14),
    "lgpl-2.1": ("GNU Lesser General Public License v2.1", "LGPL-2.1", 11),
    "unlicense": ("The Unlicense", "Unlicense", 15), "other": ("Other", "NOASSERTION", 0),
}
LICENSE_KEYS = list(LICENSES)
# Descriptions that exercise JSON and CSV writers: accents, CJK, emoji,
# right-to-left text, newlines, quotes, commas, formula-looking text.
TRICKY_DESCRIPTIONS = (
    "Café crème: outil de synthèse pour les données météo — version française",
    "Überprüfung der Straßennamen, mit Äpfeln und Öl",
    "高速なJSONパーサーとシリアライザ",
    "一个简单的命令行工具，用于管理仓库",
    "한국어 형태소 분석기",
    "🚀 Blazing fast 🔥 build cache with ✨ sparkles 👩‍💻",
    "مكتبة صغيرة لتحليل البيانات",
    "ספרייה קטנה לעיבוד טקסט",
    "Mixed direction: version 2 من المكتبة (beta)",
    "First line\nSecond line after a newline",
    "Windows line\r\nendings too",
    'Says "hello", then, a comma; and a \'single\' quote',
    "Tabs\tand backslashes \\ in C:\\tools\\bin",
    "Zero\u200bwidth space and a combining e\u0301 accent",
    "Ελληνικά και Русский текст",
    "=SUM(A1:A2) looks like a spreadsheet formula",
    "null",
    "A long description. " * 20,
)
FIRST_NAMES = ("Ada", "José", "Zoë", "Søren", "Ngozi", "Mei", "Ivan", "Aisha", "Lars", "Priya", "Chloé",
               "Kenji", "Olga", "Mateus", "Fatima", "Noah", "Yara", "Emil", "Hana", "Omar")
LAST_NAMES = ("Lovelace", "Martínez", "Ångström", "Okafor", "Chen", "Petrov", "Khan", "Nielsen",
              "Iyer", "Dubois", "Tanaka", "Kowalska", "Silva", "Haddad", "Smith", "Björk", "李", "Novák")


class Namespace:
    """An owner (org or user) or, on GitLab only, a subgroup of an org."""

    __slots__ = ("name", "lname", "kind", "top", "parent", "children", "repos", "full_path", "display",
                 "seq", "created", "updated", "gh_id", "gl_id", "gl_ns_id", "gitea_id", "bb_uuid",
                 "description", "location")

    def __init__(self, name, kind, parent, seq, rng):
        self.name = name
        self.lname = name.lower()
        self.kind = kind                      # "org", "user" or "subgroup"
        self.parent = parent
        self.top = parent.top if parent else self
        self.full_path = f"{parent.full_path}/{name}" if parent else name
        self.children = []
        self.repos = []
        self.seq = seq
        self.created = rng.randint(WORLD_START, WORLD_START + (WORLD_END - WORLD_START) // 2)
        self.updated = rng.randint(self.created, WORLD_END)
        if kind == "user":
            self.display = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
        else:
            self.display = name.replace("-", " ").title() if kind == "org" else name
        self.description = rng.choice((None, "", f"The {self.display} team", "Open source at heart ❤️"))
        self.location = rng.choice((None, "Berlin", "São Paulo", "東京", "Lagos", "Montréal"))
        self.gh_id = (9_000_000 + seq * 17) if kind == "org" else (1_000_000 + seq * 13)
        self.gl_id = (200_000 + seq) if kind != "user" else (100_000 + seq)
        self.gl_ns_id = 300_000 + seq if kind == "user" else self.gl_id
        self.gitea_id = 10 + seq
        self.bb_uuid = stable_uuid("ws", name)

    def descendants(self):
        for child in self.children:
            yield child
            yield from child.descendants()


class Repo:
    """A provider-independent repository; renderers turn it into each API's shape."""

    __slots__ = ("seq", "ns", "owner", "name", "lname", "description", "language", "stars", "forks",
                 "subscribers", "open_issues", "topics", "created", "updated", "pushed", "frac", "private",
                 "fork", "archived", "template", "size", "default_branch", "license", "homepage",
                 "has_issues", "has_projects", "has_wiki", "has_pages", "has_discussions", "n_branches",
                 "n_contributors", "parent", "gh_id", "gl_id", "gitea_id", "full_path", "seed")

    @property
    def empty(self):
        return self.size == 0

    @property
    def bb_uuid(self):  # computed on demand: only Bitbucket bodies need it
        return stable_uuid("repo", self.seed, self.full_path)


class World:
    def __init__(self, sc: dict):
        self.seed = sc["seed"]
        self.owners: list[Namespace] = []
        self.by_name: dict[str, Namespace] = {}
        self.gl_groups: dict = {}          # id and lower-case full path -> org or subgroup
        self.gl_users: dict = {}           # id and lower-case username -> user
        self.gl_projects: dict = {}        # id and lower-case full path -> repo
        self.repo_count = 0
        self._ns_seq = 0
        self.people = self._make_people()
        self.upstream = Namespace(UPSTREAM_OWNER, "org", None, 0, random.Random(f"{self.seed}|upstream"))
        specs = list(sc["owners"])
        if sc["generate"]:
            specs += self._generated_specs(sc["generate"])
        reserved = set(SPECIAL_OWNERS) | {UPSTREAM_OWNER}
        for spec in specs:
            lname = spec["name"].lower()
            if lname in self.by_name or lname in reserved:
                raise ScenarioError(f"owner name {spec['name']!r} is duplicated or reserved")
            self._add_namespace(spec, spec["kind"], None)
        # Forks point at synthetic upstream repositories, numbered after the world.
        self._upstream_seq = self.repo_count
        for ns in self.all_namespaces():
            for repo in ns.repos:
                if repo.fork:
                    repo.parent = self._make_upstream(repo)
        # The repository the special owners' bodies are made of.
        self.sample = self._make_upstream(
            self._make_repo(self.upstream, random.Random(f"{self.seed}|sample"), {}))
        self.sample.description = "A sample repository repeated to make a large body"

    # -- construction ------------------------------------------------------

    def _make_people(self):
        rng = random.Random(f"{self.seed}|people")
        people = []
        for i in range(600):
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            login = f"{rng.choice(ADJECTIVES)}-{rng.choice(NOUNS)}{i}"
            people.append((login, f"{first} {last}", f"{login}@users.example.org", 2_000_000 + i * 7))
        people[0] = ("dependabot[bot]", "dependabot[bot]", "49699333+dependabot[bot]@users.noreply.github.com",
                     49699333)
        return people

    def _generated_specs(self, g):
        """Owners prefix-0001…: most small (0–60 repos), `large` of them with the bulk."""
        rng = random.Random(f"{self.seed}|generate")
        count, total, large = g["count"], g["total_repos"], g["large"]
        large_idx = set(rng.sample(range(count), large)) if count else set()
        small_idx = [i for i in range(count) if i not in large_idx]
        counts = [0] * count
        for i in small_idx:
            counts[i] = int(61 * rng.random() ** 2)
        small_total = sum(counts)
        # Leave the large owners thousands each when the total allows it.
        cap = total - 1000 * large if large else total
        cap = max(0, min(cap, total))
        if small_total > cap and small_total:
            scale = cap / small_total
            for i in small_idx:
                counts[i] = int(counts[i] * scale)
        rest = total - sum(counts)
        targets = sorted(large_idx) if large_idx else small_idx
        if targets and rest:
            weights = [0.5 + rng.random() for _ in targets]
            wsum = sum(weights)
            shares = [int(rest * w / wsum) for w in weights]
            for k in range(rest - sum(shares)):   # hand out the rounding remainder
                shares[k % len(shares)] += 1
            for i, share in zip(targets, shares):
                counts[i] += share
        return [{"name": f"{g['prefix']}-{i + 1:04d}", "kind": "org" if rng.random() < 0.5 else "user",
                 "repos": counts[i], "subgroups": []} for i in range(count)]

    def _add_namespace(self, spec, kind, parent):
        self._ns_seq += 1
        rng = random.Random(f"{self.seed}|{(parent.full_path + '/') if parent else ''}{spec['name']}")
        ns = Namespace(spec["name"], kind, parent, self._ns_seq, rng)
        if parent is None:
            self.owners.append(ns)
            self.by_name[ns.lname] = ns
        else:
            parent.children.append(ns)
        if ns.kind == "user":
            self.gl_users[ns.gl_id] = self.gl_users[ns.lname] = ns
        else:
            if ns.full_path.lower() in self.gl_groups:
                raise ScenarioError(f"subgroup {ns.full_path!r} is defined twice")
            self.gl_groups[ns.gl_id] = self.gl_groups[ns.full_path.lower()] = ns
        used = {}
        for _ in range(spec["repos"]):
            repo = self._make_repo(ns, rng, used)
            ns.repos.append(repo)
            self.gl_projects[repo.gl_id] = self.gl_projects[repo.full_path.lower()] = repo
        for sub in spec.get("subgroups", ()):
            self._add_namespace(sub, "subgroup", ns)
        return ns

    # Repository generation runs tens of thousands of times at start-up, so it
    # draws with rng.random() arithmetic rather than randint/choice/sample,
    # which cost several times more per call.

    @staticmethod
    def _repo_name(rand, used):
        adj = ADJECTIVES[int(rand() * len(ADJECTIVES))]
        noun = NOUNS[int(rand() * len(NOUNS))]
        p = rand()
        if p < 0.55:
            name = f"{adj}-{noun}"
        elif p < 0.68:
            name = noun
        elif p < 0.80:
            name = adj.capitalize() + noun.capitalize()
        elif p < 0.87:
            name = f"{noun}_{adj}"
        elif p < 0.93:
            name = f"{noun}.{('js', 'py', 'rs', 'go', 'nvim')[int(rand() * 5)]}"
        else:
            name = f"{adj}-{noun}-{2 + int(rand() * 98)}"
        # used: lower-case name -> next numeric suffix to try for that base name
        lname = name.lower()
        if lname in used:
            k = used[lname]
            while f"{lname}-{k}" in used:
                k += 1
            used[lname] = k + 1
            name = f"{name}-{k}"
        used[name.lower()] = 2
        return name

    def _make_repo(self, ns, rng, used):
        rand = rng.random
        between = lambda lo, hi: lo + int(rand() * (hi - lo + 1))  # noqa: E731 - inclusive
        r = Repo()
        r.seq = self.repo_count
        self.repo_count += 1
        r.ns, r.owner = ns, ns.top
        r.name = self._repo_name(rand, used)
        r.lname = r.name.lower()
        r.full_path = f"{ns.full_path}/{r.name}"
        roll = rand()
        if roll < 0.12:
            r.description = None
        elif roll < 0.15:
            r.description = ""
        elif roll < 0.35:
            r.description = TRICKY_DESCRIPTIONS[int(rand() * len(TRICKY_DESCRIPTIONS))]
        else:
            r.description = (f"A {ADJECTIVES[int(rand() * len(ADJECTIVES))]} {NOUNS[int(rand() * len(NOUNS))]} "
                             f"for {PURPOSES[int(rand() * len(PURPOSES))]}"
                             + ("", ".", " (work in progress)", ", written in a weekend")[int(rand() * 4)])
        r.language = None if rand() < 0.18 else \
            LANGUAGE_NAMES[bisect.bisect(LANGUAGE_CUMULATIVE, rand() * LANGUAGE_CUMULATIVE[-1])]
        r.created = between(max(ns.created, WORLD_START), WORLD_END - 86400)
        r.updated = r.created + int((WORLD_END - r.created) * rand() ** 2)
        r.pushed = between(r.created, r.updated)
        r.frac = int(rand() * 1_000_000)
        r.stars = min(250_000, int((rng.paretovariate(0.9) - 1) * 3))
        r.forks = int(r.stars * rand() * 0.3)
        r.subscribers = 1 + r.stars // 20
        r.open_issues = min(5000, between(0, 3 + r.stars // 40))
        if rand() < 0.35:
            r.topics = []
        else:  # distinct topics: a stride through a prime-length tuple never repeats
            first, stride = int(rand() * len(TOPICS)), 1 + int(rand() * (len(TOPICS) - 1))
            r.topics = [TOPICS[(first + i * stride) % len(TOPICS)] for i in range(between(1, 6))]
        r.private = rand() < 0.10
        r.fork = rand() < 0.15
        r.archived = rand() < 0.08
        r.template = rand() < 0.02
        empty = rand() < 0.03
        r.size = 0 if empty else int(rng.paretovariate(1.0) * 40)
        p = rand()
        r.default_branch = "main" if empty or p < 0.7 else "master" if p < 0.95 else "develop"
        r.license = LICENSE_KEYS[int(rand() * len(LICENSE_KEYS))] if rand() < 0.65 else None
        p = rand()
        r.homepage = (f"https://{ns.top.lname}.example.org/{r.lname}" if p < 0.2 else "" if p < 0.3 else None)
        r.has_issues = rand() < 0.9
        r.has_projects = rand() < 0.6
        r.has_wiki = rand() < 0.5
        r.has_pages = rand() < 0.1
        r.has_discussions = rand() < 0.15
        r.n_branches = 0 if empty else self._spread(between, rand(), (1, 5), (6, 40), (100, 300))
        r.n_contributors = 0 if empty else self._spread(between, rand(), (1, 10), (11, 60), (100, 400))
        if empty:
            r.pushed = r.created
        r.parent = None
        self._assign_ids(r)
        return r

    @staticmethod
    def _spread(between, p, small, medium, large):
        lo, hi = small if p < 0.7 else medium if p < 0.95 else large
        return between(lo, hi)

    def _assign_ids(self, r):
        r.gh_id = 100_000_000 + r.seq * 37
        r.gl_id = 5_000_000 + r.seq * 11
        r.gitea_id = 1000 + r.seq
        r.seed = self.seed

    def _make_upstream(self, fork):
        up = Repo()
        for field in Repo.__slots__:
            setattr(up, field, getattr(fork, field))
        up.seq = self._upstream_seq
        self._upstream_seq += 1
        up.ns = up.owner = self.upstream
        up.full_path = f"{UPSTREAM_OWNER}/{fork.name}"
        up.fork = up.private = up.archived = False
        up.stars = fork.stars * 3 + 10
        up.parent = None
        self._assign_ids(up)
        return up

    # -- queries -----------------------------------------------------------

    def all_namespaces(self):
        for owner in self.owners:
            yield owner
            yield from owner.descendants()

    def owner(self, name):
        return self.by_name.get(name.lower())

    @staticmethod
    def repo_in(ns, name):
        lname = name.lower()
        for repo in ns.repos:
            if repo.lname == lname:
                return repo
        return None

    @functools.lru_cache(maxsize=2048)
    def listing(self, ns, sees_private, subgroups, order, reverse, only):
        """Repositories of `ns` in `order`, filtered; cached (the world never changes).

        only: None, "public", "private", "forks" or "sources".
        """
        repos = list(ns.repos)
        if subgroups:
            for sub in ns.descendants():
                repos.extend(sub.repos)
        if not sees_private or only == "public":
            repos = [r for r in repos if not r.private]
        if only == "private":
            repos = [r for r in repos if r.private]
        elif only == "forks":
            repos = [r for r in repos if r.fork]
        elif only == "sources":
            repos = [r for r in repos if not r.fork]
        keys = {
            "created": lambda r: (r.created, r.seq), "updated": lambda r: (r.updated, r.seq),
            "pushed": lambda r: (r.pushed, r.seq), "name": lambda r: (r.lname, r.seq),
            "full_name": lambda r: (r.full_path.lower(), r.seq), "id": lambda r: r.seq,
            "stars": lambda r: (r.stars, r.seq), "size": lambda r: (r.size, r.seq),
        }
        repos.sort(key=keys[order], reverse=reverse)
        return tuple(repos)

    @functools.lru_cache(maxsize=4096)
    def branches(self, repo):
        """[(name, sha, protected, commit_ts)] sorted by name; deterministic per repository."""
        if repo.n_branches == 0:
            return ()
        rng = random.Random(f"{self.seed}|branches|{repo.full_path}")
        names = {repo.default_branch}
        prefixes = ("feature/", "fix/", "release/", "chore/", "dependabot/npm_and_yarn/", "", "exp-")
        while len(names) < repo.n_branches:
            names.add(f"{rng.choice(prefixes)}{rng.choice(NOUNS)}-{rng.randint(1, 9999)}")
        out = []
        for name in sorted(names):
            ts = rng.randint(repo.created, max(repo.created, repo.pushed))
            out.append((name, stable_hex(repo.full_path, name), name == repo.default_branch, ts))
        return tuple(out)

    @functools.lru_cache(maxsize=4096)
    def contributors(self, repo):
        """[(person, commits)] most commits first; deterministic per repository."""
        if repo.n_contributors == 0:
            return ()
        rng = random.Random(f"{self.seed}|contributors|{repo.full_path}")
        people = rng.sample(self.people, repo.n_contributors)
        counts = sorted((int(rng.paretovariate(1.2) * 3) for _ in people), reverse=True)
        return tuple(zip(people, counts))

    def languages(self, repo):
        if not repo.language:
            return {}
        rng = random.Random(f"{self.seed}|languages|{repo.full_path}")
        share = round(60 + rng.random() * 39, 2)
        other = rng.choice([n for n in LANGUAGE_NAMES if n != repo.language])
        return {repo.language: share, other: round(100 - share, 2)}

    def describe(self):
        """The /_emulator/world report: enough for a spec to compute expected totals."""
        owners = {}
        totals = collections.Counter()
        for o in self.owners:
            subs = {sub.full_path[len(o.full_path) + 1:]: len(sub.repos) for sub in o.descendants()}
            entry = {
                "kind": o.kind, "repos": len(o.repos),
                "public": sum(1 for r in o.repos if not r.private),
                "private": sum(1 for r in o.repos if r.private),
                "forks": sum(1 for r in o.repos if r.fork),
                "archived": sum(1 for r in o.repos if r.archived),
                "subgroups": subs, "subgroup_repos": sum(subs.values()),
            }
            owners[o.name] = entry
            totals["owners"] += 1
            totals["orgs" if o.kind == "org" else "users"] += 1
            for key in ("repos", "public", "private", "forks", "archived", "subgroup_repos"):
                totals[key] += entry[key]
        return {"seed": self.seed, "owners": owners, "totals": dict(totals),
                "special_owners": list(SPECIAL_OWNERS)}


def relation(ns: Namespace, account) -> str:
    """How the caller relates to an owner: owner, member (of an org), other or anon.

    Kept simple on purpose: any valid token counts as a member of every org.
    """
    if account is None:
        return "anon"
    top = ns.top
    if account.lower() == top.lname:
        return "owner"
    return "member" if top.kind == "org" else "other"


def sees_private(rel: str) -> bool:
    return rel in ("owner", "member")


# ---------------------------------------------------------------------------
# Renderers: provider-specific JSON shapes
# ---------------------------------------------------------------------------


class Site:
    """Base URLs for one request: API links follow the request's Host header."""

    __slots__ = ("api", "web", "git_host", "ssh_host", "host")

    def __init__(self, provider, host, prefix):
        hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        self.host = host
        self.api = f"{SCHEME}://{host}{prefix}"
        if provider == "github" and not prefix:
            self.web, self.git_host, self.ssh_host = "https://github.com", "github.com", "github.com"
        elif provider == "bitbucket":
            self.web, self.git_host, self.ssh_host = "https://bitbucket.org", "bitbucket.org", "bitbucket.org"
        else:  # GitHub Enterprise, GitLab and Gitea serve web and API on one host
            self.web, self.git_host, self.ssh_host = f"{SCHEME}://{host}", host, hostname


GH_PERMISSIONS = {
    "owner": {"admin": True, "maintain": True, "push": True, "triage": True, "pull": True},
    "member": {"admin": False, "maintain": False, "push": True, "triage": True, "pull": True},
    "other": {"admin": False, "maintain": False, "push": False, "triage": False, "pull": True},
}


def gh_owner(ns: Namespace, site: Site) -> dict:
    login = ns.name
    u = f"{site.api}/users/{login}"
    return {
        "login": login, "id": ns.gh_id, "node_id": node_id("Organization" if ns.kind == "org" else "User", ns.gh_id),
        "avatar_url": f"https://avatars.githubusercontent.com/u/{ns.gh_id}?v=4", "gravatar_id": "",
        "url": u, "html_url": f"{site.web}/{login}", "followers_url": f"{u}/followers",
        "following_url": f"{u}/following{{/other_user}}", "gists_url": f"{u}/gists{{/gist_id}}",
        "starred_url": f"{u}/starred{{/owner}}{{/repo}}", "subscriptions_url": f"{u}/subscriptions",
        "organizations_url": f"{u}/orgs", "repos_url": f"{u}/repos", "events_url": f"{u}/events{{/privacy}}",
        "received_events_url": f"{u}/received_events",
        "type": "Organization" if ns.kind == "org" else "User", "user_view_type": "public", "site_admin": False,
    }


def gh_person(person, site: Site) -> dict:
    login, _, _, pid = person
    u = f"{site.api}/users/{login}"
    bot = login.endswith("[bot]")
    return {
        "login": login, "id": pid, "node_id": node_id("Bot" if bot else "User", pid),
        "avatar_url": f"https://avatars.githubusercontent.com/u/{pid}?v=4", "gravatar_id": "", "url": u,
        "html_url": f"{site.web}/{'apps/dependabot' if bot else login}", "followers_url": f"{u}/followers",
        "following_url": f"{u}/following{{/other_user}}", "gists_url": f"{u}/gists{{/gist_id}}",
        "starred_url": f"{u}/starred{{/owner}}{{/repo}}", "subscriptions_url": f"{u}/subscriptions",
        "organizations_url": f"{u}/orgs", "repos_url": f"{u}/repos", "events_url": f"{u}/events{{/privacy}}",
        "received_events_url": f"{u}/received_events", "type": "Bot" if bot else "User",
        "user_view_type": "public", "site_admin": False,
    }


def gh_license(key):
    if key is None:
        return None
    name, spdx, num = LICENSES[key]
    return {"key": key, "name": name, "spdx_id": spdx,
            "url": None if key == "other" else f"https://api.github.com/licenses/{key}",
            "node_id": node_id("License", num)}


def gh_repo(repo: Repo, site: Site, rel: str, detail: bool = False) -> dict:
    full = f"{repo.owner.name}/{repo.name}"
    a = f"{site.api}/repos/{full}"
    out = {
        "id": repo.gh_id, "node_id": node_id("Repository", repo.gh_id), "name": repo.name, "full_name": full,
        "private": repo.private, "owner": gh_owner(repo.owner, site), "html_url": f"{site.web}/{full}",
        "description": repo.description, "fork": repo.fork, "url": a, "forks_url": f"{a}/forks",
        "keys_url": f"{a}/keys{{/key_id}}", "collaborators_url": f"{a}/collaborators{{/collaborator}}",
        "teams_url": f"{a}/teams", "hooks_url": f"{a}/hooks", "issue_events_url": f"{a}/issues/events{{/number}}",
        "events_url": f"{a}/events", "assignees_url": f"{a}/assignees{{/user}}",
        "branches_url": f"{a}/branches{{/branch}}", "tags_url": f"{a}/tags", "blobs_url": f"{a}/git/blobs{{/sha}}",
        "git_tags_url": f"{a}/git/tags{{/sha}}", "git_refs_url": f"{a}/git/refs{{/sha}}",
        "trees_url": f"{a}/git/trees{{/sha}}", "statuses_url": f"{a}/statuses/{{sha}}",
        "languages_url": f"{a}/languages", "stargazers_url": f"{a}/stargazers",
        "contributors_url": f"{a}/contributors", "subscribers_url": f"{a}/subscribers",
        "subscription_url": f"{a}/subscription", "commits_url": f"{a}/commits{{/sha}}",
        "git_commits_url": f"{a}/git/commits{{/sha}}", "comments_url": f"{a}/comments{{/number}}",
        "issue_comment_url": f"{a}/issues/comments{{/number}}", "contents_url": f"{a}/contents/{{+path}}",
        "compare_url": f"{a}/compare/{{base}}...{{head}}", "merges_url": f"{a}/merges",
        "archive_url": f"{a}/{{archive_format}}{{/ref}}", "downloads_url": f"{a}/downloads",
        "issues_url": f"{a}/issues{{/number}}", "pulls_url": f"{a}/pulls{{/number}}",
        "milestones_url": f"{a}/milestones{{/number}}",
        "notifications_url": f"{a}/notifications{{?since,all,participating}}",
        "labels_url": f"{a}/labels{{/name}}", "releases_url": f"{a}/releases{{/id}}",
        "deployments_url": f"{a}/deployments", "created_at": iso_z(repo.created), "updated_at": iso_z(repo.updated),
        "pushed_at": iso_z(repo.pushed), "git_url": f"git://{site.git_host}/{full}.git",
        "ssh_url": f"git@{site.ssh_host}:{full}.git", "clone_url": f"{site.web}/{full}.git",
        "svn_url": f"{site.web}/{full}", "homepage": repo.homepage, "size": repo.size,
        "stargazers_count": repo.stars, "watchers_count": repo.stars, "language": repo.language,
        "has_issues": repo.has_issues, "has_projects": repo.has_projects, "has_downloads": True,
        "has_wiki": repo.has_wiki, "has_pages": repo.has_pages, "has_discussions": repo.has_discussions,
        "forks_count": repo.forks, "mirror_url": None, "archived": repo.archived, "disabled": False,
        "open_issues_count": repo.open_issues, "license": gh_license(repo.license), "allow_forking": True,
        "is_template": repo.template, "web_commit_signoff_required": False, "topics": repo.topics,
        "visibility": "private" if repo.private else "public", "forks": repo.forks,
        "open_issues": repo.open_issues, "watchers": repo.stars, "default_branch": repo.default_branch,
    }
    if rel != "anon":
        out["permissions"] = GH_PERMISSIONS[rel]
    if detail:
        out["temp_clone_token"] = "" if rel in ("owner", "member") else None
        if repo.owner.kind == "org":
            out["organization"] = gh_owner(repo.owner, site)
        if repo.parent is not None:
            out["parent"] = gh_repo(repo.parent, site, "anon")
            out["source"] = out["parent"]
        out["network_count"] = repo.forks
        out["subscribers_count"] = repo.subscribers
    return out


def gh_user(ns: Namespace, site: Site, world: World, private_view=False) -> dict:
    out = gh_owner(ns, site)
    public = sum(1 for r in ns.repos if not r.private)
    rng = random.Random(f"{world.seed}|ghuser|{ns.name}")
    out.update({
        "name": ns.display, "company": None if ns.kind == "org" else rng.choice((None, "@acme", "Globex")),
        "blog": f"https://{ns.lname}.example.org", "location": ns.location, "email": None, "hireable": None,
        "bio": ns.description, "twitter_username": None, "public_repos": public, "public_gists": rng.randint(0, 40),
        "followers": rng.randint(0, 5000), "following": rng.randint(0, 300),
        "created_at": iso_z(ns.created), "updated_at": iso_z(ns.updated),
    })
    if private_view:
        private = len(ns.repos) - public
        out.update({"private_gists": 0, "total_private_repos": private, "owned_private_repos": private,
                    "disk_usage": sum(r.size for r in ns.repos), "collaborators": 0,
                    "two_factor_authentication": True,
                    "plan": {"name": "pro", "space": 976562499, "collaborators": 0, "private_repos": 9999}})
    return out


def gh_org(ns: Namespace, site: Site, world: World, member=False) -> dict:
    u = f"{site.api}/orgs/{ns.name}"
    public = sum(1 for r in ns.repos if not r.private)
    out = {
        "login": ns.name, "id": ns.gh_id, "node_id": node_id("Organization", ns.gh_id), "url": u,
        "repos_url": f"{u}/repos", "events_url": f"{u}/events", "hooks_url": f"{u}/hooks",
        "issues_url": f"{u}/issues", "members_url": f"{u}/members{{/member}}",
        "public_members_url": f"{u}/public_members{{/member}}",
        "avatar_url": f"https://avatars.githubusercontent.com/u/{ns.gh_id}?v=4", "description": ns.description,
        "name": ns.display, "company": None, "blog": f"https://{ns.lname}.example.org", "location": ns.location,
        "email": None, "twitter_username": None, "is_verified": False, "has_organization_projects": True,
        "has_repository_projects": True, "public_repos": public, "public_gists": 0, "followers": 0, "following": 0,
        "html_url": f"{site.web}/{ns.name}", "created_at": iso_z(ns.created), "updated_at": iso_z(ns.updated),
        "archived_at": None, "type": "Organization",
    }
    if member:
        private = len(ns.repos) - public
        out.update({"total_private_repos": private, "owned_private_repos": private})
    return out


def gh_branch(repo: Repo, branch, site: Site) -> dict:
    name, sha, protected, _ = branch
    return {"name": name,
            "commit": {"sha": sha, "url": f"{site.api}/repos/{repo.owner.name}/{repo.name}/commits/{sha}"},
            "protected": protected}


def gh_contributor(person, commits, site: Site) -> dict:
    out = gh_person(person, site)
    out["contributions"] = commits
    return out


# -- GitLab ----------------------------------------------------------------


def gl_namespace(ns: Namespace, site: Site) -> dict:
    if ns.kind == "user":
        return {"id": ns.gl_ns_id, "name": ns.display, "path": ns.name, "kind": "user", "full_path": ns.name,
                "parent_id": None, "avatar_url": f"https://secure.gravatar.com/avatar/{stable_hex(ns.name)[:32]}",
                "web_url": f"{site.web}/{ns.name}"}
    return {"id": ns.gl_id, "name": ns.display, "path": ns.name, "kind": "group", "full_path": ns.full_path,
            "parent_id": ns.parent.gl_id if ns.parent else None, "avatar_url": None,
            "web_url": f"{site.web}/groups/{ns.full_path}"}


def gl_user_basic(ns: Namespace, site: Site) -> dict:
    return {"id": ns.gl_id, "username": ns.name, "name": ns.display, "state": "active", "locked": False,
            "avatar_url": f"https://secure.gravatar.com/avatar/{stable_hex(ns.name)[:32]}?s=80&d=identicon",
            "web_url": f"{site.web}/{ns.name}"}


def gl_user(ns: Namespace, site: Site, current=False) -> dict:
    out = gl_user_basic(ns, site)
    out.update({"created_at": iso_ms(ns.created, 0), "bio": ns.description or "", "location": ns.location or "",
                "public_email": None, "skype": "", "linkedin": "", "twitter": "", "discord": "",
                "website_url": "", "organization": "", "job_title": "", "pronouns": None, "bot": False,
                "work_information": None, "local_time": None})
    if current:
        out.update({"last_sign_in_at": iso_ms(ns.updated, 0), "confirmed_at": iso_ms(ns.created, 0),
                    "last_activity_on": time.strftime("%Y-%m-%d", time.gmtime(ns.updated)),
                    "email": f"{ns.lname}@example.org", "theme_id": 1, "color_scheme_id": 1,
                    "projects_limit": 100000, "current_sign_in_at": iso_ms(ns.updated, 0), "identities": [],
                    "can_create_group": True, "can_create_project": True, "two_factor_enabled": True,
                    "external": False, "private_profile": False, "commit_email": f"{ns.lname}@example.org"})
    return out


def gl_group(ns: Namespace, site: Site) -> dict:
    return {
        "id": ns.gl_id, "web_url": f"{site.web}/groups/{ns.full_path}", "name": ns.display, "path": ns.name,
        "description": ns.description or "", "visibility": "public", "share_with_group_lock": False,
        "require_two_factor_authentication": False, "two_factor_grace_period": 48,
        "project_creation_level": "developer", "auto_devops_enabled": None,
        "subgroup_creation_level": "maintainer", "emails_disabled": False, "emails_enabled": True,
        "mentions_disabled": None, "lfs_enabled": True, "default_branch": None,
        "default_branch_protection": 2, "avatar_url": None, "request_access_enabled": True,
        "full_name": " / ".join(n.display for n in _lineage(ns)), "full_path": ns.full_path,
        "created_at": iso_ms(ns.created, 0), "parent_id": ns.parent.gl_id if ns.parent else None,
        "organization_id": 1, "shared_runners_setting": "enabled", "ldap_cn": None, "ldap_access": None,
        "marked_for_deletion_on": None, "wiki_access_level": "enabled", "shared_with_groups": [],
        "prevent_sharing_groups_outside_hierarchy": False, "membership_lock": False,
    }


def _lineage(ns):
    chain = []
    while ns is not None:
        chain.append(ns)
        ns = ns.parent
    return reversed(chain)


GL_SIMPLE_KEYS = ("id", "description", "name", "name_with_namespace", "path", "path_with_namespace",
                  "created_at", "default_branch", "tag_list", "topics", "ssh_url_to_repo", "http_url_to_repo",
                  "web_url", "readme_url", "forks_count", "avatar_url", "star_count", "last_activity_at",
                  "namespace")


def gl_project_basic(repo: Repo, site: Site) -> dict:
    path = repo.full_path
    return {
        "id": repo.gl_id, "description": repo.description,
        "name": repo.name, "name_with_namespace": " / ".join([n.display for n in _lineage(repo.ns)] + [repo.name]),
        "path": repo.name, "path_with_namespace": path, "created_at": iso_ms(repo.created, repo.frac),
        "default_branch": None if repo.empty else repo.default_branch, "tag_list": repo.topics,
        "topics": repo.topics, "ssh_url_to_repo": f"git@{site.ssh_host}:{path}.git",
        "http_url_to_repo": f"{site.web}/{path}.git", "web_url": f"{site.web}/{path}",
        "readme_url": None if repo.empty else f"{site.web}/{path}/-/blob/{repo.default_branch}/README.md",
        "forks_count": repo.forks, "avatar_url": None, "star_count": repo.stars,
        "last_activity_at": iso_ms(max(repo.updated, repo.pushed), repo.frac),
        "namespace": gl_namespace(repo.ns, site),
    }


def gl_project(repo: Repo, site: Site, rel: str, detail=False) -> dict:
    out = gl_project_basic(repo, site)
    api = f"{site.api}/projects/{repo.gl_id}"
    level = lambda on: "enabled" if on else "disabled"  # noqa: E731
    out.update({
        "container_registry_image_prefix": f"registry.{site.ssh_host}/{repo.full_path.lower()}",
        "_links": {"self": api, "issues": f"{api}/issues", "merge_requests": f"{api}/merge_requests",
                   "repo_branches": f"{api}/repository/branches", "labels": f"{api}/labels",
                   "events": f"{api}/events", "members": f"{api}/members", "cluster_agents": f"{api}/cluster_agents"},
        "packages_enabled": True, "empty_repo": repo.empty, "archived": repo.archived,
        "visibility": "private" if repo.private else "public",
    })
    if repo.ns.kind == "user":
        out["owner"] = gl_user_basic(repo.ns, site)
    out.update({
        "resolve_outdated_diff_discussions": False, "issues_enabled": repo.has_issues,
        "merge_requests_enabled": True, "wiki_enabled": repo.has_wiki, "jobs_enabled": True,
        "snippets_enabled": True, "container_registry_enabled": True, "service_desk_enabled": False,
        "can_create_merge_request_in": rel in ("owner", "member"),
        "issues_access_level": level(repo.has_issues), "repository_access_level": "enabled",
        "merge_requests_access_level": "enabled", "forking_access_level": "enabled",
        "wiki_access_level": level(repo.has_wiki), "builds_access_level": "enabled",
        "snippets_access_level": "enabled", "pages_access_level": "private" if repo.private else "public",
        "analytics_access_level": "enabled", "container_registry_access_level": "enabled",
        "security_and_compliance_access_level": "private", "releases_access_level": "enabled",
        "environments_access_level": "enabled", "emails_disabled": False, "emails_enabled": True,
        "shared_runners_enabled": True, "lfs_enabled": True, "creator_id": repo.owner.gl_id,
        "import_status": "none", "description_html": "" if not repo.description else f"<p>{repo.description}</p>",
        "updated_at": iso_ms(repo.updated, repo.frac), "ci_config_path": None, "public_jobs": True,
        "shared_with_groups": [], "only_allow_merge_if_pipeline_succeeds": False,
        "request_access_enabled": True, "only_allow_merge_if_all_discussions_are_resolved": False,
        "remove_source_branch_after_merge": True, "merge_method": "merge", "squash_option": "default_off",
    })
    if repo.has_issues:
        out["open_issues_count"] = repo.open_issues
    if repo.parent is not None:
        out["forked_from_project"] = gl_project_basic(repo.parent, site)
    if detail and rel in ("owner", "member"):
        out["permissions"] = {"project_access": {"access_level": 50, "notification_level": 3} if rel == "owner"
                              else None,
                              "group_access": {"access_level": 30, "notification_level": 3} if rel == "member"
                              else None}
    return out


def gl_branch(repo: Repo, branch, site: Site, world: World) -> dict:
    name, sha, protected, ts = branch
    person = world.people[int(sha[:6], 16) % len(world.people)]
    when = iso_ms(ts, 0)[:-1] + "+00:00"
    return {
        "name": name,
        "commit": {"id": sha, "short_id": sha[:8], "created_at": when, "parent_ids": [stable_hex(sha, "p")],
                   "title": f"Update {name}", "message": f"Update {name}\n", "author_name": person[1],
                   "author_email": person[2], "authored_date": when, "committer_name": person[1],
                   "committer_email": person[2], "committed_date": when, "trailers": {}, "extended_trailers": {},
                   "web_url": f"{site.web}/{repo.full_path}/-/commit/{sha}"},
        "merged": False, "protected": protected, "developers_can_push": False, "developers_can_merge": False,
        "can_push": False, "default": name == repo.default_branch,
        "web_url": f"{site.web}/{repo.full_path}/-/tree/{name}",
    }


# -- Bitbucket -------------------------------------------------------------


def bb_slug(name: str) -> str:
    return name.lower()


def bb_workspace_ref(ns: Namespace, site: Site) -> dict:
    slug = bb_slug(ns.name)
    return {"type": "workspace", "uuid": ns.bb_uuid, "name": ns.display, "slug": slug,
            "links": {"avatar": {"href": f"https://bitbucket.org/workspaces/{slug}/avatar/?ts=1"},
                      "html": {"href": f"{site.web}/{slug}/"}, "self": {"href": f"{site.api}/workspaces/{slug}"}}}


def bb_workspace(ns: Namespace, site: Site) -> dict:
    out = bb_workspace_ref(ns, site)
    slug = out["slug"]
    out["links"].update({
        "members": {"href": f"{site.api}/workspaces/{slug}/members"},
        "owners": {"href": f"{site.api}/workspaces/{slug}/members?q=permission%3D%22owner%22"},
        "projects": {"href": f"{site.api}/workspaces/{slug}/projects"},
        "repositories": {"href": f"{site.api}/repositories/{slug}"},
        "snippets": {"href": f"{site.api}/snippets/{slug}"},
    })
    out.update({"is_private": False, "is_privacy_enforced": False, "forking_mode": "allow_forks",
                "created_on": iso_us(ns.created, 0), "updated_on": iso_us(ns.updated, 0)})
    return out


def bb_account(ns: Namespace, site: Site) -> dict:
    """The `owner` of a repository: a team (org) or a user account."""
    out = {"display_name": ns.display,
           "links": {"self": {"href": f"{site.api}/users/{ns.bb_uuid}"},
                     "avatar": {"href": f"https://secure.gravatar.com/avatar/{stable_hex(ns.name)[:32]}"},
                     "html": {"href": f"{site.web}/{ns.bb_uuid}/"}},
           "type": "team" if ns.kind == "org" else "user", "uuid": ns.bb_uuid, "username": bb_slug(ns.name)}
    if ns.kind == "user":
        out["account_id"] = f"5{ns.gh_id:023x}"[:24]
        out["nickname"] = ns.name
    return out


def bb_project(ns: Namespace, site: Site) -> dict:
    key = "".join(c for c in ns.name.upper() if c.isalnum())[:6] or "PROJ"
    return {"type": "project", "key": key, "uuid": stable_uuid("project", ns.name), "name": f"{ns.display} main",
            "links": {"self": {"href": f"{site.api}/workspaces/{bb_slug(ns.name)}/projects/{key}"},
                      "html": {"href": f"{site.web}/{bb_slug(ns.name)}/workspace/projects/{key}"},
                      "avatar": {"href": f"{site.web}/{bb_slug(ns.name)}/workspace/projects/{key}/avatar/32"}}}


def bb_repo_links(repo: Repo, site: Site) -> tuple:
    full = f"{bb_slug(repo.owner.name)}/{bb_slug(repo.name)}"
    return full, f"{site.api}/repositories/{full}"


def bb_repo(repo: Repo, site: Site) -> dict:
    full, a = bb_repo_links(repo, site)
    out = {
        "type": "repository", "full_name": full,
        "links": {
            "self": {"href": a}, "html": {"href": f"{site.web}/{full}"},
            "avatar": {"href": f"https://bytebucket.org/ravatar/{repo.bb_uuid}?ts=default"},
            "pullrequests": {"href": f"{a}/pullrequests"}, "commits": {"href": f"{a}/commits"},
            "forks": {"href": f"{a}/forks"}, "watchers": {"href": f"{a}/watchers"},
            "branches": {"href": f"{a}/refs/branches"}, "tags": {"href": f"{a}/refs/tags"},
            "downloads": {"href": f"{a}/downloads"}, "source": {"href": f"{a}/src"},
            "clone": [{"name": "https", "href": f"https://{site.git_host}/{full}.git"},
                      {"name": "ssh", "href": f"git@{site.ssh_host}:{full}.git"}],
            "hooks": {"href": f"{a}/hooks"},
        },
        "name": repo.name, "slug": bb_slug(repo.name), "description": repo.description or "", "scm": "git",
        "website": repo.homepage or None, "owner": bb_account(repo.owner, site),
        "workspace": bb_workspace_ref(repo.owner, site), "is_private": repo.private,
        "project": bb_project(repo.owner, site),
        "fork_policy": "no_public_forks" if repo.private else "allow_forks",
        "created_on": iso_us(repo.created, repo.frac), "updated_on": iso_us(repo.updated, repo.frac),
        "size": repo.size * 1024 + repo.frac % 1024, "language": (repo.language or "").lower(),
        "uuid": repo.bb_uuid,
        "mainbranch": None if repo.empty else {"name": repo.default_branch, "type": "branch"},
        "override_settings": {"default_merge_strategy": True, "branching_model": True},
        "has_issues": repo.has_issues, "has_wiki": repo.has_wiki, "enforced_signed_commits": None,
    }
    if repo.parent is not None:
        pfull, pa = bb_repo_links(repo.parent, site)
        out["parent"] = {"type": "repository", "full_name": pfull, "name": repo.parent.name,
                         "uuid": repo.parent.bb_uuid,
                         "links": {"self": {"href": pa}, "html": {"href": f"{site.web}/{pfull}"},
                                   "avatar": {"href": f"https://bytebucket.org/ravatar/{repo.parent.bb_uuid}"}}}
    return out


def bb_branch(repo: Repo, branch, site: Site, world: World) -> dict:
    name, sha, _, ts = branch
    _, a = bb_repo_links(repo, site)
    person = world.people[int(sha[:6], 16) % len(world.people)]
    return {
        "name": name, "type": "branch",
        "target": {"type": "commit", "hash": sha, "date": iso_us(ts, 0)[:-13] + "+00:00",
                   "author": {"type": "author", "raw": f"{person[1]} <{person[2]}>"},
                   "message": f"Update {name}\n", "parents": [{"type": "commit", "hash": stable_hex(sha, "p")}],
                   "links": {"self": {"href": f"{a}/commit/{sha}"}, "html": {"href": f"{site.web}/commits/{sha}"}}},
        "links": {"self": {"href": f"{a}/refs/branches/{name}"}, "commits": {"href": f"{a}/commits/{name}"},
                  "html": {"href": f"{site.web}/{repo.full_path.lower()}/branch/{name}"}},
        "merge_strategies": ["merge_commit", "squash", "fast_forward"], "default_merge_strategy": "merge_commit",
    }


def bb_user(ns_or_account, site: Site) -> dict:
    if isinstance(ns_or_account, Namespace):
        name, display, ident, created = ns_or_account.name, ns_or_account.display, ns_or_account.bb_uuid, \
            ns_or_account.created
    else:
        name, display, ident, created = ns_or_account, ns_or_account, stable_uuid("user", ns_or_account), WORLD_START
    return {"display_name": display,
            "links": {"self": {"href": f"{site.api}/users/{ident}"},
                      "avatar": {"href": f"https://secure.gravatar.com/avatar/{stable_hex(name)[:32]}"},
                      "repositories": {"href": f"{site.api}/repositories/{ident}"},
                      "snippets": {"href": f"{site.api}/snippets/{ident}"},
                      "html": {"href": f"{site.web}/{ident}/"}, "hooks": {"href": f"{site.api}/workspaces/{ident}/hooks"}},
            "created_on": iso_us(created, 0), "type": "user", "uuid": ident, "has_2fa_enabled": None,
            "username": bb_slug(name), "is_staff": False, "account_id": stable_hex("acct", name)[:24],
            "nickname": name, "account_status": "active", "location": None}


# -- Gitea -----------------------------------------------------------------


def gt_user(ns: Namespace, site: Site) -> dict:
    return {
        "id": ns.gitea_id, "login": ns.name, "login_name": "", "source_id": 0, "full_name": ns.display,
        "email": f"{ns.lname}@noreply.{site.ssh_host}", "avatar_url": f"{site.web}/avatars/{stable_hex(ns.name)[:32]}",
        "html_url": f"{site.web}/{ns.name}", "language": "", "is_admin": False, "last_login": "0001-01-01T00:00:00Z",
        "created": iso_offset(ns.created), "restricted": False, "active": False, "prohibit_login": False,
        "location": ns.location or "", "website": "", "description": ns.description or "", "visibility": "public",
        "followers_count": 0, "following_count": 0, "starred_repos_count": 0, "username": ns.name,
    }


def gt_org(ns: Namespace, site: Site) -> dict:
    return {"id": ns.gitea_id, "name": ns.name, "full_name": ns.display, "email": "",
            "avatar_url": f"{site.web}/avatars/{stable_hex(ns.name)[:32]}", "description": ns.description or "",
            "website": "", "location": ns.location or "", "visibility": "public",
            "repo_admin_change_team_access": False, "username": ns.name}


def gt_repo(repo: Repo, site: Site, rel: str, with_parent=True) -> dict:
    full = f"{repo.owner.name}/{repo.name}"
    pull_only = {"admin": False, "push": False, "pull": True}
    perms = {"owner": {"admin": True, "push": True, "pull": True},
             "member": {"admin": False, "push": True, "pull": True}}.get(rel, pull_only)
    return {
        "id": repo.gitea_id, "owner": gt_user(repo.owner, site), "name": repo.name, "full_name": full,
        "description": repo.description or "", "empty": repo.empty, "private": repo.private, "fork": repo.fork,
        "template": repo.template,
        "parent": gt_repo(repo.parent, site, "anon", False) if with_parent and repo.parent is not None else None,
        "mirror": False, "size": repo.size, "language": repo.language or "",
        "languages_url": f"{site.api}/repos/{full}/languages", "html_url": f"{site.web}/{full}",
        "url": f"{site.api}/repos/{full}", "link": "", "ssh_url": f"git@{site.ssh_host}:{full}.git",
        "clone_url": f"{site.web}/{full}.git", "original_url": "", "website": repo.homepage or "",
        "stars_count": repo.stars, "forks_count": repo.forks, "watchers_count": repo.subscribers,
        "open_issues_count": repo.open_issues, "open_pr_counter": 0, "release_counter": 0,
        "default_branch": repo.default_branch, "archived": repo.archived, "created_at": iso_offset(repo.created),
        "updated_at": iso_offset(repo.updated), "archived_at": "1970-01-01T00:00:00Z",
        "permissions": perms, "has_issues": repo.has_issues,
        "internal_tracker": {"enable_time_tracker": True, "allow_only_contributors_to_track_time": True,
                             "enable_issue_dependencies": True},
        "has_wiki": repo.has_wiki, "has_pull_requests": True, "has_projects": repo.has_projects,
        "has_releases": True, "has_packages": False, "has_actions": False, "ignore_whitespace_conflicts": False,
        "allow_merge_commits": True, "allow_rebase": True, "allow_rebase_explicit": True,
        "allow_squash_merge": True, "allow_fast_forward_only_merge": False, "allow_rebase_update": True,
        "default_delete_branch_after_merge": False, "default_merge_style": "merge",
        "default_allow_maintainer_edit": False, "avatar_url": "", "internal": False, "mirror_interval": "",
        "object_format_name": "sha1", "mirror_updated": "0001-01-01T00:00:00Z", "repo_transfer": None,
        "topics": repo.topics, "licenses": [LICENSES[repo.license][1]] if repo.license else [],
    }


def gt_branch(repo: Repo, branch, site: Site, world: World) -> dict:
    name, sha, protected, ts = branch
    person = world.people[int(sha[:6], 16) % len(world.people)]
    ident = {"name": person[1], "email": person[2], "username": person[0]}
    return {
        "name": name,
        "commit": {"id": sha, "message": f"Update {name}\n",
                   "url": f"{site.web}/{repo.owner.name}/{repo.name}/commit/{sha}", "author": ident,
                   "committer": ident, "verification": {"verified": False, "reason": "gpg.error.not_signed_commit",
                                                         "signature": "", "signer": None, "payload": ""},
                   "timestamp": iso_offset(ts), "added": None, "removed": None, "modified": None},
        "protected": protected, "required_approvals": 0, "enable_status_check": False,
        "status_check_contexts": [], "user_can_push": False, "user_can_merge": False,
        "effective_branch_protection_name": "main" if protected else "",
    }


# ---------------------------------------------------------------------------
# Responses, the body cache and conditional requests
# ---------------------------------------------------------------------------


class Entry:
    """A cacheable 200 response: body rendered once; its gzip copy is made on demand (BodyCache.gzipped)."""

    __slots__ = ("body", "gz", "etag", "last_modified", "lm_ts", "headers", "kind", "size")

    def __init__(self, body: bytes, lm_ts: int, kind: str, headers=()):
        self.body = body
        self.gz = None
        self.etag = '"%s"' % hashlib.sha1(body).hexdigest()
        self.lm_ts = lm_ts
        self.last_modified = http_date(lm_ts)
        self.headers = "".join(f"{k}: {v}\r\n" for k, v in headers)
        self.kind = kind
        self.size = len(body) + 512

    def matches(self, headers) -> bool:
        """True when the request's validators say the client's copy is current."""
        inm = headers.get("if-none-match")
        if inm is not None:
            for tag in inm.split(","):
                tag = tag.strip()
                if tag == "*" or (tag[2:] if tag.startswith("W/") else tag) == self.etag:
                    return True
            return False  # If-None-Match takes precedence over If-Modified-Since
        ims = headers.get("if-modified-since")
        if ims:
            try:
                return self.lm_ts <= email.utils.parsedate_to_datetime(ims).timestamp()
            except (TypeError, ValueError, IndexError, OverflowError):
                return False
        return False


class Reply:
    """A response that is not a cached page (errors, redirects, dynamic bodies, streams)."""

    __slots__ = ("status", "body", "ctype", "headers", "kind", "charge", "stream")

    def __init__(self, status, body=b"", kind="other", headers=(), ctype=JSON_TYPE, charge=True, stream=None):
        self.status = status
        self.body = body if isinstance(body, bytes) else dumps(body)
        self.ctype = ctype
        self.headers = list(headers)
        self.kind = kind
        self.charge = charge
        self.stream = stream


class BodyCache:
    """LRU of rendered Entries bounded by total bytes (bodies plus gzip copies)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.bytes = 0
        self.items: collections.OrderedDict = collections.OrderedDict()
        self.lock = threading.Lock()

    def get(self, key):
        with self.lock:
            entry = self.items.get(key)
            if entry is not None:
                self.items.move_to_end(key)
            return entry

    def put(self, key, entry):
        with self.lock:
            old = self.items.pop(key, None)
            if old is not None:
                self.bytes -= old.size
            self.items[key] = entry
            self.bytes += entry.size
            while self.bytes > self.max_bytes and len(self.items) > 1:
                _, dropped = self.items.popitem(last=False)
                self.bytes -= dropped.size

    def clear(self):
        with self.lock:
            self.items.clear()
            self.bytes = 0

    def gzipped(self, entry) -> bytes:
        """The entry's gzip copy, made on first use and counted in the cache's size."""
        gz = entry.gz
        if gz is None:
            gz = gzip.compress(entry.body, compresslevel=6, mtime=0)  # outside the lock; rarely twice
            with self.lock:
                if entry.gz is None:
                    entry.gz = gz
                    entry.size += len(gz)
                    self.bytes += len(gz)
                gz = entry.gz
        return gz


# ---------------------------------------------------------------------------
# Credentials, budgets, statistics
# ---------------------------------------------------------------------------


class Cred:
    __slots__ = ("index", "account", "bearer")

    def __init__(self, index, account, bearer):
        self.index, self.account, self.bearer = index, account, bearer


INVALID = object()


class Budget:
    """One rate-limit budget.  Fixed window (GitHub, GitLab, Gitea) or sliding (Bitbucket).

    Fixed: the window opens at the first counted request after a reset and
    ends at ceil(open + window), the advertised reset second, never later.
    Sliding: a request counts for `window` seconds after it was made.
    """

    __slots__ = ("sliding", "used", "reset_at", "stamps")

    def __init__(self, sliding):
        self.sliding = sliding
        self.used = 0
        self.reset_at = 0
        self.stamps = collections.deque()

    def refresh(self, now, window):
        if self.sliding:
            stamps = self.stamps
            while stamps and stamps[0] <= now - window:
                stamps.popleft()
            self.used = len(stamps)
        elif self.reset_at and now >= self.reset_at:
            self.used, self.reset_at = 0, 0

    def consume(self, now, window):
        if self.sliding:
            self.stamps.append(now)
        elif not self.reset_at:
            self.reset_at = math.ceil(now + window)
        self.used += 1

    def reset_value(self, now, window) -> int:
        if self.sliding:
            return math.ceil((self.stamps[0] if self.stamps else now) + window)
        return self.reset_at or math.ceil(now + window)


class Snapshot:
    __slots__ = ("limit", "remaining", "used", "reset", "name", "window_open")

    def __init__(self, limit, used, reset, name, window_open):
        self.limit, self.used, self.reset, self.name = limit, used, reset, name
        self.remaining = max(0, limit - used)
        self.window_open = window_open


RAMP_LEN = 64  # requests whose in-flight count on arrival is kept (stats "ramp")


def new_token_stats():
    # ramp: how many of the token's requests were in flight as each of its
    # first RAMP_LEN admitted requests arrived (itself included): how fast a
    # client's concurrency grows, without a clock.
    return {"requests": 0, "ok": 0, "not_modified": 0, "primary_limited": 0, "secondary_limited": 0,
            "unauthorized": 0, "in_flight": 0, "max_in_flight": 0, "ramp": []}


# ---------------------------------------------------------------------------
# The application
# ---------------------------------------------------------------------------


class Request:
    """One API request.  The query and path segments are parsed only when a route needs them
    (a cache hit needs neither)."""

    __slots__ = ("h", "method", "path", "query", "provider", "prefix", "site", "cred", "account", "headers",
                 "_q", "_seg")

    @property
    def q(self) -> dict:
        if self._q is None:
            self._q = dict(parse_qsl(self.query, keep_blank_values=True)) if self.query else {}
        return self._q

    @property
    def seg(self) -> list:
        """Path segments after the provider prefix, each percent-decoded after the split
        (so GitLab's url-encoded "group%2Fsub" stays one segment)."""
        if self._seg is None:
            seg = [unquote(s) for s in self.path[len(self.prefix):].split("/")[1:]]
            if len(seg) > 1 and seg[-1] == "":
                seg.pop()  # tolerate one trailing slash
            self._seg = seg
        return self._seg


class DropConnection(Exception):
    """Close the socket without (further) response."""


def add_latency(live):
    """The network's round trip: each handler thread sleeps on its own, so
    requests on other connections are served meanwhile, not one after another."""
    if live["latency"] > 0:
        time.sleep(live["latency"])


class Emulator:
    def __init__(self, scenario: dict):
        self.scenario = scenario
        self.world = World(scenario)
        self.live = scenario["live"]
        self.cache = BodyCache(scenario["cache_mb"] << 20)
        self.lock = threading.Lock()
        self.shutdown = threading.Event()
        try:
            self.apps = emulator_apps.Apps(scenario["apps"], len(scenario["tokens"]))
        except (emulator_apps.AppError, ValueError, IndexError) as exc:
            raise ScenarioError(f"apps: {exc}") from exc
        # each installation is a credential with its own budget and counters
        self.tokens = scenario["tokens"] + self.apps.token_entries
        self._sites = {}
        self.token_by_text = {p: {} for p in PROVIDERS}
        self.basic_by_user = {p: {} for p in PROVIDERS}
        for t in self.tokens:
            if "installation" in t:
                continue  # its tokens are issued at run time
            if "token" in t:
                self.token_by_text[t["provider"]][t["token"]] = t
            else:
                self.basic_by_user[t["provider"]][t["username"].lower()] = t
        self._reset_state()

    # -- state ---------------------------------------------------------------

    def _reset_state(self):
        """Counters and budgets back to zero (the caller holds self.lock, or no thread runs yet).

        In-flight counts survive: requests still running decrement them later.
        The per-token dicts are cleared in place because those requests hold
        references to them.
        """
        self.budgets: dict = {}
        self.counters = collections.Counter()
        self.by_status = collections.Counter()
        self.by_kind = collections.Counter()
        self.by_provider = collections.Counter()
        self.fault_counts = collections.Counter()
        self.in_flight = getattr(self, "in_flight", 0)
        self.max_in_flight = self.in_flight
        self.ramp = []
        if not hasattr(self, "token_stats"):
            self.token_stats = [new_token_stats() for _ in self.tokens]
            self.anon_stats = new_token_stats()
        for ts in self.token_stats + [self.anon_stats]:
            for key in ts:
                if key != "in_flight":
                    ts[key] = [] if key == "ramp" else 0
            ts["max_in_flight"] = ts["in_flight"]
        self._seed_faults()
        if hasattr(self, "apps"):
            self.apps.reset_counters()

    def _seed_faults(self):
        faults = self.live["faults"]
        self.fault_rng = random.Random(faults["seed"] if faults else 0)

    def budget_limits(self, provider, anonymous):
        limits = self.live["limits"]
        if limits.get(provider) is None:
            return None
        return limits.get("anonymous") if anonymous else limits[provider]

    def _budget(self, provider, account):
        key = (provider, account)
        budget = self.budgets.get(key)
        if budget is None:
            budget = self.budgets[key] = Budget(sliding=(provider == "bitbucket"))
        return budget

    @staticmethod
    def budget_name(provider, account):
        if provider == "github":
            return "core"
        if provider == "gitlab":
            return "throttle_unauthenticated_api" if account is None else "throttle_authenticated_api"
        return "api"

    def settle(self, provider, account, now, check=False, count=False):
        """Bring a budget up to date (the caller holds self.lock).

        check: refuse the request when the budget is spent; count: otherwise
        count it.  Returns (snapshot or None when unlimited, refused).
        """
        limits = self.budget_limits(provider, account is None)
        if limits is None:
            return None, False
        budget = self._budget(provider, account)
        window = limits["window"]
        budget.refresh(now, window)
        refused = check and budget.used >= limits["limit"]
        if count and not refused:
            budget.consume(now, window)
        window_open = bool(budget.reset_at or budget.stamps)
        snap = Snapshot(limits["limit"], budget.used, budget.reset_value(now, window),
                        self.budget_name(provider, account), window_open)
        return snap, refused

    def stats(self):
        now = time.time()
        with self.lock:
            budgets = {}
            accounts = {(t["provider"], t["account"]) for t in self.tokens}
            accounts |= {(p, None) for p in PROVIDERS}
            accounts |= set(self.budgets)
            for provider, account in sorted(accounts, key=lambda k: (k[0], k[1] or "")):
                snap, _ = self.settle(provider, account, now)
                if snap is None:
                    continue
                budgets[f"{provider}:{account or 'anonymous'}:{snap.name}"] = {
                    "provider": provider, "account": account, "resource": snap.name, "limit": snap.limit,
                    "remaining": snap.remaining, "used": snap.used,
                    "reset": snap.reset if snap.window_open else None}
            c = self.counters
            return {
                "requests": c["requests"], "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
                "by_path_kind": dict(self.by_kind), "by_provider": dict(self.by_provider),
                "full_responses": self.by_status[200], "not_modified": self.by_status[304],
                "faults": dict(self.fault_counts), "primary_limited": c["primary_limited"],
                "secondary_limited": c["secondary_limited"], "unauthorized": c["unauthorized"],
                "credentialed_requests": c["credentialed_requests"], "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight, "ramp": list(self.ramp),
                "tokens": {str(i): dict(s, ramp=list(s["ramp"])) for i, s in enumerate(self.token_stats)},
                "anonymous": dict(self.anon_stats), "budgets": budgets,
                "cache": {"entries": len(self.cache.items), "bytes": self.cache.bytes},
                "apps": dict(self.apps.counters),
            }

    # -- the request pipeline -------------------------------------------------

    def handle(self, h, method):
        h.response_started = False
        try:
            self._handle(h, method)
        except DropConnection:
            h.close_connection = True
            _hard_close(h)
        except (ConnectionError, TimeoutError, OSError) as exc:
            h.close_connection = True
            if not isinstance(exc, (ConnectionError, TimeoutError, BrokenPipeError)):
                self.log_exception(f"{method} {h.path}")
        except Exception:  # noqa: BLE001 - a bug here must not kill the server
            self.log_exception(f"{method} {h.path}")
            h.close_connection = True
            if not h.response_started:
                try:
                    self.write(h, 500, JSON_TYPE, dumps({"message": "emulator error"}), [], time.time())
                except OSError:
                    pass

    @staticmethod
    def log_exception(what):
        sys.stderr.write(f"emulator: error while handling {what}\n{traceback.format_exc()}")
        sys.stderr.flush()

    def _handle(self, h, method):
        path, _, query = h.path.partition("?")
        body = self._read_body(h)
        if path.startswith("/_emulator/"):
            return self.control(h, method, path, query, body)

        req = Request()
        req.h, req.method, req.path, req.query, req.headers = h, method, path, query, h.headers
        req._q = req._seg = None
        provider, prefix = split_provider(path)
        req.provider, req.prefix = provider, prefix
        req.site = self.site(provider, h.headers.get("host") or h.server.host_port, prefix)
        headers = h.headers
        credentialed = "authorization" in headers or (provider == "gitlab" and "private-token" in headers)

        live = self.live  # one consistent view for this request
        with self.lock:
            c = self.counters
            c["requests"] += 1
            if credentialed:
                c["credentialed_requests"] += 1
            self.by_provider[provider] += 1
            self.in_flight += 1
            if self.in_flight > self.max_in_flight:
                self.max_in_flight = self.in_flight
            if len(self.ramp) < RAMP_LEN:
                self.ramp.append(self.in_flight)
            fault = fault_status = None
            faults = live["faults"]
            if faults and faults["rate"] > 0 and self.fault_rng.random() < faults["rate"]:
                fault = self.fault_rng.choice(faults["kinds"])
                self.fault_counts[fault] += 1
                if fault == "5xx":
                    fault_status = 502 if self.fault_rng.random() < 0.5 else 503
        tstats = None
        released = False

        def release():
            # A request stops counting as in flight when its response starts
            # going out: a client that sends its next request the moment it
            # has read a response must not find the old one still counted.
            nonlocal released
            if released:
                return
            released = True
            with self.lock:
                self.in_flight -= 1
                if tstats is not None:
                    tstats["in_flight"] -= 1

        h.release_in_flight = release
        try:
            if fault in ("drop", "5xx"):
                add_latency(live)
                if fault == "drop":
                    raise DropConnection()
                return self._send_5xx(h, faults, fault_status)

            if provider == "github" and req.seg and req.seg[0] == "app":
                return self._serve_app(req, body)
            cred = self.authenticate(provider, headers)
            secondary = live["secondary"] if provider in ("github", "gitlab") else None
            tstats, refused = self._enter_token(cred, secondary)
            # After the token is counted in flight: a request waiting out the
            # latency is in flight for the secondary limit, as on a far server.
            add_latency(live)
            if refused:
                return self._send_secondary(req, cred, secondary, fault)
            if fault == "slow":
                time.sleep(faults["slow_seconds"])
            if cred is INVALID or isinstance(cred, tuple):
                return self._send_unauthorized(req, cred, fault)
            req.cred = cred
            req.account = cred.account if cred else None
            self._serve(req, fault, live)
        finally:
            release()
            h.release_in_flight = None

    def site(self, provider, host, prefix) -> Site:
        key = (provider, host, prefix)
        site = self._sites.get(key)
        if site is None:
            if len(self._sites) > 1000:  # Host is client-chosen: keep the memo bounded
                self._sites.clear()
            site = self._sites[key] = Site(provider, host, prefix)
        return site

    def _read_body(self, h):
        length = h.headers.get("content-length")
        if not length:
            if h.headers.get("transfer-encoding"):
                h.close_connection = True  # chunked request bodies are not supported
            return b""
        n = int_param(length, -1)
        if n < 0 or n > MAX_REQUEST_BODY:
            h.close_connection = True
            raise DropConnection()
        if h.headers.get("expect", "").lower() == "100-continue":
            h.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # else curl waits a second before sending
        return h.rfile.read(n)

    def authenticate(self, provider, headers):
        """Cred for a known credential, None when anonymous, INVALID or (INVALID, index) when refused."""
        raw = headers.get("authorization")
        if provider == "gitlab" and raw is None:
            token = headers.get("private-token")
            if token is None:
                return None
            return self._token(provider, token.strip(), False)
        if raw is None:
            return None
        scheme, _, value = raw.strip().partition(" ")
        scheme = scheme.lower()
        value = value.strip()
        if scheme == "basic":
            try:
                user, _, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                return INVALID
            entry = self.basic_by_user[provider].get(user.lower())
            if entry is None:
                # GitHub and Gitea accept a token as the Basic password.
                return self._token(provider, password, False) if provider in ("github", "gitea") else INVALID
            if entry["password"] != password:
                return (INVALID, entry["index"])
            return Cred(entry["index"], entry["account"], False)
        accepted = {"github": ("token", "bearer"), "gitlab": ("bearer",), "bitbucket": ("bearer",),
                    "gitea": ("token", "bearer")}[provider]
        if scheme not in accepted or not value:
            return INVALID
        return self._token(provider, value, scheme == "bearer")

    def _serve_app(self, req, body):
        """/app/...: authenticated by the app's JWT, drawing on no installation's budget."""
        status, out, headers, kind = self.apps.handle(
            req.method, req.seg, req.headers.get("authorization"), max(1, int_param(req.q.get("page"), 1)),
            int_param(req.q.get("per_page"), 30), f"{SCHEME}://{req.site.host}{req.path}")
        with self.lock:
            self.by_kind[kind] += 1
            if status == 401:
                self.counters["unauthorized"] += 1
        self._count_status(status, None)
        self.write(req.h, status, JSON_TYPE, dumps(out), headers, time.time(), head=req.method == "HEAD")

    def _token(self, provider, text, bearer):
        entry = self.token_by_text[provider].get(text)
        if entry is None and provider == "github" and text.startswith("ghs_"):
            entry = self.apps.installation_cred(text)
            if entry == "expired":
                return INVALID
        if entry is None:
            return INVALID
        return Cred(entry["index"], entry["account"], bearer)

    def _enter_token(self, cred, secondary):
        """Count the request for its token and admit it.

        Returns (stats, refused): stats of a valid token now in flight (the
        caller decrements in_flight when done), and refused=True when the
        token already has `max_concurrency` requests in flight (a secondary
        limit; the refused request is not counted as in flight).
        """
        with self.lock:
            if cred is None:
                self.anon_stats["requests"] += 1
                return None, False
            if cred is INVALID:
                return None, False
            if isinstance(cred, tuple):
                self.token_stats[cred[1]]["requests"] += 1
                return None, False
            ts = self.token_stats[cred.index]
            ts["requests"] += 1
            if secondary and ts["in_flight"] >= secondary["max_concurrency"]:
                return None, True
            ts["in_flight"] += 1
            if ts["in_flight"] > ts["max_in_flight"]:
                ts["max_in_flight"] = ts["in_flight"]
            if len(ts["ramp"]) < RAMP_LEN:
                ts["ramp"].append(ts["in_flight"])
            return ts, False

    def _stats_for(self, cred):
        if cred is None:
            return self.anon_stats
        if isinstance(cred, Cred):
            return self.token_stats[cred.index]
        if isinstance(cred, tuple):
            return self.token_stats[cred[1]]
        return None

    def _serve(self, req, fault, live):
        h = req.h
        provider = req.provider
        entry = reply = None
        if req.method not in ("GET", "HEAD"):
            # The emulated APIs are read-only here; never serve a GET body (or cache entry) to a write.
            reply = Reply(405, {"message": "Method Not Allowed"}, kind="method_not_allowed",
                          headers=[("Allow", "GET, HEAD")])
        else:
            reply = self._redirect(req, live)
        if reply is None:
            key = (req.path, req.query, req.site.host, req.account)
            entry = self.cache.get(key)
            if entry is None:
                result = ROUTERS[provider](self, req)
                if isinstance(result, Entry):
                    entry = result
                    self.cache.put(key, entry)
                else:
                    reply = result
        if entry is not None:
            kind, status, charged = entry.kind, 304 if entry.matches(req.headers) else 200, True
        else:
            kind, status, charged = reply.kind, reply.status, reply.charge
        now = time.time()
        with self.lock:
            self.by_kind[kind] += 1
            # A spent budget refuses even a conditional request; a 304 or a
            # truncated (faulted) response costs nothing.
            snap, limited = self.settle(provider, req.account, now, check=charged,
                                        count=charged and status != 304 and fault != "truncate")
            ts = self._stats_for(req.cred)
            if limited:
                self.counters["primary_limited"] += 1
                ts["primary_limited"] += 1
            elif status == 304:
                ts["not_modified"] += 1
            elif 200 <= status < 300:
                if fault != "truncate":  # like by_status: a truncated answer is not a success
                    ts["ok"] += 1
            elif status == 401:  # e.g. GET /user without a token
                self.counters["unauthorized"] += 1
                ts["unauthorized"] += 1
        if limited:
            return self._send_primary(req, snap, now, fault)
        rate_headers = self.rate_headers(provider, req.cred, snap, now)
        if entry is not None:
            self._count_status(status, fault)
            return self._send_entry(req, entry, status == 304, rate_headers, fault, live, now)
        if reply.stream is not None:
            return reply.stream(self, req, rate_headers)
        self._count_status(reply.status, fault)
        return self.write(h, reply.status, reply.ctype, reply.body, rate_headers + reply.headers, now,
                          head=req.method == "HEAD", truncate=fault == "truncate")

    def _count_status(self, status, fault):
        if fault == "truncate":
            return  # a truncated response is counted under faults only
        with self.lock:
            self.by_status[status] += 1

    def _redirect(self, req, live):
        redirects = live["redirects"]
        if not redirects or req.provider != "github":
            return None
        seg = req.seg
        owner = None
        if len(seg) == 3 and seg[0] in ("users", "orgs") and seg[2] == "repos":
            owner = seg[1]
        elif len(seg) >= 3 and seg[0] == "repos":
            owner = seg[1]
        base = redirects.get(owner.lower()) if owner else None
        if base is None:
            return None
        location = base + req.h.path
        return Reply(301, {"message": "Moved Permanently", "url": location,
                           "documentation_url": "https://docs.github.com/v3/#http-redirects"},
                     kind="redirect", headers=[("Location", location)])

    # -- responses -------------------------------------------------------------

    def rate_headers(self, provider, cred, snap, now) -> list:
        if snap is None:
            return []
        if provider == "github":
            return [("x-ratelimit-limit", snap.limit), ("x-ratelimit-remaining", snap.remaining),
                    ("x-ratelimit-reset", snap.reset), ("x-ratelimit-used", snap.used),
                    ("x-ratelimit-resource", snap.name)]
        if provider == "gitlab":
            return [("RateLimit-Name", snap.name), ("RateLimit-Limit", snap.limit),
                    ("RateLimit-Observed", snap.used), ("RateLimit-Remaining", snap.remaining),
                    ("RateLimit-Reset", snap.reset)]
        if provider == "bitbucket":
            # Only repository/project/workspace access tokens (Bearer) see these.
            if not (isinstance(cred, Cred) and cred.bearer):
                return []
            return [("X-RateLimit-Limit", snap.limit), ("X-RateLimit-Resource", snap.name),
                    ("X-RateLimit-NearLimit", "true" if snap.remaining < snap.limit * 0.2 else "false")]
        # Gitea has no rate limit of its own; these exist only when a scenario asks for one.
        return [("X-RateLimit-Limit", snap.limit), ("X-RateLimit-Remaining", snap.remaining),
                ("X-RateLimit-Reset", snap.reset)]

    def write(self, h, status, ctype, body, headers, now, head=False, truncate=False, length=None):
        """Write one complete response (or, with truncate, its first half and close)."""
        lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\n", date_line(now),
                 f"Content-Type: {ctype}\r\n"]
        if status not in (204, 304):
            lines.append(f"Content-Length: {len(body) if length is None else length}\r\n")
        for k, v in headers:
            lines.append(f"{k}: {v}\r\n")
        lines.append(connection_line(h, truncate))
        self._emit(h, "".join(lines).encode("latin-1", "replace"),
                   b"" if head or status in (204, 304) else body, truncate)

    @staticmethod
    def _emit(h, head_bytes, body, truncate):
        h.response_started = True
        release = getattr(h, "release_in_flight", None)
        if release:
            release()
        if truncate:
            h.close_connection = True
            h.wfile.write(head_bytes + body[: len(body) // 2])
            h.wfile.flush()
            _hard_close(h)
            return
        if len(body) < 65536:
            h.wfile.write(head_bytes + body)
        else:
            h.wfile.write(head_bytes)
            h.wfile.write(body)

    def _send_entry(self, req, entry, not_modified, rate_headers, fault, live, now):
        h = req.h
        lines = [f"HTTP/1.1 {'304 Not Modified' if not_modified else '200 OK'}\r\n", date_line(now),
                 f"Content-Type: {JSON_TYPE}\r\n",
                 "Cache-Control: ", "public" if req.account is None else "private", ", max-age=60, s-maxage=60\r\n",
                 "Vary: Accept, Authorization, Cookie, Accept-Encoding\r\n" if req.provider == "github"
                 else "Vary: Accept-Encoding\r\n",
                 f"ETag: {entry.etag}\r\nLast-Modified: {entry.last_modified}\r\n", entry.headers]
        body = b""
        if not not_modified:
            body = entry.body
            if live["gzip"] and accepts_gzip(req.headers.get("accept-encoding")):
                body = self.cache.gzipped(entry)
                lines.append("Content-Encoding: gzip\r\n")
            lines.append(f"Content-Length: {len(body)}\r\n")
        for k, v in rate_headers:
            lines.append(f"{k}: {v}\r\n")
        truncate = fault == "truncate"
        lines.append(connection_line(h, truncate))
        self._emit(h, "".join(lines).encode("latin-1", "replace"), b"" if req.method == "HEAD" else body,
                   truncate and not not_modified)
        if truncate and not_modified:
            h.close_connection = True

    def _send_5xx(self, h, faults, status):
        now = time.time()
        headers = []
        if faults["retry_after"] is not None:
            headers.append(("Retry-After", faults["retry_after"]))
        if status == 502:
            ctype = HTML_TYPE
            body = b"<html><body><h1>502 Bad Gateway</h1>The server returned an invalid response.</body></html>\n"
        else:
            ctype = JSON_TYPE
            body = dumps({"message": "Service Unavailable"})
        self._count_status(status, None)
        self.write(h, status, ctype, body, headers, now, head=h.command == "HEAD")

    def _send_unauthorized(self, req, cred, fault):
        with self.lock:
            self.counters["unauthorized"] += 1
            if isinstance(cred, tuple):
                self.token_stats[cred[1]]["unauthorized"] += 1
        self._count_status(401, fault)
        p = req.provider
        headers = []
        if p == "github":
            body = {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest", "status": "401"}
        elif p == "gitlab":
            body = {"message": "401 Unauthorized"}
        elif p == "bitbucket":
            body = {"type": "error", "error": {"message": "Unauthorized"}}
            headers.append(("WWW-Authenticate", 'Basic realm="Bitbucket.org HTTP"'))
        else:
            body = {"message": "invalid username, password or token", "url": f"{req.site.web}/api/swagger"}
        self.write(req.h, 401, JSON_TYPE, dumps(body), headers, time.time(), head=req.method == "HEAD",
                   truncate=fault == "truncate")

    def _send_secondary(self, req, cred, secondary, fault):
        now = time.time()
        with self.lock:
            self.counters["secondary_limited"] += 1
            self.token_stats[cred.index]["secondary_limited"] += 1
            snap, _ = self.settle(req.provider, cred.account, now)
        headers = []
        if secondary["retry_after"] is not None:
            headers.append(("Retry-After", secondary["retry_after"]))
        if req.provider == "gitlab":
            # gitlab.com's Projects/Groups/Users API limits: 429, Retry-After, no RateLimit-* headers.
            self._count_status(429, fault)
            if not headers:
                headers.append(("Retry-After", 60))
            return self.write(req.h, 429, TEXT_TYPE, GITLAB_LIMIT_BODY, headers, now, head=req.method == "HEAD",
                              truncate=fault == "truncate")
        status = secondary["status"]
        self._count_status(status, fault)
        body = dumps({"message": GITHUB_SECONDARY_MESSAGE,
                      "documentation_url": GITHUB_RATE_DOC + "#about-secondary-rate-limits"})
        self.write(req.h, status, JSON_TYPE, body, self.rate_headers("github", cred, snap, now) + headers, now,
                   head=req.method == "HEAD", truncate=fault == "truncate")

    def _send_primary(self, req, snap, now, fault):
        p = req.provider
        headers = self.rate_headers(p, req.cred, snap, now)
        if p == "github":
            status = self.live["limits"]["github"]["status"]
            message = GITHUB_ANON_PRIMARY_MESSAGE if req.cred is None else GITHUB_PRIMARY_MESSAGE
            body, ctype = dumps({"message": message, "documentation_url": GITHUB_RATE_DOC}), JSON_TYPE
        elif p == "gitlab":
            status, body, ctype = 429, GITLAB_LIMIT_BODY, TEXT_TYPE
            headers += [("RateLimit-ResetTime", http_date(snap.reset)),
                        ("Retry-After", max(1, math.ceil(snap.reset - now)))]
        elif p == "bitbucket":
            status, body, ctype = 429, BITBUCKET_LIMIT_BODY, TEXT_TYPE  # Bitbucket sends no Retry-After
        else:
            status, ctype = 429, JSON_TYPE
            body = dumps({"message": "rate limit exceeded", "url": f"{req.site.web}/api/swagger"})
            headers.append(("Retry-After", max(1, math.ceil(snap.reset - now))))
        self._count_status(status, fault)
        self.write(req.h, status, ctype, body, headers, now, head=req.method == "HEAD", truncate=fault == "truncate")

    # -- control endpoints ----------------------------------------------------

    def control(self, h, method, path, query, body):
        now = time.time()
        name = path[len("/_emulator/"):].rstrip("/")
        status, out = 200, None
        try:
            if name == "stats" and method in ("GET", "HEAD"):
                out = self.stats()
            elif name == "world" and method in ("GET", "HEAD"):
                out = self.world.describe()
            elif name == "health" and method in ("GET", "HEAD"):
                out = {"ok": True, "pid": os.getpid()}
            elif name == "config" and method in ("GET", "HEAD"):
                out = self.live
            elif name == "config" and method == "POST":
                patch = json.loads(body or b"{}")
                with self.lock:
                    new = merge_live(self.live, patch)
                    faults_changed = new["faults"] != self.live["faults"]
                    self.live = new
                    if faults_changed:
                        self._seed_faults()
                out = self.live
            elif name == "star" and method == "POST":
                # Changes one repository (a star more, updated now), so that
                # every page and object that shows it changes its ETag.
                opts = json.loads(body or b"{}")
                _require(isinstance(opts, dict), "star body must be an object")
                ns = self.world.owner(str(opts.get("owner", "")))
                _require(ns is not None and ns.repos, "star: no such owner with repositories")
                repo = self.world.repo_in(ns, str(opts["repo"])) if opts.get("repo") else ns.repos[0]
                _require(repo is not None, "star: no such repository")
                with self.lock:
                    repo.stars += 1
                    repo.updated = max(repo.updated, int(now))
                    self.cache.clear()
                out = {"owner": ns.name, "repo": repo.name, "stars": repo.stars}
            elif name == "reset" and method == "POST":
                opts = json.loads(body or b"{}")
                _require(isinstance(opts, dict), "reset body must be an object")
                with self.lock:
                    if opts.get("config"):
                        self.live = self.scenario["live"]
                    self._reset_state()
                out = {"ok": True}
            else:
                status, out = 404, {"message": f"no control endpoint {method} {path}"}
        except (ValueError, ScenarioError) as exc:  # json.JSONDecodeError is a ValueError
            status, out = 400, {"message": str(exc)}
        self.write(h, status, JSON_TYPE, dumps(out), [("Cache-Control", "no-store")], now, head=method == "HEAD")


REASONS = {s.value: s.phrase for s in http.HTTPStatus}


def connection_line(h, closing) -> str:
    """The Connection header (if any) and the blank line that ends the header block."""
    if closing or h.close_connection:
        h.close_connection = True
        return "Connection: close\r\n\r\n"
    if h.request_version == "HTTP/1.0":  # 1.0 keep-alive must be confirmed explicitly
        return "Connection: keep-alive\r\n\r\n"
    return "\r\n"


def accepts_gzip(value) -> bool:
    """Accept-Encoding allows gzip (explicitly, or through *) with a non-zero q."""
    if not value:
        return False
    codings = {}
    for part in value.lower().split(","):
        coding, *params = [p.strip() for p in part.split(";")]
        q = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        codings[coding] = q
    q = codings.get("gzip", codings.get("x-gzip", codings.get("*", 0.0)))
    return q > 0


def split_provider(path):
    if path.startswith("/api/v4/") or path == "/api/v4":
        return "gitlab", "/api/v4"
    if path.startswith("/2.0/") or path == "/2.0":
        return "bitbucket", "/2.0"
    if path.startswith("/api/v1/") or path == "/api/v1":
        return "gitea", "/api/v1"
    if path.startswith("/api/v3/") or path == "/api/v3":
        return "github", "/api/v3"
    return "github", ""


def _hard_close(h):
    """Close the client socket now, without a response (or after a partial one)."""
    h.close_connection = True
    try:
        h.wfile.flush()
    except OSError:
        pass
    try:
        h.connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


# ---------------------------------------------------------------------------
# Routes (each returns an Entry for a cacheable 200, else a Reply)
# ---------------------------------------------------------------------------


def paged_entry(items, render, lm_default, kind, headers):
    body = dumps([render(x) for x in items])
    lm = max((getattr(x, "updated", 0) for x in items), default=0) or lm_default
    return Entry(body, lm, kind, headers)


def page_bounds(total, per_page, page):
    last = max(1, ceil_div(total, per_page))
    start = (page - 1) * per_page
    return last, start, start + per_page


def gh_links(req, page, last):
    """GitHub's Link header: prev, next, last, first, with the request's own query."""
    base = f"{SCHEME}://{req.site.host}{req.path}?"
    url = lambda n: base + replace_query_param(req.query, {"page": n})  # noqa: E731
    links = []
    if page > 1:
        links.append(f'<{url(page - 1)}>; rel="prev"')
    if page < last:
        links.append(f'<{url(page + 1)}>; rel="next"')
        links.append(f'<{url(last)}>; rel="last"')
    if page > 1:
        links.append(f'<{url(1)}>; rel="first"')
    return [("Link", ", ".join(links))] if links else []


def gh_paginate(req, items, render, lm_default, kind, max_per_page=100):
    per_page = int_param(req.q.get("per_page"), 30)
    per_page = 30 if per_page < 1 else min(per_page, max_per_page)
    page = max(1, int_param(req.q.get("page"), 1))
    last, start, end = page_bounds(len(items), per_page, page)
    return paged_entry(items[start:end], render, lm_default, kind, gh_links(req, page, last))


def gh_not_found(doc="https://docs.github.com/rest", kind="not_found"):
    return Reply(404, {"message": "Not Found", "documentation_url": doc, "status": "404"}, kind=kind)


GH_SORTS = {"created": "created", "updated": "updated", "pushed": "pushed", "full_name": "full_name"}


def gh_sorted(req, default_sort):
    sort = GH_SORTS.get(req.q.get("sort", default_sort), default_sort)
    direction = req.q.get("direction") or ("asc" if sort == "full_name" else "desc")
    return sort, direction == "desc"


def route_github(app: Emulator, req: Request):
    seg, world, site = req.seg, app.world, req.site
    n = len(seg)
    head = seg[0] if seg else ""
    if n == 1 and head == "rate_limit":
        return gh_rate_limit(app, req)
    if head == "user":
        if req.cred is None:
            return Reply(401, {"message": "Requires authentication",
                               "documentation_url": "https://docs.github.com/rest/users/users#get-the-authenticated-user",
                               "status": "401"}, kind="auth_user")
        ns = world.owner(req.account)
        if n == 1:
            if ns is None or ns.kind != "user":
                ns = _phantom_user(req.account)
            return Entry(dumps(gh_user(ns, site, world, private_view=True)), ns.updated, "auth_user")
        if n == 2 and seg[1] == "repos":
            return gh_user_repos(app, req, ns)
    if head in ("users", "orgs") and n >= 2:
        name = seg[1]
        if n == 3 and seg[2] == "repos" and name.lower() in SPECIAL_OWNERS:
            return special_reply(name.lower())
        ns = world.owner(name)
        doc = ("https://docs.github.com/rest/repos/repos#list-organization-repositories" if head == "orgs"
               else "https://docs.github.com/rest/repos/repos#list-repositories-for-a-user")
        if ns is None or (head == "orgs" and ns.kind != "org"):
            return gh_not_found(doc, "repo_list" if n == 3 else "owner")
        if n == 2:
            if head == "orgs":
                return Entry(dumps(gh_org(ns, site, world, member=req.account is not None)), ns.updated, "owner")
            return Entry(dumps(gh_user(ns, site, world)), ns.updated, "owner")
        if n == 3 and seg[2] == "repos":
            rel = relation(ns, req.account)
            typ = req.q.get("type", "all" if head == "orgs" else "owner")
            if head == "users":
                # Public repositories only, for users and orgs alike; "member" lists
                # repositories the user collaborates on, none in this world.
                only, visible = ("empty" if typ == "member" else "public"), False
                sort, reverse = gh_sorted(req, "full_name")
            else:
                only = {"public": "public", "private": "private", "forks": "forks", "sources": "sources",
                        "member": None if sees_private(rel) else "empty", "internal": "empty"}.get(typ)
                visible = sees_private(rel)
                sort, reverse = gh_sorted(req, "created")
            items = () if only == "empty" else world.listing(ns, visible, False, sort, reverse, only)
            return gh_paginate(req, items, lambda r: gh_repo(r, site, rel), ns.updated, "repo_list")
    if head == "repos" and n >= 3:
        ns = world.owner(seg[1])
        repo = world.repo_in(ns, seg[2]) if ns else None
        if repo is None or (repo.private and not sees_private(relation(ns, req.account))):
            return gh_not_found("https://docs.github.com/rest/repos/repos#get-a-repository",
                                "repo" if n == 3 else seg[3] if n == 4 else "other")
        rel = relation(ns, req.account)
        if n == 3:
            return Entry(dumps(gh_repo(repo, site, rel, detail=True)), repo.updated, "repo")
        if n == 4 and seg[3] == "contributors":
            items = world.contributors(repo)
            if not items:
                return Reply(204, b"", kind="contributors")  # GitHub: an empty repository has no stats
            return gh_paginate(req, items, lambda pc: gh_contributor(pc[0], pc[1], site), repo.pushed,
                               "contributors")
        if n == 4 and seg[3] == "branches":
            return gh_paginate(req, world.branches(repo), lambda b: gh_branch(repo, b, site), repo.pushed,
                               "branches")
    return gh_not_found()


def _phantom_user(account):
    """A token's account that owns nothing in the world still has a profile."""
    ns = Namespace(account, "user", None, 99_999, random.Random(f"phantom|{account}"))
    return ns


def gh_user_repos(app, req, ns):
    site = req.site
    q = req.q
    if "type" in q and ("visibility" in q or "affiliation" in q):
        return Reply(422, {"message": "If you specify visibility or affiliation, you cannot specify type.",
                           "documentation_url": "https://docs.github.com/rest/repos/repos"
                                                "#list-repositories-for-the-authenticated-user", "status": "422"},
                     kind="repo_list")
    # Only the account's own repositories: no org or collaborator affiliations here.
    affiliation = q.get("affiliation", "owner,collaborator,organization_member")
    only = {"public": "public", "private": "private"}.get(q.get("visibility", q.get("type", "all")))
    if ns is None or ns.kind != "user" or "owner" not in affiliation or q.get("type") == "member":
        items = ()
    else:
        sort, reverse = gh_sorted(req, "full_name")
        items = app.world.listing(ns, True, False, sort, reverse, only)
    return gh_paginate(req, items, lambda r: gh_repo(r, site, "owner"), ns.updated if ns else WORLD_END,
                       "repo_list")


def gh_rate_limit(app, req):
    """GET /rate_limit: not counted against the primary budget, never cached."""
    now = time.time()
    with app.lock:
        snap, _ = app.settle("github", req.account, now)
    if snap is None:
        return Reply(404, {"message": "Rate limiting is not enabled.", "documentation_url":
                           "https://docs.github.com/rest/rate-limit/rate-limit#get-rate-limit-status-for-the-authenticated-user",
                           "status": "404"}, kind="rate_limit", charge=False)
    core = {"limit": snap.limit, "used": snap.used, "remaining": snap.remaining, "reset": snap.reset}
    hour, minute = math.ceil(now + 3600), math.ceil(now + 60)
    fixed = lambda limit, reset: {"limit": limit, "used": 0, "remaining": limit, "reset": reset}  # noqa: E731
    anon = req.account is None
    resources = {
        "core": core, "search": fixed(10 if anon else 30, minute), "graphql": fixed(0 if anon else 5000, hour),
        "integration_manifest": fixed(5000, hour), "source_import": fixed(100, minute),
        "code_scanning_upload": fixed(1000, hour), "actions_runner_registration": fixed(10000, hour),
        "scim": fixed(15000, hour), "dependency_snapshots": fixed(100, minute),
        "audit_log": fixed(1750, hour), "code_search": fixed(10, minute),
    }
    return Reply(200, {"resources": resources, "rate": dict(core)}, kind="rate_limit", charge=False,
                 headers=[("Cache-Control", "no-cache")])


# -- GitLab ----------------------------------------------------------------


GL_ORDER = {"id": "id", "name": "name", "path": "name", "created_at": "created", "updated_at": "updated",
            "last_activity_at": "pushed", "star_count": "stars", "similarity": "id"}


def gl_paginate(req, items, render, lm_default, kind, keyset_ok=False):
    q = req.q
    per_page = int_param(q.get("per_page"), 20)
    per_page = 20 if per_page < 1 else min(per_page, 100)
    if keyset_ok and q.get("pagination") == "keyset":
        return gl_keyset(req, items, render, lm_default, kind, per_page)
    page = max(1, int_param(q.get("page"), 1))
    total = len(items)
    last, start, end = page_bounds(total, per_page, page)
    base = f"{SCHEME}://{req.site.host}{req.path}?"
    url = lambda n: base + replace_query_param(req.query, {"page": n, "per_page": per_page})  # noqa: E731
    links = []
    if page > 1:
        links.append(f'<{url(page - 1)}>; rel="prev"')
    if page < last:
        links.append(f'<{url(page + 1)}>; rel="next"')
    links.append(f'<{url(1)}>; rel="first"')
    huge = total > 10_000  # gitlab.com stops counting: no x-total, x-total-pages or rel="last"
    if not huge:
        links.append(f'<{url(last)}>; rel="last"')
    headers = [("Link", ", ".join(links)), ("x-page", page), ("x-per-page", per_page),
               ("x-next-page", page + 1 if page < last else ""), ("x-prev-page", page - 1 if page > 1 else "")]
    if not huge:
        headers += [("x-total", total), ("x-total-pages", last)]
    return paged_entry(items[start:end], render, lm_default, kind, headers)


def gl_keyset(req, items, render, lm_default, kind, per_page):
    """Keyset pagination (order_by=id only, as for GitLab's project lists): Link rel=next only."""
    q = req.q
    if q.get("order_by", "id") != "id":
        return Reply(405, {"message": "405 Method Not Allowed"}, kind=kind)
    desc = q.get("sort", "desc" if "order_by" not in q else "asc") == "desc"
    ids = sorted(items, key=lambda r: r.gl_id, reverse=desc)
    after, before = int_param(q.get("id_after"), None), int_param(q.get("id_before"), None)
    if after is not None:
        ids = [r for r in ids if r.gl_id > after]
    if before is not None:
        ids = [r for r in ids if r.gl_id < before]
    chunk = ids[:per_page]
    headers = []
    if len(ids) > per_page:
        cursor = {"id_before" if desc else "id_after": chunk[-1].gl_id,
                  "id_after" if desc else "id_before": None, "per_page": per_page}
        url = f"{SCHEME}://{req.site.host}{req.path}?" + replace_query_param(req.query, cursor)
        headers.append(("Link", f'<{url}>; rel="next"'))
    return paged_entry(chunk, render, lm_default, kind, headers)


def gl_404(what):
    return Reply(404, {"message": f"404 {what} Not Found"}, kind="not_found")


def gl_projects_of(app, req, ns, subgroups, kind="repo_list"):
    q = req.q
    order = q.get("order_by", "created_at")
    if order not in GL_ORDER:
        return Reply(400, {"error": "order_by does not have a valid value"}, kind=kind)
    sort = q.get("sort", "desc")
    if sort not in ("asc", "desc"):
        return Reply(400, {"error": "sort does not have a valid value"}, kind=kind)
    rel = relation(ns, req.account)
    visible = sees_private(rel)
    vis = q.get("visibility")
    only = "public" if vis == "public" else "private" if vis == "private" else None
    items = app.world.listing(ns, visible, subgroups, GL_ORDER[order], sort == "desc", only)
    if "archived" in q:
        want = _is_true(q["archived"])
        items = tuple(r for r in items if r.archived == want)
    site = req.site
    if _is_true(q.get("simple")):
        render = lambda r: {k: v for k, v in gl_project_basic(r, site).items() if k in GL_SIMPLE_KEYS}  # noqa
    else:
        render = lambda r: gl_project(r, site, rel)  # noqa: E731
    return gl_paginate(req, items, render, ns.updated, kind, keyset_ok=True)


def gl_find_project(app, req, ident):
    world = app.world
    repo = world.gl_projects.get(int(ident)) if ident.isdigit() else world.gl_projects.get(ident.lower())
    if repo is None or (repo.private and not sees_private(relation(repo.ns, req.account))):
        return None
    return repo


def route_gitlab(app: Emulator, req: Request):
    seg, world, site = req.seg, app.world, req.site
    n = len(seg)
    head = seg[0] if seg else ""
    if head == "user" and n == 1:
        if req.cred is None:
            return Reply(401, {"message": "401 Unauthorized"}, kind="auth_user")
        ns = world.gl_users.get(req.account.lower()) or _phantom_user(req.account)
        return Entry(dumps(gl_user(ns, site, current=True)), ns.updated, "auth_user")
    if head == "users":
        if n == 1:
            username = req.q.get("username")
            ns = world.gl_users.get(username.lower()) if username else None
            found = [gl_user_basic(ns, site)] if ns else []
            headers = [("x-page", 1), ("x-per-page", 20), ("x-next-page", ""), ("x-prev-page", ""),
                       ("x-total", len(found)), ("x-total-pages", 1)]
            return Entry(dumps(found), ns.updated if ns else WORLD_END, "owner", headers)
        ident = seg[1]
        ns = world.gl_users.get(int(ident) if ident.isdigit() else ident.lower())
        if ns is None:
            return gl_404("User")
        if n == 2:
            return Entry(dumps(gl_user(ns, site)), ns.updated, "owner")
        if n == 3 and seg[2] == "projects":
            return gl_projects_of(app, req, ns, False)
    if head == "groups" and n >= 2:
        ident = seg[1]
        ns = world.gl_groups.get(int(ident) if ident.isdigit() else ident.lower())
        if ns is None:
            return gl_404("Group")
        if n == 2:
            return Entry(dumps(gl_group(ns, site)), ns.updated, "owner")
        if n == 3 and seg[2] == "projects":
            return gl_projects_of(app, req, ns, _is_true(req.q.get("include_subgroups")))
        if n == 3 and seg[2] == "subgroups":
            return gl_paginate(req, ns.children, lambda g: gl_group(g, site), ns.updated, "subgroups")
    if head == "projects" and n >= 2:
        repo = gl_find_project(app, req, seg[1])
        if repo is None:
            return gl_404("Project")
        rel = relation(repo.ns, req.account)
        if n == 2:
            return Entry(dumps(gl_project(repo, site, rel, detail=True)), repo.updated, "repo")
        if n == 3 and seg[2] == "languages":
            return Entry(dumps(world.languages(repo)), repo.pushed, "languages")
        if n == 4 and seg[2] == "repository" and seg[3] == "contributors":
            return gl_contributors(req, world, repo)
        if n == 4 and seg[2] == "repository" and seg[3] == "branches":
            return gl_paginate(req, world.branches(repo), lambda b: gl_branch(repo, b, site, world), repo.pushed,
                               "branches")
    return Reply(404, {"error": "404 Not Found"}, kind="not_found")


def gl_contributors(req, world, repo):
    order = req.q.get("order_by", "commits")
    if order not in ("name", "email", "commits"):
        return Reply(400, {"error": "order_by does not have a valid value"}, kind="contributors")
    key = {"name": lambda pc: pc[0][1], "email": lambda pc: pc[0][2], "commits": lambda pc: pc[1]}[order]
    items = sorted(world.contributors(repo), key=key, reverse=req.q.get("sort", "asc") == "desc")
    render = lambda pc: {"name": pc[0][1], "email": pc[0][2], "commits": pc[1], "additions": 0,  # noqa: E731
                         "deletions": 0}
    return gl_paginate(req, items, render, repo.pushed, "contributors")


# -- Bitbucket -------------------------------------------------------------


def bb_error(status, message, kind="not_found"):
    return Reply(status, {"type": "error", "error": {"message": message}}, kind=kind)


def bb_paginate(req, items, render, lm_default, kind):
    q = req.q
    pagelen = int_param(q.get("pagelen"), 10)
    pagelen = 10 if pagelen < 1 else min(pagelen, 100)
    page = max(1, int_param(q.get("page"), 1))
    last, start, end = page_bounds(len(items), pagelen, page)
    chunk = items[start:end]
    out = {"pagelen": pagelen, "size": len(items), "values": [render(x) for x in chunk], "page": page}
    base = f"{SCHEME}://{req.site.host}{req.path}?"
    if page < last:
        out["next"] = base + replace_query_param(req.query, {"page": page + 1})
    if page > 1:
        out["previous"] = base + replace_query_param(req.query, {"page": page - 1})
    lm = max((getattr(x, "updated", 0) for x in chunk), default=0) or lm_default
    return Entry(dumps(out), lm, kind)


BB_SORTS = {"created_on": "created", "updated_on": "updated", "name": "name", "slug": "name", "size": "size"}


def route_bitbucket(app: Emulator, req: Request):
    seg, world, site = req.seg, app.world, req.site
    n = len(seg)
    head = seg[0] if seg else ""
    if head == "user" and n == 1:
        if req.cred is None:
            return bb_error(401, "This API is only accessible with the following authentication types: "
                                 "session, password, apppassword, api_token, repo_access_token", "auth_user")
        ns = world.owner(req.account)
        return Entry(dumps(bb_user(ns if ns is not None and ns.kind == "user" else req.account, site)),
                     ns.updated if ns else WORLD_END, "auth_user")
    if head == "workspaces" and n == 2:
        ns = world.owner(seg[1])
        if ns is None:
            return bb_error(404, f"No workspace with identifier '{seg[1]}'.")
        return Entry(dumps(bb_workspace(ns, site)), ns.updated, "owner")
    if head == "repositories" and n >= 2:
        ns = world.owner(seg[1])
        if ns is None:
            return bb_error(404, f"No workspace with identifier '{seg[1]}'.",
                            "repo_list" if n == 2 else "repo")
        rel = relation(ns, req.account)
        if n == 2:
            # q= is accepted and ignored; role= and sort= are honoured loosely.
            sort = req.q.get("sort", "created_on")
            order = BB_SORTS.get(sort.lstrip("-"), "created")
            items = world.listing(ns, sees_private(rel), False, order, sort.startswith("-"), None)
            return bb_paginate(req, items, lambda r: bb_repo(r, site), ns.updated, "repo_list")
        repo = world.repo_in(ns, seg[2])
        if repo is None or (repo.private and not sees_private(rel)):
            return bb_error(404, f"Repository {seg[1]}/{seg[2]} not found", "repo")
        if n == 3:
            return Entry(dumps(bb_repo(repo, site)), repo.updated, "repo")
        if n == 5 and seg[3] == "refs" and seg[4] == "branches":
            return bb_paginate(req, world.branches(repo), lambda b: bb_branch(repo, b, site, world), repo.pushed,
                               "branches")
    return Reply(404, {"type": "error", "error": {
        "message": "Resource not found",
        "detail": "There is no API hosted at this URL.\n\nFor information about our API's, please refer to the "
                  "documentation at: https://developer.atlassian.com/bitbucket/api/2/reference/"}}, kind="not_found")


# -- Gitea -----------------------------------------------------------------


def gt_paginate(req, items, render, lm_default, kind):
    q = req.q
    limit = int_param(q.get("limit"), 30)
    limit = 30 if limit < 1 else min(limit, 50)
    page = max(1, int_param(q.get("page"), 1))
    total = len(items)
    last, start, end = page_bounds(total, limit, page)
    base = f"{SCHEME}://{req.site.host}{req.path}?"
    url = lambda n: base + replace_query_param(req.query, {"page": n})  # noqa: E731
    links = []  # Gitea's order and separator: next, last, first, prev joined by ","
    if page < last:
        links.append(f'<{url(page + 1)}>; rel="next"')
        links.append(f'<{url(last)}>; rel="last"')
    if page > 1:
        links.append(f'<{url(1)}>; rel="first"')
        links.append(f'<{url(page - 1)}>; rel="prev"')
    headers = [("X-Total-Count", total), ("Access-Control-Expose-Headers", "Link, X-Total-Count")]
    if links:
        headers.insert(0, ("Link", ",".join(links)))
    return paged_entry(items[start:end], render, lm_default, kind, headers)


def gt_404(req, kind="not_found"):
    return Reply(404, {"errors": [], "message": "The target couldn't be found.", "url": f"{req.site.web}/api/swagger"},
                 kind=kind)


def route_gitea(app: Emulator, req: Request):
    seg, world, site = req.seg, app.world, req.site
    n = len(seg)
    head = seg[0] if seg else ""
    if head == "version" and n == 1:
        return Entry(dumps({"version": "1.22.0"}), WORLD_END, "version")
    if head == "user" and n == 1:
        if req.cred is None:
            return Reply(401, {"message": "token is required", "url": f"{site.web}/api/swagger"}, kind="auth_user")
        ns = world.owner(req.account)
        if ns is None or ns.kind != "user":
            ns = _phantom_user(req.account)
        return Entry(dumps(gt_user(ns, site)), ns.updated, "auth_user")
    if head in ("users", "orgs") and n in (2, 3):
        ns = world.owner(seg[1])
        if ns is None or (head == "orgs" and ns.kind != "org"):
            return gt_404(req, "repo_list" if n == 3 else "owner")
        if n == 2:
            return Entry(dumps(gt_org(ns, site) if head == "orgs" else gt_user(ns, site)), ns.updated, "owner")
        if seg[2] == "repos":
            rel = relation(ns, req.account)
            items = world.listing(ns, sees_private(rel), False, "id", False, None)
            return gt_paginate(req, items, lambda r: gt_repo(r, site, rel), ns.updated, "repo_list")
    if head == "repos" and n >= 3:
        ns = world.owner(seg[1])
        repo = world.repo_in(ns, seg[2]) if ns else None
        if repo is None or (repo.private and not sees_private(relation(ns, req.account))):
            return gt_404(req, "repo")
        rel = relation(ns, req.account)
        if n == 3:
            return Entry(dumps(gt_repo(repo, site, rel)), repo.updated, "repo")
        if n == 4 and seg[3] == "branches":
            return gt_paginate(req, world.branches(repo), lambda b: gt_branch(repo, b, site, world), repo.pushed,
                               "branches")
    return gt_404(req)


ROUTERS = {"github": route_github, "gitlab": route_gitlab, "bitbucket": route_bitbucket, "gitea": route_gitea}


# ---------------------------------------------------------------------------
# Special owners: pathological responses for hardening tests
# ---------------------------------------------------------------------------


def special_reply(name):
    return Reply(200, b"", kind="special", stream=SPECIAL_STREAMS[name])


def _special_head(req, status, length, rate_headers):
    lines = [f"HTTP/1.1 {status} {REASONS[status]}\r\n", date_line(time.time()), f"Content-Type: {JSON_TYPE}\r\n",
             f"Content-Length: {length}\r\n"]
    for k, v in rate_headers:
        lines.append(f"{k}: {v}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1")


def _sample_repo_json(app, req):
    sample = app.world.sample
    return gh_repo(sample, req.site, relation(sample.owner, req.account))


def stream_oversize(app, req, rate_headers):
    """A valid JSON array of exactly `oversize_bytes`, written in chunks (never built whole)."""
    total = app.live["oversize_bytes"]
    app._count_status(200, None)
    item = dumps(_sample_repo_json(app, req)) + b","
    # [ item, item, …, "padding" ]  is  1 + k*len(item) + 2 + pad + 1 bytes (total >= 4)
    k = (total - 4) // len(item)
    pad = total - 4 - k * len(item)
    h = req.h
    h.response_started = True
    h.wfile.write(_special_head(req, 200, total, rate_headers))
    h.wfile.write(b"[")
    per_block = max(1, (1 << 20) // len(item))
    block = item * per_block
    left = k
    while left >= per_block:
        h.wfile.write(block)
        left -= per_block
    if left:
        h.wfile.write(item * left)
    h.wfile.write(b'"' + b"x" * pad + b'"]')


def stream_badutf8(app, req, rate_headers):
    items = [_sample_repo_json(app, req) for _ in range(3)]
    for i, item in enumerate(items):
        item["id"] += i
        item["description"] = "@@BADUTF8@@"
    body = dumps(items).replace(b"@@BADUTF8@@", b"broken \xff\xfe bytes \xc3\x28 and a lone \xed\xa0\x80 surrogate")
    app._count_status(200, None)
    req.h.response_started = True
    req.h.wfile.write(_special_head(req, 200, len(body), rate_headers) + body)


def stream_nested(app, req, rate_headers):
    depth = 100_000
    body = b"[" * depth + b"]" * depth
    app._count_status(200, None)
    req.h.response_started = True
    req.h.wfile.write(_special_head(req, 200, len(body), rate_headers) + body)


def stream_hugeheader(app, req, rate_headers):
    """A status line, then a header line of 1 MiB that never ends, then close."""
    h = req.h
    h.response_started = True
    h.wfile.write(f"HTTP/1.1 200 OK\r\n{date_line(time.time())}X-Huge: ".encode())
    h.wfile.write(b"a" * (1 << 20))
    raise DropConnection()


def _client_gone(h, timeout) -> bool:
    """Wait up to `timeout`; True when the client closed its end of the connection."""
    try:
        ready, _, _ = select.select([h.connection], [], [], timeout)
        if ready:
            return h.connection.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True
    return False


def stream_hang(app, req, rate_headers):
    """Read the request, never answer: until the client goes away or the emulator stops."""
    req.h.close_connection = True
    while not app.shutdown.is_set():
        if _client_gone(req.h, 0.5):
            break
    raise DropConnection()


def stream_slowbody(app, req, rate_headers):
    """Headers with a large Content-Length, then one byte per second until the client goes away."""
    h = req.h
    h.close_connection = True
    h.response_started = True
    app._count_status(200, None)
    h.wfile.write(_special_head(req, 200, app.live["slowbody_bytes"], rate_headers))
    h.wfile.write(b"[")
    sent = 1
    while sent < app.live["slowbody_bytes"] and not app.shutdown.is_set():
        if _client_gone(h, 1.0):
            break
        h.wfile.write(b" ")
        sent += 1
    raise DropConnection()


def _page_with_links(app, req, rate_headers, count, links):
    """`count` repositories (ids from the page number) with a Link header of (rel, page) pairs."""
    page = max(1, int_param(req.q.get("page"), 1))
    items = []
    for i in range(count):
        item = _sample_repo_json(app, req)
        item["id"] = page * 1000 + i
        item["name"] = f"page{page}-{i}"
        item["full_name"] = f"x/page{page}-{i}"
        items.append(item)
    body = dumps(items)
    base = f"{SCHEME}://{req.site.host}{req.path}?"
    link = ", ".join(f'<{base}{replace_query_param(req.query, {"page": n})}>; rel="{rel}"' for rel, n in links(page))
    app._count_status(200, None)
    req.h.response_started = True
    req.h.wfile.write(_special_head(req, 200, len(body), list(rate_headers) + ([("Link", link)] if link else []))
                      + body)


def stream_lyinglast(app, req, rate_headers):
    """Two pages of 3 repositories whose Link claims a last page of 1,000,000; every later page is []."""
    _page_with_links(app, req, rate_headers, 3 if int_param(req.q.get("page"), 1) <= 2 else 0,
                     lambda page: [("next", page + 1), ("last", 1_000_000)])


def stream_nextloop(app, req, rate_headers):
    """Pages of one repository whose next links go 1, 2, 3, then back to 2, for ever; no last."""
    _page_with_links(app, req, rate_headers, 1, lambda page: [("next", page + 1 if page < 3 else 2)])


SPECIAL_STREAMS = {"x-oversize": stream_oversize, "x-badutf8": stream_badutf8, "x-nested": stream_nested,
                   "x-hugeheader": stream_hugeheader, "x-hang": stream_hang, "x-slowbody": stream_slowbody,
                   "x-lyinglast": stream_lyinglast, "x-nextloop": stream_nextloop}


# ---------------------------------------------------------------------------
# HTTP server plumbing
# ---------------------------------------------------------------------------


class Handler(http.server.BaseHTTPRequestHandler):
    """Keep-alive HTTP/1.1 connection handler.

    handle_one_request is replaced: the stdlib version parses headers with the
    email package, which costs more than everything else a cached response
    needs.  Headers here are a plain dict keyed by lower-case name (repeated
    headers joined with ", ").
    """

    protocol_version = "HTTP/1.1"
    server_version = "gitfleet-emulator"
    disable_nagle_algorithm = True  # header and body may go out in two writes
    timeout = 300                   # an idle keep-alive connection is dropped after this
    MAX_LINE = 65536
    MAX_HEADERS = 100

    def log_message(self, format, *args):  # noqa: A002 - access/protocol logging is off
        pass

    def handle_one_request(self):
        self.close_connection = True
        try:
            line = self.rfile.readline(self.MAX_LINE + 1)
            if not line:
                return
            if len(line) > self.MAX_LINE:
                return self._refuse(414, "URI Too Long")
            parts = line.decode("latin-1").split()
            if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                return self._refuse(400, "Bad Request")
            self.command, self.path, self.request_version = parts
            self.requestline = line.decode("latin-1").rstrip("\r\n")
            headers = {}
            while True:
                line = self.rfile.readline(self.MAX_LINE + 1)
                if line in (b"\r\n", b"\n"):
                    break
                if not line:
                    return  # the client went away mid-request
                if len(line) > self.MAX_LINE or len(headers) >= self.MAX_HEADERS:
                    return self._refuse(431, "Request Header Fields Too Large")
                name, sep, value = line.decode("latin-1").partition(":")
                if not sep or not name or name != name.strip():
                    return self._refuse(400, "Bad Request")
                name, value = name.lower(), value.strip()
                headers[name] = f"{headers[name]}, {value}" if name in headers else value
            self.headers = headers
            conn = headers.get("connection", "").lower()
            if self.request_version == "HTTP/1.0":
                self.close_connection = "keep-alive" not in conn
            else:
                self.close_connection = "close" in conn
            self.server.app.handle(self, self.command)
        except TimeoutError:
            self.close_connection = True

    def _refuse(self, status, reason):
        body = dumps({"message": reason})
        self.wfile.write(f"HTTP/1.1 {status} {reason}\r\n{date_line(time.time())}Content-Type: {JSON_TYPE}\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        self.close_connection = True


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512
    allow_reuse_address = True

    def __init__(self, address, app, tls=None):
        self.app = app
        self.tls = tls  # an ssl.SSLContext, or None for plain HTTP
        super().__init__(address, Handler)
        host, port = self.server_address[:2]
        self.host_port = f"{host}:{port}"

    def get_request(self):
        sock, addr = super().get_request()
        if self.tls:
            # The handshake happens in the handler's thread (finish_request),
            # so a slow client cannot hold up accepting others.
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def finish_request(self, request, client_address):
        if self.tls:
            try:
                request.settimeout(10)
                request.do_handshake()
                request.settimeout(None)
            except (ssl.SSLError, OSError):
                return  # a client that refuses our certificate: nothing to serve
        super().finish_request(request, client_address)

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return
        sys.stderr.write(f"emulator: connection error from {client_address}\n{traceback.format_exc()}")
        sys.stderr.flush()


def parent_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a dead parent not yet reaped is a zombie: treat it as gone
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def write_atomically(path, text):
    """Write via a temporary name and rename, so a reader never sees a partial file."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description="gitfleet provider emulator (GitHub, GitLab, Bitbucket, Gitea)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--scenario", help="scenario JSON file")
    ap.add_argument("--scenario-json", help="scenario JSON text")
    ap.add_argument("--port-file", help="write the listening port here (atomically)")
    ap.add_argument("--pid-file", help="write this process's pid here (atomically, before the port file)")
    ap.add_argument("--parent-pid", type=int, help="exit when this process is gone")
    ap.add_argument("--quiet", action="store_true", help="no informational output besides the listening line")
    ap.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    ap.add_argument("--tls-key", help="the certificate's private key (PEM)")
    ap.add_argument("--no-gzip", action="store_true",
                    help="answer every request uncompressed, whatever Accept-Encoding says (scenario gzip: false)")
    args = ap.parse_args(argv)

    try:
        raw = {}
        if args.scenario:
            with open(args.scenario, encoding="utf-8") as f:
                raw = json.load(f)
        if args.scenario_json:
            raw = {**raw, **json.loads(args.scenario_json)}
        if args.no_gzip:
            raw["gzip"] = False
        sc = normalize_scenario(raw)
        apply_clock_offset(sc["clock_offset"])
        app = Emulator(sc)
        apply_topics_per_repo(app.world, sc["topics_per_repo"])
    except (OSError, ValueError, ScenarioError) as exc:
        sys.stderr.write(f"emulator: bad scenario: {exc}\n")
        return 2

    tls = None
    if args.tls_cert:
        global SCHEME
        SCHEME = "https"
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(args.tls_cert, args.tls_key)
    try:
        server = Server((args.host, args.port), app, tls)
    except OSError as exc:
        sys.stderr.write(f"emulator: cannot listen on {args.host}:{args.port}: {exc}\n")
        return 2

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True,
                     name="emulator-accept").start()

    port = server.server_address[1]
    if args.pid_file:  # the launcher's $! may be a wrapper's pid, not ours
        write_atomically(args.pid_file, f"{os.getpid()}\n")
    if args.port_file:
        write_atomically(args.port_file, f"{port}\n")
    print(f"emulator listening on {SCHEME}://{args.host}:{port}", flush=True)

    while not stop.is_set():
        stop.wait(1.0)
        if args.parent_pid and not parent_alive(args.parent_pid):
            if not args.quiet:
                print(f"emulator: parent {args.parent_pid} is gone, exiting", flush=True)
            break
    app.shutdown.set()
    server.shutdown()
    server.server_close()
    sys.stdout.flush()
    sys.stderr.flush()
    # Handler threads are daemons and may sit in a hung or slow response:
    # leave without waiting for them.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
