"""GitHub Apps for the provider emulator (spec/support/emulator.py).

An app holds an RSA public key. Its JWT (RS256) is verified for real: the
signature against the key (PKCS#1 v1.5 over SHA-256, computed here with
Python integers), `iss` against the app id, `iat` not in the future and
`exp` not past and at most 10 minutes after `iat`. A bad JWT gets GitHub's
401. With a good one the app lists its installations (paginated) and
creates installation access tokens, which expire after the app's
`token_lifetime` seconds and each draw on the installation's own budget.

Scenario:
    "apps": [{"id": 101, "public_key": "-----BEGIN PUBLIC KEY-----...",
              "token_lifetime": 3600,
              "installations": [{"id": 1001, "account": "acme"}, ...]}]

Python standard library only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time

# DER of DigestInfo for SHA-256 (RFC 8017, 9.2 note 1), before the hash.
SHA256_PREFIX = bytes.fromhex("3031300d060960864801650304020105000420")
MAX_JWT_LIFETIME = 600
CLOCK_SKEW = 60  # GitHub tolerates a little drift; iat beyond it is "in the future"


class AppError(Exception):
    """A scenario mistake."""


def _der_item(data: bytes, pos: int):
    """(tag, content start, content end) of the DER item at pos."""
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        length = int.from_bytes(data[pos:pos + n], "big")
        pos += n
    return tag, pos, pos + length


def _der_children(data: bytes, start: int, end: int):
    out = []
    while start < end:
        tag, s, e = _der_item(data, start)
        out.append((tag, s, e))
        start = e
    return out


def rsa_public_key(pem: str):
    """(n, e) from a PEM public key: SubjectPublicKeyInfo or PKCS#1."""
    lines = [ln.strip() for ln in pem.strip().splitlines()]
    if len(lines) < 3 or not lines[0].startswith("-----BEGIN ") or not lines[-1].startswith("-----END "):
        raise AppError("public_key must be a PEM block")
    der = base64.b64decode("".join(lines[1:-1]))
    tag, s, e = _der_item(der, 0)
    kids = _der_children(der, s, e)
    if lines[0] == "-----BEGIN PUBLIC KEY-----":
        # SEQUENCE { AlgorithmIdentifier, BIT STRING { RSAPublicKey } }
        _, bs, be = kids[1]
        tag, s, e = _der_item(der, bs + 1)  # skip the unused-bits byte
        kids = _der_children(der, s, e)
    (_, ns, ne), (_, es, ee) = kids[0], kids[1]
    return int.from_bytes(der[ns:ne], "big"), int.from_bytes(der[es:ee], "big")


def b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def rs256_valid(n: int, e: int, signed: bytes, signature: bytes) -> bool:
    k = (n.bit_length() + 7) // 8
    if len(signature) != k:
        return False
    s = int.from_bytes(signature, "big")
    if s >= n:
        return False
    em = pow(s, e, n).to_bytes(k, "big")
    digest = SHA256_PREFIX + hashlib.sha256(signed).digest()
    expected = b"\x00\x01" + b"\xff" * (k - 3 - len(digest)) + b"\x00" + digest
    return em == expected


class App:
    def __init__(self, spec: dict, what: str):
        if not isinstance(spec, dict):
            raise AppError(f"{what} must be an object")
        unknown = set(spec) - {"id", "public_key", "token_lifetime", "installations"}
        if unknown:
            raise AppError(f"{what}: unknown keys {sorted(unknown)}")
        self.id = spec.get("id")
        if not isinstance(self.id, int) or self.id <= 0:
            raise AppError(f"{what}.id must be a positive integer")
        self.n, self.e = rsa_public_key(str(spec.get("public_key", "")))
        self.token_lifetime = spec.get("token_lifetime", 3600)
        if not isinstance(self.token_lifetime, (int, float)) or not 1 <= self.token_lifetime <= 86400:
            raise AppError(f"{what}.token_lifetime must be 1 to 86400 seconds")
        self.installations = []
        for i, inst in enumerate(spec.get("installations") or []):
            if not isinstance(inst, dict) or not isinstance(inst.get("id"), int) or not isinstance(
                    inst.get("account"), str):
                raise AppError(f"{what}.installations[{i}] must be {{id: int, account: str}}")
            self.installations.append({"id": inst["id"], "account": inst["account"]})


