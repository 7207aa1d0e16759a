"""Unit tests of the machine facts: validation, os-release and utmp parsing, collection."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.errors import MessageError
from agent.facts import (
    Facts,
    clean_users,
    collect_facts,
    parse_os_release,
    parse_package_list,
    parse_running_services,
    parse_utmp,
)
from broker.agents.facts_policy import clean_facts

GOOD = {
    "hostname": "web01",
    "os": "Debian GNU/Linux",
    "os_version": "12",
    "kernel": "6.1.0-18-amd64",
    "arch": "x86_64",
    "users": ["alice", "bob"],
}


def test_facts_round_trip() -> None:
    """Valid facts parse, keep their values, and serialize to the same JSON object."""
    facts = Facts.parse(json.dumps(GOOD))
    assert facts.users == ("alice", "bob")
    assert json.loads(facts.serialize()) == GOOD


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"hostname": ""}, "hostname is empty"),
        ({"hostname": "x" * 257}, "longer than 256"),
        ({"os": "Debian\x1b]52;c;"}, "control characters"),
        ({"kernel": 6}, "kernel is not a string"),
        ({"users": "alice"}, "users is not a list"),
        ({"users": ["al ice"]}, "user name"),
        ({"users": ["x" * 33]}, "user name"),
        ({"users": [1]}, "user name"),
        ({"users": [f"u{i}" for i in range(65)]}, "more than 64 users"),
        ({"extra": "x"}, "unknown key 'extra'"),
        ({"packages": "cups"}, "packages is not a list"),
        ({"packages": ["cups", 5]}, "packages has characters"),
        ({"packages": ["-rf"]}, "packages has characters"),
        ({"services": ["cups\nx"]}, "services has characters"),
        ({"services": ["s" * 101]}, "services has characters"),
    ],
)
def test_facts_validation(change: dict[str, object], message: str) -> None:
    """Hostile or oversized facts are refused with a MessageError saying why."""
    with pytest.raises(MessageError, match=message):
        Facts.parse(json.dumps({**GOOD, **change}))


def test_packages_and_services_are_optional_on_the_wire() -> None:
    """Facts of an older agent (no packages, no services) parse as before and serialize to
    the same object; a newer agent's round-trip."""
    assert Facts.parse(json.dumps(GOOD)).packages == ()
    newer = {**GOOD, "packages": ["cups", "openssh-server"], "services": ["cups"]}
    facts = Facts.parse(json.dumps(newer))
    assert facts.services == ("cups",)
    assert json.loads(facts.serialize()) == newer


def test_package_and_service_listings_are_parsed_and_cleaned() -> None:
    """dpkg-query/rpm lines and systemctl rows give sorted, valid, distinct names."""
    assert parse_package_list("zsh\ncups\n\ncups\nbad name\n<x>\n") == ("cups", "zsh")
    units = (
        "cups.service      loaded active running CUPS Scheduler\n"
        "ssh.service       loaded active running OpenBSD Secure Shell server\n"
        "getty@tty1.service loaded active running Getty on tty1\n"
        "x\\x2dy.service loaded active running escaped\n"
    )
    assert parse_running_services(units) == ("cups", "getty@tty1", "ssh")
    assert len(parse_package_list("\n".join(f"p{i:05d}" for i in range(5000)))) == 4000


def test_facts_missing_key_and_non_object() -> None:
    """Facts lacking a key, or not an object at all, are refused."""
    body = dict(GOOD)
    del body["arch"]
    with pytest.raises(MessageError, match="missing key 'arch'"):
        Facts.parse(json.dumps(body))
    with pytest.raises(MessageError):
        Facts.parse(b"[]")
    with pytest.raises(MessageError):
        Facts.from_dict("text")


