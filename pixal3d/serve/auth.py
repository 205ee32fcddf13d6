"""The REST server's access control: API keys, job ownership and per-key rate limits (no web framework here).

Keys come from the environment variable `PIXAL3D_API_KEYS` (comma-separated) and/or a key file (one key per line;
blank lines and `#` comments ignored). A client sends `Authorization: Bearer <key>` on every route but `/healthz`.
The server never keeps a key itself: it keeps `sha256(key)` and names the key's owner by the first 12 hex digits
of that digest (`key-1a2b3c4d5e6f`), which is what the logs and job records show. A job belongs to the owner that
made it; another key sees it as unknown (404), so job ids leak nothing across keys.

Without any key the server runs open (every request is the owner `ANONYMOUS`); `check_exposure` refuses that on a
non-loopback address unless the operator says `insecure_no_auth`.

Rate limits are token buckets per owner: `jobs_per_minute` for `POST /v1/generate` (each job costs model time),
`requests_per_minute` for every authenticated request (polling included); and per client address,
`auth_failures_per_minute` for requests with a missing or wrong key (slows down key guessing). A refused request
gets 429 with `Retry-After` in whole seconds.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pixal3d.errors import InputError

logger = logging.getLogger(__name__)

KEYS_ENV = "PIXAL3D_API_KEYS"
"""Environment variable holding comma-separated API keys."""

ANONYMOUS = "anonymous"
"""The owner of every request on a server without API keys."""

MIN_KEY_LENGTH = 16
"""Shortest key accepted: a key is a secret, not a password to remember (e.g. `openssl rand -hex 32`)."""


def owner_name(key: str) -> str:
    """The name a key's jobs and log lines carry: `key-` + 12 hex digits of its SHA-256 (never the key)."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class ApiKeys:
    """The accepted keys, stored as `sha256(key) -> owner name`."""

    digests: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_keys(cls, keys: Iterable[str]) -> ApiKeys:
        """Build from plain keys; a key shorter than `MIN_KEY_LENGTH` or holding whitespace raises `InputError`."""
        digests = {}
        for key in keys:
            if len(key) < MIN_KEY_LENGTH or any(c.isspace() for c in key):
                raise InputError(f"an API key must be at least {MIN_KEY_LENGTH} characters without whitespace, got "
                                 f"one of {len(key)} characters; make one with: openssl rand -hex 32")
            digests[hashlib.sha256(key.encode()).hexdigest()] = owner_name(key)
        return cls(digests)

    @property
    def enabled(self) -> bool:
        return bool(self.digests)

    def owner(self, key: str | None) -> str | None:
        """The owner of a presented key, or None when it is not one of ours (or none was sent).

        The lookup compares SHA-256 digests in a dict, so its time does not depend on how much of a guess matched.
        """
        if key is None:
            return None
        return self.digests.get(hashlib.sha256(key.encode()).hexdigest())


def load_api_keys(key_file: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None) -> ApiKeys:
    """The keys of `PIXAL3D_API_KEYS` plus those of `key_file` (one per line, `#` comments); maybe none.

    Raises:
        InputError: the key file is missing or unreadable, or a key is too short.
    """
    environ = os.environ if environ is None else environ
    keys = [k.strip() for k in environ.get(KEYS_ENV, "").split(",") if k.strip()]
    if key_file is not None:
        path = Path(key_file)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise InputError(f"cannot read the API key file {str(path)!r} ({err}); one key per line") from err
        keys += [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        if path.stat().st_mode & 0o077:
            logger.warning("the API key file %s is readable by other users; chmod 600 it", path)
    return ApiKeys.from_keys(keys)


def is_loopback(host: str) -> bool:
    """Whether `host` only listens on this machine (127.0.0.0/8, ::1 or "localhost")."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def check_exposure(host: str, keys: ApiKeys, insecure_no_auth: bool) -> None:
    """Refuse to serve without keys on a non-loopback address, unless `insecure_no_auth` (then warn).

    Raises:
        InputError: `host` is reachable from other machines, no key is configured, and no explicit opt-out.
    """
    if keys.enabled or is_loopback(host):
        return
    if not insecure_no_auth:
        raise InputError(
            f"refusing to serve on {host} without an API key: anyone who reaches it could run jobs and read "
            f"results. Set {KEYS_ENV}=<key>[,<key>...] or --api-key-file FILE (clients send 'Authorization: "
            "Bearer <key>'), bind to 127.0.0.1, or pass --insecure-no-auth if something in front of it "
            "authenticates")
    logger.warning("serving on %s WITHOUT authentication (--insecure-no-auth): anyone who reaches this address "
                   "can run jobs and download every result", host)


@dataclass(frozen=True)
class RateLimit:
    """Per-owner request budgets (token buckets: `burst` at once, refilled at the per-minute rate); 0 = no limit."""

    jobs_per_minute: float = 30.0
    """`POST /v1/generate` requests per minute and owner."""
    requests_per_minute: float = 600.0
    """All authenticated requests per minute and owner (status polls included)."""
    burst: int = 10
    """Jobs an owner may submit at once after a quiet spell; requests get `4 * burst` + a minute's tenth."""
    auth_failures_per_minute: float = 30.0
    """Requests without a valid key per minute and client address (burst: half a minute's); more get 429."""

    def __post_init__(self) -> None:
        rates = (self.jobs_per_minute, self.requests_per_minute, self.auth_failures_per_minute)
        if min(rates) < 0 or self.burst < 1:
            raise InputError(f"rate limits must be >= 0 per minute and burst >= 1, got {self}")


class RateLimited(Exception):
    """An owner is over its rate limit (HTTP 429); `retry_after` in seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TokenBuckets:
    """One token bucket per owner: `capacity` tokens, refilled at `per_minute / 60` tokens per second."""

    def __init__(self, per_minute: float, capacity: float, what: str, max_owners: int = 10_000,
                 per: str = "API key") -> None:
        self.rate, self.capacity, self.what, self.max_owners = per_minute / 60.0, capacity, what, max_owners
        self.per = per
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # owner -> (tokens, monotonic time of that count)

    def take(self, owner: str) -> None:
        """Spend one token of `owner`'s bucket; raise `RateLimited` when it is empty (a rate of 0 never limits)."""
        if self.rate <= 0:
            return
        now = time.monotonic()
        with self._lock:
            tokens, then = self._buckets.get(owner, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - then) * self.rate)
            if tokens < 1.0:
                wait = math.ceil((1.0 - tokens) / self.rate)
                self._buckets[owner] = (tokens, now)
                raise RateLimited(f"rate limit: at most {self.rate * 60:g} {self.what} per minute per {self.per}; "
                                  f"retry in {wait} s", wait)
            if len(self._buckets) >= self.max_owners and owner not in self._buckets:
                self._buckets.clear()  # bounded memory; keys are few, so this only happens under odd load
            self._buckets[owner] = (tokens - 1.0, now)


class RateLimiter:
    """The two budgets of `RateLimit`, per owner."""

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self.jobs = TokenBuckets(limit.jobs_per_minute, limit.burst, "jobs")
        self.requests = TokenBuckets(limit.requests_per_minute,
                                     4 * limit.burst + limit.requests_per_minute / 10, "requests")
        failures = limit.auth_failures_per_minute
        self.auth_failures = TokenBuckets(failures, max(1.0, failures / 2), "requests without a valid key",
                                          per="client address")
