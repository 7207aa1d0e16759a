"""The hub's recorder flushes around a session's end (a real recorder on disk)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.sessions.facts import SessionFacts
from broker.sessions.hub import LiveSession
from broker.sessions.hub_core import HubLimits
from broker.transcript import CastHeader, SessionInfo, TranscriptRecorder

SID = "s-" + "h" * 22


def _live(root: Path) -> LiveSession:
    header = CastHeader(
        width=80,
        height=24,
        timestamp=1700000000,
        session=SessionInfo(session_id=SID, ticket="T-9", agent="web01", staff="bob"),
    )
    recorder = TranscriptRecorder(
        root, header, Ed25519PrivateKey.generate(), started_at=time.time()
    )
    facts = SessionFacts(
        session_id=SID,
        ticket_id=9,
        ticket_title="disk full",
        customer="acme",
        agent_id="ag-0123456789abcdef",
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
    # Every byte asks for a flush, so the session ends with one under way.
    limits = HubLimits(idle_timeout=60.0, max_seconds=3600.0, flush_bytes=1)
    return LiveSession(facts, recorder, limits, on_member=lambda *_: None, started_at=time.time())


async def test_a_tick_after_the_end_restarts_no_flush(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A session that ends while a flush is asked for is sealed whole, and the manager's
    next tick finds nothing to restart: the flush stopped early on purpose, and a restarted
    one met the sealed recorder ("recording failed: recorder_closed")."""
    live = _live(tmp_path)
    live.agent_output(b"last words\r\n", False)
    assert live.core.flushing
    live.end("ended", code="exit", message="the session ended")
    outcome = await live.run()
    assert outcome.seal is not None
    assert outcome.seal.complete
    with caplog.at_level(logging.WARNING):
        live.tick()
    assert [r.getMessage() for r in caplog.records] == []