class Apps:
    """Every app of a scenario, the installation tokens issued, and counters."""

    def __init__(self, specs, first_index: int):
        self.apps = {}
        self.by_installation = {}  # installation id -> (app, installation, token entry)
        self.token_entries = []    # one credential per installation: its own budget and stats
        for i, spec in enumerate(specs or []):
            app = App(spec, f"apps[{i}]")
            if app.id in self.apps:
                raise AppError(f"apps[{i}]: duplicate app id {app.id}")
            self.apps[app.id] = app
            for inst in app.installations:
                if inst["id"] in self.by_installation:
                    raise AppError(f"apps[{i}]: installation {inst['id']} belongs to two apps")
                entry = {"provider": "github", "account": f"installation-{inst['id']}",
                         "index": first_index + len(self.token_entries), "installation": inst["id"],
                         "covers": inst["account"]}
                self.token_entries.append(entry)
                self.by_installation[inst["id"]] = (app, inst, entry)
        self.issued = {}  # token text -> (entry, expires_at)
        self.lock = threading.Lock()
        self.counters = {"jwt_ok": 0, "jwt_refused": 0, "tokens_issued": 0, "expired_token_used": 0,
                         "installation_lists": 0}

    def reset_counters(self):
        with self.lock:
            for k in self.counters:
                self.counters[k] = 0

    # -- authentication ----------------------------------------------------

    def verify_jwt(self, raw_authorization):
        """The app a JWT proves, or (None, message) as GitHub would answer."""
        scheme, _, value = (raw_authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or value.count(".") != 2:
            return None, "A JSON web token could not be decoded"
        head_b64, body_b64, sig_b64 = value.strip().split(".")
        try:
            header = json.loads(b64url_decode(head_b64))
            claims = json.loads(b64url_decode(body_b64))
            signature = b64url_decode(sig_b64)
        except (ValueError, UnicodeDecodeError):
            return None, "A JSON web token could not be decoded"
        if not isinstance(header, dict) or header.get("alg") != "RS256" or not isinstance(claims, dict):
            return None, "A JSON web token could not be decoded"
        try:
            app = self.apps.get(int(claims.get("iss")))
        except (TypeError, ValueError):
            app = None
        if app is None:
            return None, "Integration not found"
        if not rs256_valid(app.n, app.e, (head_b64 + "." + body_b64).encode(), signature):
            return None, "A JSON web token could not be decoded"
        now = time.time()
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int) or iat > now + CLOCK_SKEW:
            return None, "'Issued at' claim ('iat') must be an Integer representing a time in the past."
        if not isinstance(exp, int) or exp <= now:
            return None, "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires."
        if exp - iat > MAX_JWT_LIFETIME:
            return None, "'Expiration time' claim ('exp') is too far in the future."
        return app, None

    def installation_cred(self, text):
        """The token entry of an issued installation token; 'expired' when past its time; None if unknown."""
        with self.lock:
            got = self.issued.get(text)
            if got is None:
                return None
            entry, expires_at = got
            if time.time() >= expires_at:
                self.counters["expired_token_used"] += 1
                return "expired"
            return entry

    # -- routes ------------------------------------------------------------

    def handle(self, method, seg, authorization, page, per_page, link_base):
        """(status, body, extra headers, kind) for /app/... requests."""
        app, problem = self.verify_jwt(authorization)
        if app is None:
            with self.lock:
                self.counters["jwt_refused"] += 1
            return 401, {"message": problem, "documentation_url": "https://docs.github.com/rest"}, [], "app_auth"
        with self.lock:
            self.counters["jwt_ok"] += 1
        if method == "GET" and seg == ["app"]:
            return 200, {"id": app.id, "slug": f"app-{app.id}", "name": f"App {app.id}"}, [], "app"
        if method == "GET" and seg == ["app", "installations"]:
            with self.lock:
                self.counters["installation_lists"] += 1
            items = app.installations
            per_page = 30 if per_page < 1 else min(per_page, 100)
            last = max(1, -(-len(items) // per_page))
            start = (page - 1) * per_page
            body = [{"id": i["id"], "app_id": app.id, "target_type": "Organization",
                     "account": {"login": i["account"], "type": "Organization"},
                     "repository_selection": "all", "permissions": {"metadata": "read"}}
                    for i in items[start:start + per_page]]
            links = []
            if page < last:
                links.append(f'<{link_base}?per_page={per_page}&page={page + 1}>; rel="next"')
                links.append(f'<{link_base}?per_page={per_page}&page={last}>; rel="last"')
            return 200, body, ([("Link", ", ".join(links))] if links else []), "app_installations"
        if method == "POST" and len(seg) == 4 and seg[:2] == ["app", "installations"] and seg[3] == "access_tokens":
            try:
                inst_id = int(seg[2])
            except ValueError:
                inst_id = -1
            found = self.by_installation.get(inst_id)
            if found is None or found[0] is not app:
                return 404, {"message": "Not Found"}, [], "app_token"
            _, inst, entry = found
            text = "ghs_" + secrets.token_hex(18)
            expires_at = time.time() + app.token_lifetime
            with self.lock:
                self.issued[text] = (entry, expires_at)
                self.counters["tokens_issued"] += 1
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires_at))
            return 201, {"token": text, "expires_at": stamp, "permissions": {"metadata": "read"},
                         "repository_selection": "all"}, [], "app_token"
        return 404, {"message": "Not Found"}, [], "app"
