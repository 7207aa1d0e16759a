"""What the broker accepts as an agent's facts (pure)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.agents.facts_policy import (
    FACTS_OUTPUT_MAX,
    FactsRefused,
    clean_facts,
    parse_facts_output,
)

GOOD = {
    "hostname": "web01",
    "os": "Debian GNU/Linux",
    "os_version": "12",
    "kernel": "6.1.0-18-amd64",
    "arch": "x86_64",
    "users": ["alice", "bob"],
}


def with_field(**changes: object) -> dict[str, object]:
    return {**GOOD, **changes}


def test_good_facts_are_stored_as_given() -> None:
    """Plain facts come back unchanged, users as a list."""
    assert clean_facts(GOOD) == GOOD


def test_bidi_and_invisible_characters_are_stripped() -> None:
    """Right-to-left overrides and zero-width characters are removed, not stored."""
    stored = clean_facts(with_field(hostname="web\u202e10\u200b", os="Debian\u2066 GNU"))
    assert stored["hostname"] == "web10"
    assert stored["os"] == "Debian GNU"


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"hostname": "web\x1b]0;owned\x07"}, "control characters"),
        ({"os": "Debian\x00"}, "control characters"),
        ({"kernel": "\x9b31m"}, "control characters"),
        ({"os": "<script>alert(1)</script>"}, "markup"),
        ({"arch": "x86>64"}, "markup"),
        ({"os_version": "1" * 257}, "longer than 256"),
        ({"users": ["root;rm"]}, "user name"),
        ({"users": [f"u{i}" for i in range(65)]}, "more than 64"),
        ({"users": "alice"}, "not a list"),
        ({"hostname": ""}, "hostname is empty"),
        ({"hostname": 5}, "not a string"),
        ({"extra": "x"}, "unknown key"),
        ({"packages": ["<script>"]}, "packages has characters"),
        ({"packages": ["cups filters"]}, "packages has characters"),
        ({"services": ["cups\x1b[0m"]}, "services has characters"),
        ({"services": "cups"}, "services is not a list"),
        ({"packages": [f"p{i}" for i in range(4001)]}, "more than 4000 packages"),
        ({"services": [f"s{i}" for i in range(401)]}, "more than 400 services"),
    ],
)
def test_hostile_facts_are_refused(changes: dict[str, object], needle: str) -> None:
    """Escape sequences, NUL, markup, oversized text and bad users are refused whole."""
    with pytest.raises(FactsRefused, match=needle) as refused:
        clean_facts(with_field(**changes))
    assert refused.value.code == "facts_invalid"


def test_packages_and_services_are_stored_and_optional() -> None:
    """A newer agent's packages and services are stored; an older agent's facts (without
    them) are stored as before."""
    newer = with_field(packages=["cups", "cups-filters"], services=["cups", "ssh"])
    assert clean_facts(newer) == newer
    assert "packages" not in clean_facts(GOOD)


def test_missing_key_and_non_object_are_refused() -> None:
    """Facts must be an object with every key of the contract."""
    partial = dict(GOOD)
    del partial["arch"]
    with pytest.raises(FactsRefused, match="missing key"):
        clean_facts(partial)
    with pytest.raises(FactsRefused, match="not a JSON object"):
        clean_facts(["web01"])


def test_sl_facts_output_is_parsed() -> None:
    """The JSON line `sl:facts` prints is accepted."""
    assert parse_facts_output(json.dumps(GOOD).encode() + b"\n") == GOOD


def test_megabytes_of_output_are_refused_as_too_large() -> None:
    """Output over the cap is refused with its own code and status 413."""
    with pytest.raises(FactsRefused) as refused:
        parse_facts_output(b" " * (FACTS_OUTPUT_MAX + 1))
    assert (refused.value.code, refused.value.http_status) == ("facts_too_large", 413)


@pytest.mark.parametrize(
    ("data", "needle"), [(b"\xff\xfe", "not UTF-8"), (b"{", "not valid JSON"), (b"[]", "object")]
)
def test_broken_output_is_refused(data: bytes, needle: str) -> None:
    """Bytes that are not UTF-8 JSON objects are refused."""
    with pytest.raises(FactsRefused, match=needle):
        parse_facts_output(data)


@given(st.text(max_size=300))
def test_whatever_is_stored_is_plain_short_text(text: str) -> None:
    """Any hostname is either refused or stored without controls, markup or bidi tricks."""
    try:
        stored = clean_facts(with_field(hostname=text or "h"))
    except FactsRefused:
        return
    hostname = stored["hostname"]
    assert isinstance(hostname, str)
    assert len(hostname) <= 256
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in hostname)
    assert "<" not in hostname
    assert ">" not in hostname
    assert not any(c in hostname for c in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
