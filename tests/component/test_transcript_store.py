"""The shared transcript store: what one node records is read, verified and (after that
node died) sealed by another, from the database's copy; exactly one node claims a dead
node's session. Real recorder, real files, real SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.db.engine import create_engine, migrate, session_factory
from broker.db.models_sessions import RemoteSession
from broker.db.models_transcripts import TranscriptChunk
from broker.sessions import store as session_store
from broker.transcript import (
    CastHeader,
    MarkParser,
    SessionInfo,
    TranscriptRecorder,
    export_text,
    recover,
    transcript_paths,
    verify_path,
)
from broker.transcript.kept_files import kept_dir
from broker.transcript.store import DatabaseStore
from tests.support.database import Backend

pytestmark = pytest.mark.postgres

KEY = Ed25519PrivateKey.from_private_bytes(b"\x31" * 32)
SID = "s-" + "T" * 22


@dataclass
class Nodes:
    db: async_sessionmaker[AsyncSession]
    tmp: Path

    def store(self, name: str) -> DatabaseStore:
        root = self.tmp / name / "transcripts"
        root.mkdir(parents=True, exist_ok=True)
        return DatabaseStore(root, self.tmp / name / "scratch", self.db, name)


@pytest.fixture
async def nodes(backend: Backend, tmp_path: Path) -> AsyncIterator[Nodes]:
    (tmp_path / "data").mkdir()
    await asyncio.to_thread(migrate, backend.url)
    engine = create_engine(backend.url)
    db = session_factory(engine)
    async with db() as s, s.begin():
        for sid in (SID,):
            s.add(
                RemoteSession(
                    id=sid,
                    ticket_id=7,
                    customer="acme",
                    agent_id="ag-" + "x" * 16,
                    agent_name="web01",
                    owner="bob",
                    owner_level=2,
                    kind="shell",
                    via="ssh",
                    state="live",
                    node="n1",
                    created_at=dt.datetime(2026, 12, 7, tzinfo=dt.UTC),
                )
            )
    yield Nodes(db, tmp_path)
    await engine.dispose()


def recorder(root: Path) -> TranscriptRecorder:
    header = CastHeader(
        width=80,
        height=24,
        timestamp=1700000000,
        session=SessionInfo(session_id=SID, ticket="T-7", agent="web01", staff="bob"),
    )
    return TranscriptRecorder(root, header, KEY, started_at=0.0)


def output(rec: TranscriptRecorder, parser: MarkParser, first: int, count: int) -> None:
    for i in range(first, first + count):
        forward, marks = parser.feed(b"line %d\r\n" % i)
        rec.output(forward, float(i), marks)
    rec.flush()


async def test_a_sealed_transcript_reads_the_same_on_every_node(nodes: Nodes) -> None:
    """Recorded and sealed on n1 with a file an SFTP transfer kept, copied while it ran and
    at its seal: n2 gets files byte for byte n1's (the kept file too), which verify as
    valid and render as text."""
    n1, n2 = nodes.store("n1"), nodes.store("n2")
    rec = recorder(n1.root)
    parser = MarkParser()
    output(rec, parser, 0, 3)
    assert await n1.ship(SID) is False  # live: copied so far, not sealed
    content = b"kept by sftp\n"
    kept = kept_dir(transcript_paths(n1.root, SID).cast)
    kept.mkdir()
    (kept / "1").write_bytes(content)
    digest = hashlib.sha256(content).hexdigest()
    rec.marker(f"file upload /tmp/a.txt size={len(content)} sha256={digest} kept=1", 3.0)
    output(rec, parser, 3, 2)
    rec.seal(True, "ended", 10.0)
    assert await n1.ship(SID) is True
    local = transcript_paths(n1.root, SID)
    async with n2.opened(SID) as root:
        assert root != n2.root  # n2 recorded nothing: a scratch copy from the database
        copy = transcript_paths(root, SID)
        for mine, theirs in ((local.cast, copy.cast), (local.chain, copy.chain)):
            assert theirs.read_bytes() == mine.read_bytes()
        assert copy.seal.read_bytes() == local.seal.read_bytes()
        assert (kept_dir(copy.cast) / "1").read_bytes() == content
        result = verify_path(copy.cast, KEY.public_key())
        assert (result.status, result.event_count) == ("valid", 6)
        export_text(copy.cast, root / "out.txt")
        assert "line 4" in (root / "out.txt").read_text()
    assert not root.exists()  # the scratch copy is gone after the read


async def test_a_dead_nodes_transcript_is_sealed_from_the_copy_by_another(
    nodes: Nodes,
) -> None:
    """n1 copied two rounds and died with a line half written: n2 seals the database's copy
    as interrupted (the torn line was never copied), stores the seal, and a third node
    verifies it as valid, cut short, with every copied event."""
    n1, n2, n3 = nodes.store("n1"), nodes.store("n2"), nodes.store("n3")
    rec = recorder(n1.root)
    parser = MarkParser()
    output(rec, parser, 0, 4)
    await n1.ship(SID)
    output(rec, parser, 4, 4)
    with transcript_paths(n1.root, SID).cast.open("ab") as fh:
        fh.write(b'[9.000000, "o", "torn')  # the write a SIGKILL cut
    await n1.ship(SID)
    async with nodes.db() as s:
        chunks = (await s.execute(select(TranscriptChunk.data))).scalars().all()
    assert all(not c.endswith(b"torn") for c in chunks)

    async with n2.recovering(SID) as root:
        seal = await asyncio.to_thread(recover, transcript_paths(root, SID).cast, KEY, 20.0)
        assert await n2.ship(SID, root) is True
    assert (seal.complete, seal.end_reason, seal.event_count) == (False, "interrupted", 8)
    async with n3.opened(SID) as root:
        result = verify_path(transcript_paths(root, SID).cast, KEY.public_key())
    assert (result.status, result.event_count) == ("valid_cut_short", 8)


async def test_exactly_one_node_claims_a_dead_nodes_session(nodes: Nodes) -> None:
    """Three survivors claim n1's session at once: one wins; the winner may claim again
    after its own restart, and a survivor of the winner's death takes it over."""

    async def claim(by: str, gone: str | None) -> bool:
        async with nodes.db() as s, s.begin():
            return await session_store.claim_recovery(s, SID, by=by, gone=gone)

    won = await asyncio.gather(*(claim(n, "n1") for n in ("n2", "n3", "n4")))
    assert sorted(won) == [False, False, True]
    winner = ("n2", "n3", "n4")[won.index(True)]
    loser = next(n for n in ("n2", "n3", "n4") if n != winner)
    assert await claim(loser, "n1") is False
    assert await claim(winner, None) is True  # the winner, restarted
    assert await claim(loser, winner) is True  # the winner died while sealing
    async with nodes.db() as s:
        theirs = {r.id for r in await session_store.unfinished(s, node=loser)}
    assert theirs == {SID}