def test_os_release_parsing() -> None:
    """Quoted, unquoted, escaped and commented lines of os-release are read as the shell would."""
    text = (
        '# comment\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nID=debian\n'
        'PRETTY_NAME=\'Single quoted\'\nESCAPED="a \\"b\\" \\$c"\nbad line\n'
    )
    parsed = parse_os_release(text)
    assert parsed["NAME"] == "Debian GNU/Linux"
    assert parsed["VERSION_ID"] == "12"
    assert parsed["ID"] == "debian"
    assert parsed["PRETTY_NAME"] == "Single quoted"
    assert parsed["ESCAPED"] == 'a "b" $c'
    assert "bad line" not in "".join(parsed)


def _utmp_record(kind: int, user: bytes) -> bytes:
    return struct.pack(
        "=hxxi32s4s32s256shhiii16s20x",
        kind,
        42,
        b"pts/0",
        b"ts/0",
        user,
        b"host",
        0,
        0,
        0,
        0,
        0,
        b"",
    )


def test_utmp_parsing_keeps_user_processes_only() -> None:
    """Only USER_PROCESS records count; a trailing partial record is ignored."""
    data = (
        _utmp_record(2, b"reboot")
        + _utmp_record(7, b"alice")
        + _utmp_record(8, b"gone")
        + _utmp_record(7, b"bob\0junk")
        + b"\x07\x00partial"
    )
    assert parse_utmp(data) == ["alice", "bob"]
    assert len(_utmp_record(7, b"x")) == 384


@given(st.binary(max_size=2000))
def test_utmp_parsing_never_raises(data: bytes) -> None:
    """Whatever the bytes, utmp parsing returns a list of strings."""
    assert all(isinstance(name, str) for name in parse_utmp(data))


def test_clean_users_drops_invalid_dedups_sorts_and_caps() -> None:
    """Users are deduplicated, sorted, filtered to the allowed set and capped at 64."""
    assert clean_users(["bob", "alice", "bob", "bad name", ""]) == ("alice", "bob")
    assert len(clean_users(f"user{i:03d}" for i in range(100))) == 64


def test_collect_facts_reads_the_machine(tmp_path: Path) -> None:
    """Collection reads os-release and utmp from the given paths and always validates."""
    release = tmp_path / "os-release"
    release.write_text('NAME="Test\x1bOS"\nVERSION_ID=1\n')
    utmp = tmp_path / "utmp"
    utmp.write_bytes(_utmp_record(7, b"carol") + _utmp_record(7, b"bad user"))
    facts = collect_facts(os_release=release, utmp=utmp)
    assert facts.os == "Test OS"
    assert facts.os_version == "1"
    assert facts.users == ("carol",)
    assert facts.hostname
    assert Facts.parse(facts.serialize()) == facts


def test_collect_facts_lists_this_machines_packages(tmp_path: Path) -> None:
    """On a machine with dpkg or rpm the packages are listed (the package manager itself
    among them); the enrollment request leaves them out."""
    none = tmp_path / "none"
    facts = collect_facts(os_release=none, utmp=none)
    if shutil.which("dpkg-query"):
        assert "dpkg" in facts.packages
    elif shutil.which("rpm"):
        assert "rpm" in facts.packages
    else:
        assert facts.packages == ()
    assert Facts.parse(facts.serialize()) == facts
    assert collect_facts(os_release=none, utmp=none, software=False).packages == ()


def test_collect_facts_without_files(tmp_path: Path) -> None:
    """Missing os-release and utmp still give valid facts."""
    facts = collect_facts(os_release=tmp_path / "none", utmp=tmp_path / "none")
    assert facts.users == ()
    assert Facts.parse(facts.serialize()) == facts


def test_collected_facts_hold_no_markup_the_broker_would_refuse(tmp_path: Path) -> None:
    """An os-release with ``<`` and ``>`` gives facts without them, so the broker's facts
    policy accepts them and the machine can enroll."""
    release = tmp_path / "os-release"
    release.write_text('NAME="<b>Evil</b> Linux"\nVERSION_ID="<12>"\n')
    facts = collect_facts(os_release=release, utmp=tmp_path / "none")
    assert (facts.os, facts.os_version) == ("bEvil/b Linux", "12")
    assert clean_facts(facts.to_dict())["os"] == "bEvil/b Linux"
