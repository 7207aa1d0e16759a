"""What a starting agent does about update.json, the offer parser, the install argv and
root's policy for requested updates."""

from __future__ import annotations

import json

import pytest

from agent.errors import MessageError
from agent.release import (
    INSTALL_UNIT,
    UpdateOffer,
    debian_arch,
    install_argv,
    package_path,
)
from agent.update_helper import ROLLBACK_WINDOW_SECONDS, may_install
from agent.update_state import Start, UpdateRecord, on_start, skipped_version

RECORD = UpdateRecord(phase="installing", from_version="0.1.0", to_version="0.2.0", at=100.0)


def test_record_round_trips_and_moves_through_its_phases() -> None:
    """update.json parses back to itself; rolling back keeps the reason, then marks it told."""
    assert UpdateRecord.parse(RECORD.serialize()) == RECORD
    back = RECORD.rolling_back("x" * 400, now=250.0)
    assert (back.phase, back.at, len(back.reason)) == ("rolling_back", 250.0, 300)
    done = back.rolled_back()
    assert (done.phase, done.reported) == ("rolled_back", True)
    assert UpdateRecord.parse(done.serialize()) == done


@pytest.mark.parametrize(
    ("record", "running", "start"),
    [
        (None, "0.1.0", Start.NOTHING),
        (RECORD, "0.2.0", Start.WATCH),
        (RECORD, "0.1.0", Start.FORGET),  # the install did not take
        (RECORD, "0.9.0", Start.FORGET),  # installed by hand since
        (RECORD.rolling_back("r", 1.0), "0.1.0", Start.REPORT_ROLLBACK),
        (RECORD.rolling_back("r", 1.0), "0.2.0", Start.FORGET),  # the rollback did not take
        (RECORD.rolling_back("r", 1.0).rolled_back(), "0.1.0", Start.NOTHING),
        (RECORD.rolling_back("r", 1.0).rolled_back(), "0.3.0", Start.FORGET),
    ],
)
def test_on_start(record: UpdateRecord | None, running: str, start: Start) -> None:
    """A new version watches, the old one after a rollback reports, anything else forgets."""
    assert on_start(record, running) is start


def test_rollback_not_yet_reported_is_reported_again() -> None:
    """A rolled-back record the broker was not told about is reported at the next start."""
    unreported = UpdateRecord(phase="rolled_back", from_version="0.1.0", to_version="0.2.0", at=1.0)
    assert on_start(unreported, "0.1.0") is Start.REPORT_ROLLBACK


def test_rolled_back_version_is_skipped() -> None:
    """The version rolled back is never installed again; nothing is skipped otherwise."""
    assert skipped_version(None) is None
    assert skipped_version(RECORD) is None
    assert skipped_version(RECORD.rolling_back("r", 1.0)) == "0.2.0"


@pytest.mark.parametrize(
    "change",
    [
        {"phase": "done"},
        {"from": "1.0-beta"},
        {"to": None},
        {"at": "yesterday"},
        {"at": True},
        {"reason": 7},
        {"reported": "yes"},
    ],
)
def test_damaged_record_is_refused(change: dict[str, object]) -> None:
    """A damaged update.json is a MessageError (the updater then removes it)."""
    body = json.loads(RECORD.serialize())
    body.update(change)
    with pytest.raises(MessageError, match=r"update\.json"):
        UpdateRecord.parse(json.dumps(body).encode())


def test_offer_parses_ignores_unknown_keys_and_checks_the_path() -> None:
    """An offer's unknown keys are ignored; its path must be a versioned package path."""
    path = package_path("0.2.0", "amd64")
    body = {"offer": {"path": path, "manifest": "{}", "signature": "s", "new": 1}, "more": 2}
    offer = UpdateOffer.parse(json.dumps(body).encode())
    assert offer == UpdateOffer(path, b"{}", "s")
    assert UpdateOffer.parse(b'{"offer": null}') is None
    for bad in (
        "/etc/passwd",
        "/agent/packages/0.2.0/secondline-agent_0.3.0_amd64.deb",
        "https://elsewhere.example/agent/packages/0.2.0/secondline-agent_0.2.0_amd64.deb",
    ):
        body["offer"] = {"path": bad, "manifest": "{}", "signature": "s"}
        with pytest.raises(MessageError, match="path"):
            UpdateOffer.parse(json.dumps(body).encode())
    with pytest.raises(MessageError, match="not an object"):
        UpdateOffer.parse(b'{"offer": []}')


def test_install_argv() -> None:
    """The admin's command wins; root uses dpkg (in a unit of its own under systemd); an
    unprivileged agent without a command cannot install."""
    assert install_argv("/p.deb", update_command="/bin/hook", is_root=False, systemd=True) == [
        "/bin/hook",
        "/p.deb",
    ]
    assert install_argv("/p.deb", update_command=None, is_root=False, systemd=True) is None
    plain = install_argv("/p.deb", update_command=None, is_root=True, systemd=False)
    assert plain == ["dpkg", "--install", "--", "/p.deb"]
    unit = install_argv("/p.deb", update_command=None, is_root=True, systemd=True)
    assert unit is not None
    assert unit[0] == "systemd-run"
    assert f"--unit={INSTALL_UNIT}" in unit
    assert unit[-4:] == ["dpkg", "--install", "--", "/p.deb"]


def test_debian_arch() -> None:
    """uname's names map to Debian's; an unknown machine has no package."""
    assert debian_arch("x86_64") == "amd64"
    assert debian_arch("aarch64") == "arm64"
    assert debian_arch("vax") is None


def test_root_installs_only_newer_or_its_own_recent_rollback() -> None:
    """Root's policy: newer goes in; older only as the rollback of root's last update and
    within the window; the same version, or nothing installed, is refused."""
    assert may_install("0.1.0", "0.2.0", None, now=0.0) is None
    assert "downgrades are refused" in str(may_install("0.2.0", "0.1.0", None, now=0.0))
    last: dict[str, object] = {"from": "0.1.0", "to": "0.2.0", "at": 1000.0}
    assert may_install("0.2.0", "0.1.0", last, now=1100.0) is None
    late = 1000.0 + ROLLBACK_WINDOW_SECONDS + 1
    assert "downgrades are refused" in str(may_install("0.2.0", "0.1.0", last, now=late))
    assert "downgrades are refused" in str(may_install("0.2.0", "0.0.5", last, now=1100.0))
    assert "installed already" in str(may_install("0.2.0", "0.2", None, now=0.0))
    assert "not installed" in str(may_install(None, "0.2.0", None, now=0.0))
