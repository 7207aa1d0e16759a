"""A flush in two steps: events encoded and digested where it is asked for (the event
loop), their writes done later by a writer thread, always in the order taken."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.transcript import (
    CastHeader,
    RecorderClosed,
    SessionInfo,
    TranscriptRecorder,
    verify_transcript,
)

KEY = Ed25519PrivateKey.from_private_bytes(b"\x12" * 32)
SID = "s-" + "p" * 22


def recorder(root: Path) -> TranscriptRecorder:
    header = CastHeader(
        width=80,
        height=24,
        timestamp=1700000000,
        session=SessionInfo(session_id=SID, ticket="T-9", agent="web01", staff="bob"),
    )
    return TranscriptRecorder(root, header, KEY, started_at=1000.0)


def output_text(rec: TranscriptRecorder) -> str:
    lines = rec.paths.cast.read_text(encoding="utf-8").splitlines()[1:]
    return "".join(str(json.loads(line)[2]) for line in lines)


def test_writes_wait_for_their_job_and_keep_the_order_taken(tmp_path: Path) -> None:
    """Two flushes taken, the second's job run first: both batches are on disk in the
    order taken, the chain verifies, and the first job then finds nothing left to write."""
    rec = recorder(tmp_path)
    size = rec.paths.cast.stat().st_size
    rec.output(b"first\r\n", 1000.1, ())
    first = rec.prepare_flush()
    rec.output(b"second\r\n", 1000.2, ())
    second = rec.prepare_flush()
    assert rec.paths.cast.stat().st_size == size  # taken and digested, not written
    assert rec.buffered > 0  # what waits for the writer counts against the hub's bound
    second()
    assert output_text(rec) == "first\r\nsecond\r\n"
    assert rec.buffered == 0
    written = rec.paths.cast.read_bytes()
    first()
    assert rec.paths.cast.read_bytes() == written
    rec.seal(True, "ended", 1001.0)
    assert verify_transcript(rec.paths.cast, KEY.public_key()).status == "valid"


def test_the_seal_writes_what_was_taken_and_then_refuses_flushes(tmp_path: Path) -> None:
    """A flush taken but not yet written when the seal runs is written by the seal (its
    job then has nothing to do); flushes asked for after the seal are refused."""
    rec = recorder(tmp_path)
    rec.output(b"taken\r\n", 1000.1, ())
    job = rec.prepare_flush()
    rec.output(b"left\r\n", 1000.2, ())
    seal = rec.seal(True, "ended", 1001.0)
    job()
    assert output_text(rec) == "taken\r\nleft\r\n"
    assert seal.event_count == 2
    with pytest.raises(RecorderClosed):
        rec.prepare_flush()
    assert verify_transcript(rec.paths.cast, KEY.public_key()).status == "valid"
