"""Signatures of the webhook connector, both ways (pure: the caller passes ``now``).

A signed request carries ``Secondline-Signature: t=<unix seconds>,v1=<hex>``, where the hex
is HMAC-SHA256 under the shared secret of ``<t>.<body>`` (the timestamp, a dot, the raw body
bytes), the scheme Stripe uses. Signing the timestamp with the body lets the receiver refuse
a captured request replayed later: a signature older than :data:`REPLAY_WINDOW` seconds is
refused, and so is one more than :data:`CLOCK_SKEW` seconds in the future (the sender's
clock is wrong). Several ``v1=`` values may be present (while a secret is being changed);
one that matches is enough. Comparisons take constant time.

SignatureError                 a request's signature is refused (401)
├── SignatureMissing           no header, or one that does not parse
├── SignatureMismatch          no v1 value matches: another secret, or a changed body
├── SignatureExpired           older than the replay window
└── SignatureFromFuture        further ahead than the clock-skew tolerance
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

HEADER: Final = "Secondline-Signature"
SCHEME: Final = "v1"
REPLAY_WINDOW: Final = 300
CLOCK_SKEW: Final = 60
HEADER_MAX: Final = 1000
SECRET_MIN: Final = 32


class SignatureError(ValueError):
    code = "signature_invalid"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SignatureMissing(SignatureError):
    code = "signature_missing"


class SignatureMismatch(SignatureError):
    code = "signature_mismatch"


class SignatureExpired(SignatureError):
    code = "signature_expired"


class SignatureFromFuture(SignatureError):
    code = "clock_skew"


def digest(secret: str, timestamp: int, body: bytes) -> str:
    signed = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The header value for ``body`` sent at ``timestamp``."""
    return f"t={timestamp},{SCHEME}={digest(secret, timestamp, body)}"


def parse(header: str) -> tuple[int, list[str]]:
    """The timestamp and the v1 values of a header; raises SignatureMissing."""
    if not header or len(header) > HEADER_MAX:
        raise SignatureMissing(
            f"the request has no usable {HEADER} header; sign it as `t=<unix time>,v1=<hex "
            "HMAC-SHA256 of '<t>.<body>' under the shared secret>` (docs/connectors.md)"
        )
    timestamp: int | None = None
    values: list[str] = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and value.isdigit() and len(value) <= 12:
            timestamp = int(value)
        elif key == SCHEME and len(value) == 64:
            values.append(value.lower())
    if timestamp is None or not values:
        raise SignatureMissing(
            f"the {HEADER} header must hold t=<unix time> and at least one {SCHEME}=<64 hex "
            "digits> (docs/connectors.md)"
        )
    return timestamp, values


def verify(secret: str, header: str, body: bytes, now: float) -> int:
    """Check a request's signature; its timestamp, or a SignatureError saying what is wrong.

    The signature is checked before the time, so a request with another secret learns
    nothing about our clock."""
    timestamp, values = parse(header)
    expected = digest(secret, timestamp, body)
    if not any(hmac.compare_digest(expected, value) for value in values):
        raise SignatureMismatch(
            "the signature does not match: the sender uses another secret than the "
            "connector's credential file, or signed other bytes than it sent"
        )
    if timestamp < now - REPLAY_WINDOW:
        raise SignatureExpired(
            f"the signature is {int(now - timestamp)} s old, more than the {REPLAY_WINDOW} s "
            "replay window: sign each try afresh, and check the sender's clock"
        )
    if timestamp > now + CLOCK_SKEW:
        raise SignatureFromFuture(
            f"the signature is dated {int(timestamp - now)} s ahead of the broker's clock, "
            f"more than the {CLOCK_SKEW} s tolerated: set the sender's clock right (NTP)"
        )
    return timestamp


def check_secret(secret: str) -> str:
    """A shared secret long enough for HMAC-SHA256; raises ValueError saying what to do."""
    if len(secret) < SECRET_MIN:
        raise ValueError(
            f"the webhook secret must be at least {SECRET_MIN} characters; make one with "
            "`openssl rand -hex 32 > webhook.secret`"
        )
    return secret
