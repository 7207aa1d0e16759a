"""The note a session leaves on its ticket, the outbox's retry delays and the choice of
attachments."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest

from broker.config import BrokerConfig, load_config
from broker.errors import ConfigError
from broker.sessions.finish import RENDER_MAX, plan_attachments
from broker.sessions.note import (
    NOTE_BUDGET,
    NoteFacts,
    duration_text,
    exec_commands,
    session_note,
)
from broker.tickets.outbox import (
    BACKOFF_CAP,
    BACKOFF_FIRST,
    IDLE_WAKE,
    MIN_WAKE,
    SEND_TIMEOUT,
    Schedule,
    retry_delay,
    wake_in,
)
from broker.transcript import Command

START = dt.datetime(2025, 3, 4, 10, 0, 0, tzinfo=dt.UTC)
SID = "s-" + "a" * 22


def facts(**changes: object) -> NoteFacts:
    base = NoteFacts(
        session_id=SID,
        ticket_ref="T-1042",
        owner="bob",
        agent_name="web01",
        agent_id="ag-0123456789abcdef",
        kind="shell",
        command=None,
        started_at=START,
        ended_at=START + dt.timedelta(seconds=3725),
        end_reason="ended",
        end_message="the session ended",
        exit_status=0,
        exit_signal=None,
        consent="approved",
        consent_by="alice",
        consent_at=START,
        participants=[("bob", "owner"), ("carol", "observer"), ("bob", "owner")],
        commands=[Command("echo one", 1.0, 0.5, 0), Command("false", 2.0, 0.1, 1)],
        digest="f" * 64,
        complete=True,
        event_count=12,
        attachments=(f"{SID}.cast", f"{SID}.txt"),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_note_states_everything_the_ticket_needs() -> None:
    """Who, where, when, how long, how it ended, consent, participants, commands, digest."""
    text = session_note(facts())
    assert f"Remote session {SID} on web01 (ag-0123456789abcdef) by bob" in text
    assert "Started:      2025-03-04 10:00:00 UTC" in text
    assert "Duration:     1:02:05" in text
    assert "End:          ended (exit status 0)" in text
    assert "Consent:      approved by alice at 2025-03-04 10:00:00 UTC" in text
    assert "Participants: bob (owner), carol (observer)\n" in text
    assert "  [exit 0, 0.5 s] echo one" in text
    assert "  [exit 1, 0.1 s] false" in text
    assert "12 events, sealed complete, SHA-256 chain digest " + "f" * 64 in text
    assert f"Attached:     {SID}.cast, {SID}.txt" in text


def test_note_for_unattended_exec_cut_short() -> None:
    """A one-command session on an unattended agent, cut short, says so."""
    text = session_note(
        facts(
            kind="exec",
            command="systemctl status cups",
            consent="not_required",
            exit_status=None,
            exit_signal="TERM",
            commands=[],
            complete=False,
            attachments=(),
            left_out=("big.cast (too large)",),
        )
    )
    assert "Consent:      not required (unattended agent)" in text
    assert "(signal TERM)" in text
    assert "Command:      systemctl status cups" in text
    assert "(none recorded)" in text
    assert "sealed cut short" in text
    assert "Attached" not in text
    assert "Not attached: big.cast (too large)" in text


def test_note_without_seal_or_start() -> None:
    """A transcript that could not be sealed and a session that never started still read."""
    text = session_note(
        facts(digest=None, started_at=None, exit_status=None, consent=None, consent_by=None)
    )
    assert "not sealed (tell an admin)" in text
    assert "Duration" not in text
    assert "Started:      -" in text
    assert "(no exit status)" in text


def test_hostile_command_lines_are_inert() -> None:
    """Controls and bidi overrides in a command line are shown escaped, and long ones cut."""
    text = session_note(
        facts(
            commands=[
                Command("rm -rf \x1b[31m/\u202e", 0.0, None, None),
                Command("x" * 900, 0, 0, 0),
            ]
        )
    )
    assert "\x1b" not in text
    assert "\u202e" not in text
    assert "rm -rf \\x1b[31m/\\u202e" in text
    assert "[exit ?] " in text
    assert "x" * 299 + "…" in text
    assert "x" * 301 not in text


def test_many_commands_stay_within_the_note_budget() -> None:
    """Thousands of long commands are cut to the budget, with a count of the rest."""
    many = [Command("y" * 300, float(i), 0.0, 0) for i in range(5000)]
    text = session_note(facts(commands=many))
    assert len(text) <= NOTE_BUDGET
    assert "more (see the transcript)" in text
    assert text.rstrip().endswith(f"{SID}.txt")


def test_duration_text() -> None:
    """Durations read H:MM:SS; negative ones read as zero."""
    assert duration_text(0) == "0:00:00"
    assert duration_text(59.9) == "0:00:59"
    assert duration_text(3600 * 30 + 61) == "30:01:01"
    assert duration_text(-5) == "0:00:00"


def test_exec_commands() -> None:
    """A one-command session lists its command with the exit status; no command, none."""
    assert exec_commands("uptime", 3, 1.5) == (Command("uptime", 0.0, 1.5, 3),)
    assert exec_commands(None, 0, 1.0) == ()


@pytest.mark.parametrize(("attempts", "ceiling"), [(0, 2.0), (1, 2.0), (3, 8.0), (30, BACKOFF_CAP)])
def test_retry_delay_backs_off_with_jitter(attempts: int, ceiling: float) -> None:
    """Delays double per failure up to the cap, jittered between half and all of it."""
    assert retry_delay(attempts, 0.0) == ceiling / 2
    assert retry_delay(attempts, 0.999999) == pytest.approx(ceiling, rel=1e-5)


def test_plan_attachments(tmp_path: Path) -> None:
    """Both renderings under the limit; only the text above it; a missing file is said."""
    cast = tmp_path / f"{SID}.cast"
    cast.write_bytes(b"x" * 100)
    assert plan_attachments(cast, SID, 100).names == (f"{SID}.cast", f"{SID}.txt")
    big = plan_attachments(cast, SID, 99)
    assert big.names == (f"{SID}.txt",)
    assert "over the attachment limit" in big.left_out[0]
    huge = tmp_path / "huge.cast"
    with huge.open("wb") as fh:
        fh.truncate(RENDER_MAX + 1)  # sparse: no disk space used
    neither = plan_attachments(huge, SID, 1 << 40)
    assert neither.names == ()
    assert "too large" in neither.left_out[0]
    gone = plan_attachments(tmp_path / "nothing.cast", SID, 100)
    assert gone.names == ()
    assert "missing" in gone.left_out[0]


def test_retry_delay_survives_an_outage_of_days() -> None:
    """A count of failures far past the cap gives the cap, not OverflowError (2.0 ** 1024)."""
    for attempts in (1023, 1024, 1100, 2**31 - 1):
        assert retry_delay(attempts, 0.0) == BACKOFF_CAP / 2
        assert retry_delay(attempts, 0.999999) == pytest.approx(BACKOFF_CAP, rel=1e-5)
    assert retry_delay(10**9, 0.5, first=0.01, cap=86400.0) == pytest.approx(0.75 * 86400)


def test_retry_delay_follows_a_configured_schedule() -> None:
    """The first delay and the cap come from the settings; doublings in between."""
    assert retry_delay(1, 1.0, first=0.02, cap=3.0) == pytest.approx(0.02)
    assert retry_delay(8, 1.0, first=0.02, cap=3.0) == pytest.approx(2.56)
    assert retry_delay(9, 1.0, first=0.02, cap=3.0) == pytest.approx(3.0)
    assert retry_delay(4, 0.0, first=5.0, cap=5.0) == pytest.approx(2.5)


def test_schedule_from_config_and_its_claim() -> None:
    """The schedule reads the broker's settings; a claim outlasts a try twice over."""
    defaults = Schedule.from_config(BrokerConfig(data_dir=Path("/x")))
    assert defaults == Schedule() == Schedule(BACKOFF_FIRST, BACKOFF_CAP, SEND_TIMEOUT)
    assert defaults.claim_seconds == 120.0
    config = BrokerConfig(
        data_dir=Path("/x"),
        ticket_retry_first_seconds=0.5,
        ticket_retry_max_seconds=4.0,
        ticket_send_timeout_seconds=3,
    )
    schedule = Schedule.from_config(config)
    assert schedule == Schedule(first=0.5, cap=4.0, send_timeout=3.0)
    assert schedule.claim_seconds == 6.0 > schedule.send_timeout
    assert schedule.delay(1, 1.0) == pytest.approx(0.5)
    assert schedule.delay(5, 1.0) == pytest.approx(4.0)


