"""Console sessions as pure decisions: cookie secrets, their row ids, validity, CSRF tokens
and the sign-in redirect target. Nothing here does I/O or reads the clock.

A session is valid while all hold: its stage is ``active``; the account is enabled; the row's
epoch equals the account's ``session_epoch`` (disable and "log out everywhere" bump it); it was
used within the idle timeout; it is younger than the absolute timeout. The enrolment stage has
its own short lifetime (:data:`ENROL_SECONDS`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import urlsplit

SESSION_COOKIE: Final = "__Host-secondline"
LOGIN_COOKIE: Final = "__Host-secondline-login"
CSRF_FIELD: Final = "_csrf"
CSRF_HEADER: Final = "X-CSRF-Token"
# A first TOTP must be confirmed within ten minutes of the password check.
ENROL_SECONDS: Final = 600
# last_seen_at is written at most once a minute: a write per request would serialise the
# console on SQLite, and a minute is far below any idle timeout worth configuring.
TOUCH_SECONDS: Final = 60
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
_SECRET_RE: Final = re.compile(r"^[A-Za-z0-9_-]{43}$")
_NEXT_RE: Final = re.compile(r"^/console/[A-Za-z0-9/_.?=&%+-]{0,300}$")

# enrol: setting up the authenticator; code: signed in at the OpenID provider without
# multi-factor, the authenticator code still to come.
Stage = Literal["active", "enrol", "code"]
Invalid = Literal["stage", "disabled", "epoch", "idle", "expired", "enrol_expired"]


def new_secret() -> str:
    """A fresh cookie or CSRF secret: 256 random bits, URL-safe base64 without padding."""
    return secrets.token_urlsafe(32)


def session_id_of(cookie_value: str | None) -> str | None:
    """The row id (SHA-256 hex) of a cookie value, or None when it is not one of ours."""
    if not cookie_value or not _SECRET_RE.fullmatch(cookie_value):
        return None
    return hashlib.sha256(cookie_value.encode()).hexdigest()


def tokens_match(expected: str, given: str | None) -> bool:
    """Compare a CSRF token in constant time; a missing or oversized token never matches."""
    if not given or len(given) > 128 or not expected:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


@dataclass(frozen=True)
class SessionLimits:
    idle_seconds: int
    max_seconds: int


@dataclass(frozen=True)
class SessionFacts:
    """What the validity decision reads: the row and its account."""

    stage: str
    epoch: int
    created_at: dt.datetime
    last_seen_at: dt.datetime
    user_disabled: bool
    user_epoch: int


def why_invalid(
    facts: SessionFacts, limits: SessionLimits, now: dt.datetime, *, stage: Stage = "active"
) -> Invalid | None:
    """Why the session cannot be used for ``stage`` now, or None when it can."""
    if facts.stage != stage:
        return "stage"
    if facts.user_disabled:
        return "disabled"
    if facts.epoch != facts.user_epoch:
        return "epoch"
    age = (now - facts.created_at).total_seconds()
    if stage in ("enrol", "code"):
        return "enrol_expired" if age > ENROL_SECONDS else None
    if age > limits.max_seconds:
        return "expired"
    if (now - facts.last_seen_at).total_seconds() > limits.idle_seconds:
        return "idle"
    return None


def needs_touch(last_seen_at: dt.datetime, now: dt.datetime) -> bool:
    return (now - last_seen_at).total_seconds() >= TOUCH_SECONDS


def safe_next(target: str | None) -> str:
    """Where to go after sign-in: a console path of ours, never another site or scheme."""
    default = "/console/"
    if not target or not _NEXT_RE.fullmatch(target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or "//" in parts.path or "/../" in parts.path:
        return default
    return target


def clip_user_agent(text: str | None) -> str:
    """A User-Agent kept for the session list: printable ASCII, at most 200 characters."""
    return "".join(c for c in (text or "") if " " <= c <= "~")[:200]
