"""Checks of what agents send: the enrollment request, replayed signatures, and when the
broker trims its heap; plus the CLI's label parsing (pure)."""

from __future__ import annotations

import json

import asyncssh
import pytest

from agent.enrollment import EnrollmentToken
from broker.agents.enroll_endpoint import parse_request, tunnel_url
from broker.agents.facts_policy import FactsRefused
from broker.agents.heap_trim import TrimPolicy, malloc_trim
from broker.agents.signed_requests import ReplayGuard
from broker.cli.agents import parse_labels
from broker.cli.client import CliError
from broker.errors import ForbiddenError, InputError

FP = "ab" * 32
FACTS = {
    "hostname": "web01",
    "os": "Debian GNU/Linux",
    "os_version": "12",
    "kernel": "6.1.0",
    "arch": "x86_64",
    "users": [],
}


def body(**changes: object) -> bytes:
    key = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    obj: dict[str, object] = {
        "token": EnrollmentToken.generate(FP).serialize(),
        "name": "web01",
        "public_key": key,
        "facts": FACTS,
    }
    obj.update(changes)
    return json.dumps(obj).encode()


def test_a_good_request_is_parsed() -> None:
    """Token, name, key and facts of a good request come back checked."""
    request, facts = parse_request(body(), FP)
    assert request.name == "web01"
    assert facts["hostname"] == "web01"


@pytest.mark.parametrize(
    ("data", "error", "code"),
    [
        (b"x" * (64 * 1024 + 1), InputError, "request_too_large"),
        (b"{", InputError, "malformed_request"),
        (b"[]", InputError, "malformed_request"),
        (body(token="sle1.short"), InputError, "token_malformed"),
        (body(token="sle1." + "a" * 12 + "." + "A" * 32 + "." + "cd" * 32), ForbiddenError,
         "token_other_broker"),
        (body(facts={**FACTS, "os": "\x1b[2J"}), FactsRefused, "facts_invalid"),
        (body(name="Web01"), InputError, "invalid_request"),
        (body(name="ag-0123456789abcdef"), InputError, "invalid_name"),
        (body(public_key="ssh-rsa AAAA"), InputError, "invalid_request"),
        (body(extra=1), InputError, "invalid_request"),
    ],
)  # fmt: skip
def test_bad_requests_are_refused_with_their_code(
    data: bytes, error: type[Exception], code: str
) -> None:
    """Size, JSON, token syntax, broker fingerprint, facts, name and key are each checked."""
    with pytest.raises(error) as refused:
        parse_request(data, FP)
    assert getattr(refused.value, "code", None) == code


def test_tunnel_url_follows_the_public_url() -> None:
    """https://host:port becomes wss://host:port/agent/v1/tunnel."""
    assert tunnel_url("https://support.example:8443") == (
        "wss://support.example:8443/agent/v1/tunnel"
    )
    assert tunnel_url("https://[::1]/") == "wss://[::1]/agent/v1/tunnel"


def test_a_signature_counts_once_within_the_window() -> None:
    """The same signature is refused the second time, accepted again after the window."""
    guard = ReplayGuard(window=10)
    assert guard.first_use("sig", 0.0)
    assert not guard.first_use("sig", 5.0)
    assert guard.first_use("other", 5.0)
    assert guard.first_use("sig", 11.0)


def test_the_replay_guard_is_bounded() -> None:
    """Past max_entries the oldest signatures are forgotten."""
    guard = ReplayGuard(window=1000, max_entries=2)
    for index in range(5):
        assert guard.first_use(f"s{index}", float(index))
    assert len(guard._seen) <= 2


def test_heap_is_trimmed_once_handshakes_calm_down() -> None:
    """No trim while handshakes run or right after; one trim after a quiet spell."""
    policy = TrimPolicy(quiet=5.0)
    assert not policy.due(0, 0, 0.0)
    assert not policy.due(10, 3, 1.0)
    assert not policy.due(12, 0, 2.0)
    assert not policy.due(12, 0, 6.0)
    assert policy.due(12, 0, 7.5)
    assert not policy.due(12, 0, 20.0)
    assert not policy.due(13, 0, 21.0)
    assert policy.due(13, 0, 26.5)


def test_malloc_trim_is_found_on_glibc() -> None:
    """On this (glibc) system the trim function exists and runs."""
    trim = malloc_trim()
    assert trim is not None
    trim()


def test_cli_labels() -> None:
    """--label K=V pairs become a dict; a pair without '=' or key is refused."""
    assert parse_labels(["env=prod", "site=", "a=b=c"]) == {"env": "prod", "site": "", "a": "b=c"}
    for bad in ("env", "=x"):
        with pytest.raises(CliError, match="KEY=VALUE"):
            parse_labels([bad])