def test_wake_in() -> None:
    """The worker sleeps until the earliest time it was given, within its bounds."""
    now = START
    later = now + dt.timedelta(seconds=7)
    assert wake_in(now, []) == IDLE_WAKE
    assert wake_in(now, [None, None]) == IDLE_WAKE
    assert wake_in(now, [None, later]) == 7.0
    assert wake_in(now, [later, now + dt.timedelta(seconds=3)]) == 3.0
    assert wake_in(now, [now - dt.timedelta(seconds=5)]) == MIN_WAKE
    assert wake_in(now, [now + dt.timedelta(hours=1)]) == IDLE_WAKE
    assert wake_in(now, [later], idle=2.0) == 2.0


def test_retry_settings_from_file_and_environment(tmp_path: Path) -> None:
    """The schedule is set in secondline.toml (numbers with or without a fraction) or as
    SECONDLINE_ variables; the defaults are those of the outbox."""
    assert load_config(tmp_path, env={}).ticket_retry_first_seconds == BACKOFF_FIRST
    (tmp_path / "secondline.toml").write_text(
        "ticket_retry_first_seconds = 0.25\nticket_retry_max_seconds = 30\n"
    )
    config = load_config(tmp_path, env={"SECONDLINE_TICKET_SEND_TIMEOUT_SECONDS": "5"})
    assert (
        config.ticket_retry_first_seconds,
        config.ticket_retry_max_seconds,
        config.ticket_send_timeout_seconds,
    ) == (0.25, 30.0, 5)
    env = {"SECONDLINE_TICKET_RETRY_MAX_SECONDS": "2.5"}
    assert load_config(tmp_path, env=env).ticket_retry_max_seconds == 2.5


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("ticket_retry_first_seconds = 0\n", "between 0.01 and 86400"),
        ("ticket_retry_first_seconds = 0.001\n", "between 0.01 and 86400"),
        ("ticket_retry_first_seconds = 90000\n", "between 0.01 and 86400"),
        ("ticket_retry_first_seconds = -1.0\n", "out of range"),
        ("ticket_retry_first_seconds = nan\n", "out of range"),
        ("ticket_retry_max_seconds = inf\n", "out of range"),
        ("ticket_retry_max_seconds = 1\n", "at least ticket_retry_first_seconds"),
        ("ticket_retry_max_seconds = 86401\n", "at most 86400"),
        ("ticket_retry_max_seconds = true\n", "must be a number"),
        ('ticket_retry_max_seconds = "soon"\n', "must be a number, not 'soon'"),
        ("ticket_retry_max_seconds = [1]\n", "must be a number"),
        ("ticket_send_timeout_seconds = 0\n", "between 1 and 3600"),
        ("ticket_send_timeout_seconds = 3601\n", "between 1 and 3600"),
        ("ticket_send_timeout_seconds = 1.5\n", "whole number"),
    ],
)
def test_bad_retry_settings_are_refused(tmp_path: Path, text: str, match: str) -> None:
    """Zero, negative, too fast, too slow, inverted, non-finite or non-numbers: refused."""
    (tmp_path / "secondline.toml").write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(tmp_path, env={})


