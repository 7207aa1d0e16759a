"""A hub whose output handling fails (a real hub and recorder on disk, the loop's real
output turns): the session ends saying why, its transcript verifies and says how much
output was lost, and another session's output is still served."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.sessions.facts import Outcome, SessionFacts
from broker.sessions.hub import LiveSession
from broker.sessions.hub_core import HubLimits, end_message
from broker.sessions.output_turns import OutputTurns
from broker.transcript import (
    CastHeader,
    SessionInfo,
    TranscriptRecorder,
    transcript_paths,
    verify_transcript,
)

WAIT = 20.0


class Screen:
    """A participant's terminal that keeps what it is shown; ``broken`` makes showing raise
    (a terminal implementation with a bug)."""

    def __init__(self) -> None:
        self.shown = bytearray()
        self.broken = False
        self.outcome: Outcome | None = None

    def write_output(self, data: bytes, stderr: bool) -> None:
        if self.broken:
            raise RuntimeError("this terminal is broken")
        self.shown += data

    def buffered(self) -> int:
        return 0

    def show_state(self, state: str, reason: str, session_id: str) -> None:
        pass

    def show_participants(self, people: list[dict[str, str]]) -> None:
        pass

    def show_notice(self, message: str) -> None:
        pass

    def drop(self, message: str) -> None:
        pass

    def pause_input(self, paused: bool) -> None:
        pass

    def finish(self, outcome: Outcome) -> None:
        self.outcome = outcome


def live_session(root: Path, key: Ed25519PrivateKey, sid: str) -> LiveSession:
    header = CastHeader(
        width=80,
        height=24,
        timestamp=1700000000,
        session=SessionInfo(session_id=sid, ticket="T-9", agent="web01", staff="bob"),
    )
    recorder = TranscriptRecorder(root, header, key, started_at=time.time())
    facts = SessionFacts(
        session_id=sid,
        ticket_id=9,
        ticket_title="printer",
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
    limits = HubLimits(idle_timeout=60.0, max_seconds=3600.0)
    return LiveSession(facts, recorder, limits, on_member=lambda *_: None, started_at=time.time())


async def test_a_session_whose_output_fails_ends_saying_so_and_the_others_go_on(
    tmp_path: Path,
) -> None:
    key = Ed25519PrivateKey.generate()
    turns = OutputTurns.for_loop()
    broken = live_session(tmp_path, key, "s-" + "b" * 22)
    other = live_session(tmp_path, key, "s-" + "o" * 22)
    screens = {broken: Screen(), other: Screen()}
    for live, screen in screens.items():
        live.attach(screen, "bob", "owner", "ssh")
    screens[broken].broken = True
    # Both sessions' bulk waits in line; the broken one is served first and fails.
    broken.channel.agent_data(b"b" * 40_000, False)
    other.channel.agent_data(b"o" * 40_000, False)
    assert turns.waiting(broken) == turns.waiting(other) == 40_000
    async with asyncio.timeout(WAIT):
        outcome = await broken.run()
    assert outcome.code == "output_failed"
    assert outcome.message == end_message("output_failed")
    assert outcome.seal is not None
    assert outcome.seal.complete
    assert outcome.seal.end_reason == "broker error"
    assert screens[broken].outcome == outcome
    paths = transcript_paths(tmp_path, broken.session_id)
    result = verify_transcript(paths.cast, key.public_key(), paths.seal, paths.chain)
    assert result.status == "valid"
    assert "output lost: 40000 bytes" in paths.cast.read_text()
    # The other session's line was served without anything new coming in to start a turn.
    assert turns.waiting(other) == 0
    assert bytes(screens[other].shown) == b"o" * 40_000
    assert other.running
    other.end("ended", code="exit", message="the session ended")
    async with asyncio.timeout(WAIT):
        assert (await other.run()).code == "exit"
