"""Webhook signatures (pure): the header we send, what the inbound endpoint accepts, and the
receiver docs/connectors.md shows, executed as written against our signatures."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from broker.connectors.webhook_signing import (
    SignatureExpired,
    SignatureFromFuture,
    SignatureMismatch,
    SignatureMissing,
    check_secret,
    sign,
    verify,
)

SECRET = "0123456789abcdef" * 4
BODY = b'{"id":"evt-1","type":"ticket.escalated"}'
NOW = 1_800_000_000
DOCS = Path(__file__).resolve().parents[2] / "docs" / "connectors.md"
MARK = "<!-- webhook-receiver -->"


def test_a_signature_is_stripes_scheme_over_timestamp_and_body() -> None:
    """`t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, checked in constant time."""
    header = sign(SECRET, NOW, BODY)
    assert re.fullmatch(r"t=1800000000,v1=[0-9a-f]{64}", header)
    assert verify(SECRET, header, BODY, NOW + 10) == NOW
    # While a secret is being changed a sender may sign with both; one match is enough.
    both = f"{header},v1={'0' * 64}"
    assert verify(SECRET, both, BODY, NOW) == NOW


@pytest.mark.parametrize(
    ("header", "body", "now", "error", "says"),
    [
        ("", BODY, NOW, SignatureMissing, "no usable Secondline-Signature"),
        ("t=abc,v1=00", BODY, NOW, SignatureMissing, "at least one v1"),
        (sign("x" * 32, NOW, BODY), BODY, NOW, SignatureMismatch, "another secret"),
        (sign(SECRET, NOW, BODY), BODY + b" ", NOW, SignatureMismatch, "other bytes"),
        (sign(SECRET, NOW, BODY), BODY, NOW + 301, SignatureExpired, "replay window"),
        (sign(SECRET, NOW, BODY), BODY, NOW - 61, SignatureFromFuture, "(NTP)"),
    ],
)
def test_refusals_say_what_is_wrong(
    header: str, body: bytes, now: int, error: type[Exception], says: str
) -> None:
    with pytest.raises(error, match=re.escape(says)):
        verify(SECRET, header, body, now)


def test_within_the_window_and_the_skew_a_signature_is_taken() -> None:
    header = sign(SECRET, NOW, BODY)
    assert verify(SECRET, header, BODY, NOW + 300) == NOW
    assert verify(SECRET, header, BODY, NOW - 60) == NOW


def test_a_short_secret_is_refused_with_how_to_make_one() -> None:
    with pytest.raises(ValueError, match="openssl rand -hex 32"):
        check_secret("short")
    assert check_secret(SECRET) == SECRET


def docs_receiver() -> tuple[str, Callable[..., bool]]:
    text = DOCS.read_text()
    found = re.search(re.escape(MARK) + r"\s*```python\n(.*?)```", text, re.DOTALL)
    assert found is not None, f"docs/connectors.md has no {MARK} python block"
    code = found.group(1)
    namespace: dict[str, object] = {}
    exec(compile(code, str(DOCS), "exec"), namespace)  # noqa: S102 - our own docs, run as written
    verify_docs = namespace["verify"]
    assert callable(verify_docs)
    return code, verify_docs


def test_the_receiver_in_the_docs_verifies_our_signatures_in_ten_lines() -> None:
    """The docs' receiver accepts what the broker signs now, and refuses another secret, a
    changed body and a signature older than five minutes."""
    code, verify_docs = docs_receiver()
    assert len(code.strip().splitlines()) <= 10
    import time

    now = int(time.time())
    secret = SECRET.encode()
    assert verify_docs(secret, sign(SECRET, now, BODY), BODY) is True
    assert verify_docs(b"y" * 32, sign(SECRET, now, BODY), BODY) is False
    assert verify_docs(secret, sign(SECRET, now, BODY), BODY + b"x") is False
    assert verify_docs(secret, sign(SECRET, now - 400, BODY), BODY) is False
    assert verify_docs(secret, "v1=00", BODY) is False