def test_note_in_german_keeps_names_times_and_digest() -> None:
    """With the German catalogue the labels, states and roles are German and aligned; names,
    times, the digest and the verify command are as in English."""
    from broker.console.i18n import Catalogues

    german = session_note(facts(), Catalogues.load().get("de").gettext)
    assert german.startswith(f"Fernsitzung {SID} auf web01 (ag-0123456789abcdef) von bob\n"), german
    assert "Begonnen:     2025-03-04 10:00:00 UTC\n" in german
    assert "Dauer:        1:02:05\n" in german
    assert "Ende:         beendet (Exit-Status 0)\n" in german
    assert "Zustimmung:   zugestimmt von alice am 2025-03-04 10:00:00 UTC\n" in german
    assert "Teilnehmende: bob (Inhaber), carol (Beobachter)\n" in german
    assert "Ausgeführte Befehle:\n  [exit 0, 0.5 s] echo one\n" in german
    assert f"12 Ereignisse, vollständig versiegelt, SHA-256-Kettenprüfsumme {'f' * 64}" in german
    assert f"Prüfen mit:   secondline transcript verify {SID}\n" in german
    for english in ("Remote session", "Started", "Participants", "observer", "exit status"):
        assert english not in german


def test_file_session_lists_the_files_moved() -> None:
    """An SFTP session's note lists its file operations, with size and SHA-256, instead of
    commands; one that moved none says so."""
    moved = ("upload /tmp/a size=3 sha256=" + "ab" * 32, "rename /tmp/a -> /tmp/b")
    text = session_note(facts(kind="sftp", command=None, commands=(), files=moved))
    assert "Commands run:" not in text
    assert "Files moved:\n  upload /tmp/a size=3 sha256=" + "ab" * 32 in text
    assert "  rename /tmp/a -> /tmp/b\n" in text
    assert "Files moved:\n  (none recorded)" in session_note(facts(kind="sftp", files=()))
