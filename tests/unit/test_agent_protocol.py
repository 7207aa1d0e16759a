"""Unit tests of the shared protocol units: session environment, consent answer, keys, signing."""

from __future__ import annotations

import base64
import contextlib
import json
from datetime import UTC, datetime

import asyncssh
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given
from hypothesis import strategies as st

from agent.errors import MessageError, SignatureError
from agent.protocol import (
    ConsentAnswer,
    Ed25519PublicKey,
    SessionEnv,
    iso_utc,
    parse_iso_utc,
    sanitize_text,
)
from agent.signing import (
    HelpAnswer,
    HelpRequest,
    sign_request,
    signing_payload,
    verify_request,
)

ENV = {
    "SL_SESSION": "s-" + "a1B2" * 5 + "zz",
    "SL_STAFF": "alice",
    "SL_STAFF_LEVEL": "2",
    "SL_TICKET": "T-1042",
    "SL_TICKET_TITLE": "Printer\x1b[2J down",
    "LD_PRELOAD": "/tmp/evil.so",
}


def test_session_env_keeps_only_its_names_and_makes_the_title_inert() -> None:
    """Only SL_* names are read; the title loses its controls; other names are ignored."""
    env = SessionEnv.parse(ENV)
    assert (env.session, env.staff, env.staff_level, env.ticket) == (
        ENV["SL_SESSION"], "alice", 2, "T-1042",
    )  # fmt: skip
    assert env.ticket_title == "Printer [2J down"
    assert "LD_PRELOAD" not in env.to_env()
    assert SessionEnv.parse(env.to_env()) == env


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SL_SESSION", "s-short"),
        ("SL_SESSION", "s-" + "A" * 21 + "!"),
        ("SL_STAFF", "alice; rm -rf /"),
        ("SL_STAFF", ""),
        ("SL_STAFF_LEVEL", "4"),
        ("SL_STAFF_LEVEL", "02"),
        ("SL_TICKET", "T-1234567890"),
        ("SL_TICKET", "../T-1"),
        ("SL_TICKET_TITLE", "x" * 201),
    ],
)
def test_session_env_refuses_bad_values(name: str, value: str) -> None:
    """Each SL_* value outside its character set or length is refused."""
    with pytest.raises(MessageError, match=name):
        SessionEnv.parse({**ENV, name: value})


def test_session_env_requires_the_identifiers() -> None:
    """A channel without SL_SESSION is refused; the title is optional."""
    without = {key: value for key, value in ENV.items() if key != "SL_SESSION"}
    with pytest.raises(MessageError):
        SessionEnv.parse(without)
    no_title = {key: value for key, value in ENV.items() if key != "SL_TICKET_TITLE"}
    assert SessionEnv.parse(no_title).ticket_title == ""


@given(st.dictionaries(st.sampled_from(list(ENV)), st.text(max_size=40)))
def test_session_env_raises_only_message_error(env: dict[str, str]) -> None:
    """Whatever the environment, parsing gives a SessionEnv or a MessageError."""
    with contextlib.suppress(MessageError):
        SessionEnv.parse(env)


def test_consent_answer_round_trip_and_validation() -> None:
    """The sl:consent JSON parses back; unknown decisions and bad times are refused."""
    answer = ConsentAnswer(decision="denied", by="carol", at=datetime(2024, 5, 1, tzinfo=UTC))
    data = answer.serialize()
    assert json.loads(data) == {"decision": "denied", "by": "carol", "at": "2024-05-01T00:00:00Z"}
    assert ConsentAnswer.parse(data) == answer
    assert not answer.allows
    assert ConsentAnswer.parse(
        b'{"decision":"not_required","by":null,"at":"2024-05-01T00:00:00Z"}'
    ).allows
    for bad in (
        b'{"decision":"maybe","by":null,"at":"2024-05-01T00:00:00Z"}',
        b'{"decision":"approved","by":"a b","at":"2024-05-01T00:00:00Z"}',
        b'{"decision":"approved","by":null,"at":"2024-05-01T00:00:00+02:00"}',
        b'{"decision":"approved","by":null,"at":"noon"}',
        b"[]",
        b"{",
    ):
        with pytest.raises(MessageError):
            ConsentAnswer.parse(bad)


