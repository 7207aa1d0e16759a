"""Unit tests of the local session log and the registry of live channels."""

from __future__ import annotations

import json
from pathlib import Path

from agent.protocol import SessionEnv
from agent.session_log import LiveChannel, SessionLog, SessionRegistry, read_session_log

ENV = SessionEnv(session="s-" + "E" * 22, staff="alice", staff_level=2, ticket="T-3")


def _channel(closed: list[str]) -> LiveChannel:
    return LiveChannel(
        env=ENV,
        kind="exec",
        command="echo \x1b]52;c;x\x07secret",
        login_user="root",
        started_at=0,
        close=lambda: closed.append("closed"),
    )


def test_start_and_end_are_logged_without_commands(tmp_path: Path) -> None:
    """Start and end records say who, which ticket, when and how it ended, never the command."""
    log = SessionLog(tmp_path / "sessions.jsonl")
    registry = SessionRegistry(log, clock=lambda: 60)
    channel = _channel([])
    registry.started(channel)
    assert registry.live() == [channel]
    registry.ended(channel, ended_by="exit", returncode=-15)
    registry.ended(channel, ended_by="broker", returncode=None)  # only the first end counts
    start, end = read_session_log(log.path, limit=10)
    assert (start["event"], start["staff"], start["ticket"], start["at"]) == (
        "start", "alice", "T-3", "1970-01-01T00:00:00Z",
    )  # fmt: skip
    assert (end["ended_by"], end["exit_signal"], end["at"]) == ("exit", 15, "1970-01-01T00:01:00Z")
    assert "secret" not in log.path.read_text()
    assert log.path.stat().st_mode & 0o777 == 0o600


def test_end_session_closes_the_channels_of_that_session(tmp_path: Path) -> None:
    """Ending a session closes its channels and marks them ended by the end user."""
    closed: list[str] = []
    registry = SessionRegistry(SessionLog(tmp_path / "log"), clock=lambda: 0)
    channel = _channel(closed)
    registry.started(channel)
    assert registry.end_session("s-" + "F" * 22) == 0
    assert registry.end_session(ENV.session) == 1
    assert closed == ["closed"]
    registry.ended(channel, ended_by="broker", returncode=None)
    assert read_session_log(tmp_path / "log", limit=1)[0]["ended_by"] == "end_user"


def test_live_channels_are_shown_inert(tmp_path: Path) -> None:
    """The command shown to the end user has its terminal controls replaced."""
    shown = _channel([]).to_dict()
    assert shown["command"] == "echo  ]52;c;x secret"
    assert json.dumps(shown)


def test_reading_skips_damage_and_a_full_disk_is_not_fatal(tmp_path: Path) -> None:
    """Damaged lines are skipped when reading; an unwritable log only logs a warning."""
    path = tmp_path / "log"
    path.write_text('{"event":"start"}\nnot json\n[1]\n{"event":"end"}\n')
    assert [record["event"] for record in read_session_log(path, limit=10)] == ["start", "end"]
    assert read_session_log(tmp_path / "missing", limit=10) == []
    SessionLog(tmp_path / "no-such-dir" / "log").append({"event": "x"})
