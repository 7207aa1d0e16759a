"""Tests of what a session's end writes, decided before the one writer writes it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from broker.db.models_sessions import RemoteSession
from broker.sessions import lifecycle as lc
from broker.sessions.facts import SessionFacts
from broker.sessions.session_end import end_of_row, end_of_start
from broker.transcript import Command, Seal

NOW = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.UTC)
SEAL = Seal(
    session_id="s-" + "R" * 22,
    event_count=7,
    final_hash="ab" * 32,
    complete=False,
    end_reason="interrupted",
    sealed_at="2026-03-02T10:00:00Z",
    key_fingerprint="SHA256:x",
    signature="c2ln",
)
FACTS = SessionFacts(
    session_id="s-" + "R" * 22,
    ticket_id=1042,
    ticket_title="Printer queue stuck",
    customer="acme",
    agent_id="a-1",
    agent_name="web01",
    owner="bob",
    owner_level=2,
    kind="shell",
    command=None,
    via="ssh",
    source="127.0.0.1",
    term="xterm",
    cols=80,
    rows=24,
)


def _row(state: str) -> RemoteSession:
    return RemoteSession(
        id=FACTS.session_id,
        ticket_id=1042,
        customer="acme",
        agent_id="a-1",
        agent_name="web01",
        owner="bob",
        owner_level=2,
        kind="exec",
        command="mysql -ppassw0rd -e 'select 1'",
        via="ssh",
        state=state,
        consent="approved",
        consent_by="alice",
        consent_at=NOW,
        started_at=NOW - dt.timedelta(minutes=5),
    )


def _recovered(state: str, seal: Seal | None) -> tuple[lc.WriteEnd, lc.AuditEnd]:
    write, audit = lc.SessionLifecycle.restored(state).feed(lc.Recovered(sealed=seal is not None))
    assert isinstance(write, lc.WriteEnd)
    assert isinstance(audit, lc.AuditEnd)
    return write, audit


def test_a_recovered_live_row_is_interrupted_with_its_note(tmp_path: Path) -> None:
    """A live row a crash left: "interrupted", its transcript's seal, and a note that says
    the broker stopped, with the consent the row kept and the command line scrubbed."""
    cast = tmp_path / f"{FACTS.session_id}.cast"
    cast.write_bytes(b"{}\n")
    write, audit = _recovered("live", SEAL)
    commands = (Command(command_line="uptime", start=1.0, duration=1.0, exit_status=0),)
    record = end_of_row(_row("live"), SEAL, commands, cast, write, audit, NOW, 1 << 20)
    assert record.values["state"] == "interrupted"
    assert record.values["end_reason"] == "interrupted"
    assert record.values["transcript_digest"] == SEAL.final_hash
    assert (record.participants_left, record.queued_at) == ("broker stopped", NOW)
    assert record.note is not None
    assert record.note.end_reason == "interrupted (the broker stopped)"
    assert (record.note.consent, record.note.consent_by) == ("approved", "alice")
    assert record.note.command is not None
    assert "passw0rd" not in record.note.command
    assert record.note.attachments == (f"{FACTS.session_id}.cast", f"{FACTS.session_id}.txt")
    assert record.audit is not None
    assert (record.audit.actor, record.audit.action) == ("secondline", "session.interrupted")
    assert record.audit.details["state_was"] == "live"


def test_a_recovered_start_gets_no_note(tmp_path: Path) -> None:
    """A row a crash left while it was starting never ran: interrupted, and no note."""
    write, audit = _recovered("waiting_consent", SEAL)
    record = end_of_row(
        _row("waiting_consent"), SEAL, (), tmp_path / "none.cast", write, audit, NOW, 1 << 20
    )
    assert record.values["state"] == "interrupted"
    assert record.note is None
    assert record.audit is not None
    assert record.audit.details["state_was"] == "waiting_consent"


def test_a_refused_start_writes_only_its_row() -> None:
    """A start refused before it ran: state, reason (cut to the column) and time; nobody
    to close, no note, no second audit (the refusal was audited where it was decided)."""
    write = lc.WriteEnd("refused", "x" * 300, note=False)
    record = end_of_start(FACTS, write, NOW)
    assert record.values == {"state": "refused", "end_reason": "x" * 200, "ended_at": NOW}
    assert (record.participants_left, record.note, record.audit) == (None, None, None)