def test_ed25519_key_lines() -> None:
    """OpenSSH Ed25519 lines parse (comment dropped) and serialize to the same key."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    line = key.export_public_key().decode().strip()
    parsed = Ed25519PublicKey.parse(line + " comment@host")
    assert parsed.serialize() == " ".join(line.split()[:2])
    assert asyncssh.import_public_key(parsed.serialize()).public_data == key.public_data
    rsa_blob = base64.b64encode(b"\x00\x00\x00\x07ssh-rsa" + bytes(57)).decode()
    for bad in ("ssh-rsa AAAA", f"ssh-ed25519 {rsa_blob[:68]}", None, "ssh-ed25519 " + "A" * 68):
        with pytest.raises(MessageError):
            Ed25519PublicKey.parse(bad)


def test_time_and_text_helpers() -> None:
    """Times format as ISO-8601 UTC with Z; sanitising replaces controls and caps length."""
    assert iso_utc(0) == "1970-01-01T00:00:00Z"
    assert parse_iso_utc("1970-01-01T00:00:00Z", "t") == datetime(1970, 1, 1, tzinfo=UTC)
    with pytest.raises(MessageError):
        parse_iso_utc("1970-01-01T00:00:00", "t")
    assert sanitize_text("a\x00b\x9bc\u202ed", 10) == "a b c\u202ed"
    assert sanitize_text("abcdef", 3) == "abc"


def _key_pair() -> tuple[Ed25519PrivateKey, Ed25519PublicKey]:
    private = Ed25519PrivateKey.generate()
    line = private.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH)
    return private, Ed25519PublicKey.parse(line.decode())


def test_signed_request_verifies() -> None:
    """Headers from sign_request verify with the agent's public key."""
    private, public = _key_pair()
    body = HelpRequest("printer broken").serialize()
    headers = sign_request(private, "ag-0123456789abcdef", body, now=1_700_000_000)
    assert headers["X-Secondline-Agent"] == "ag-0123456789abcdef"
    assert headers["X-Secondline-Timestamp"] == "1700000000"
    verify_request(
        public,
        timestamp=headers["X-Secondline-Timestamp"],
        signature=headers["X-Secondline-Signature"],
        body=body,
        now=1_700_000_299,
    )
    assert signing_payload("POST", "/agent/v1/help", "1", b"").startswith(
        b"POST\n/agent/v1/help\n1\n"
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"now": 1_700_000_301}, "too far"),
        ({"now": 1_699_999_699}, "too far"),
        ({"timestamp": None}, "no valid timestamp"),
        ({"timestamp": "-5"}, "no valid timestamp"),
        ({"signature": "AAAA"}, "no valid signature"),
        ({"body": b'{"text":"other"}'}, "does not verify"),
        ({"key": "other"}, "does not verify"),
    ],
)
def test_bad_signatures_are_refused(change: dict[str, object], message: str) -> None:
    """A skewed clock, a missing header, a changed body or another key fails verification."""
    private, public = _key_pair()
    body = b'{"text":"printer broken"}'
    headers = sign_request(private, "ag-0123456789abcdef", body, now=1_700_000_000)
    arguments: dict[str, object] = {
        "timestamp": headers["X-Secondline-Timestamp"],
        "signature": headers["X-Secondline-Signature"],
        "body": body,
        "now": 1_700_000_000,
    }
    key = _key_pair()[1] if change.pop("key", None) else public
    arguments.update(change)
    with pytest.raises(SignatureError, match=message):
        verify_request(key, **arguments)  # type: ignore[arg-type]


def test_help_messages() -> None:
    """Help text is checked (not empty, capped, no controls but tab and newline)."""
    assert HelpRequest.parse(b'{"text":"line\\nline\\ttab"}').text == "line\nline\ttab"
    for bad in ("", "   ", "x" * 2001, "bell\x07"):
        with pytest.raises(MessageError):
            HelpRequest(bad)
    with pytest.raises(MessageError):
        HelpRequest.parse(b'{"text":"x","more":1}')
    assert HelpAnswer.parse(b'{"ticket":"T-9"}') == HelpAnswer("T-9")
    with pytest.raises(MessageError):
        HelpAnswer.parse(b'{"ticket":"T-9; rm"}')


def test_session_env_role_is_optional_and_checked() -> None:
    """SL_ROLE names the role asked about (an older broker sends none: the owner); any
    other value refuses the channel."""
    base = {"SL_SESSION": "s-" + "R" * 22, "SL_STAFF": "carol", "SL_STAFF_LEVEL": "3"}
    base["SL_TICKET"] = "T-9"
    assert SessionEnv.parse(base).role is None
    assert SessionEnv.parse(base).asked_role == "owner"
    joiner = SessionEnv.parse(base | {"SL_ROLE": "participant"})
    assert joiner.asked_role == "participant"
    assert joiner.to_env()["SL_ROLE"] == "participant"
    assert "SL_ROLE" not in SessionEnv.parse(base).to_env()
    with pytest.raises(MessageError, match="SL_ROLE"):
        SessionEnv.parse(base | {"SL_ROLE": "admin"})
