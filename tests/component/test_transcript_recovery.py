"""Recovery of transcripts interrupted by a broker crash (a real SIGKILL included)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.transcript import (
    CastHeader,
    InvalidSessionId,
    MarkParser,
    RecoveryError,
    SessionInfo,
    TranscriptNotFound,
    TranscriptRecorder,
    find_unsealed,
    recover,
    transcript_paths,
    verify_transcript,
)
from broker.transcript.chain import CHAIN_ENTRY_BYTES

KEY = Ed25519PrivateKey.from_private_bytes(b"\x22" * 32)
REPO = Path(__file__).resolve().parents[2]


def sid(letter: str) -> str:
    return "s-" + letter * 22


def unsealed(root: Path, session_id: str, outputs: int = 5) -> Path:
    """A recorder that flushed some events and was then abandoned, as by a crash."""
    header = CastHeader(
        width=80,
        height=24,
        timestamp=1700000000,
        session=SessionInfo(session_id=session_id, ticket="T-3", agent="db01", staff="eve"),
    )
    recorder = TranscriptRecorder(root, header, KEY, started_at=0.0)
    parser = MarkParser()
    for i in range(outputs):
        forward, marks = parser.feed(b"line %d\r\n" % i)
        recorder.output(forward, float(i), marks)
    recorder.flush()
    return recorder.paths.cast


def status(cast: Path) -> str:
    return verify_transcript(cast, KEY.public_key()).status


CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from broker.transcript import CastHeader, MarkParser, SessionInfo, TranscriptRecorder

    key = Ed25519PrivateKey.from_private_bytes(b"\\x22" * 32)
    header = CastHeader(width=80, height=24, timestamp=1700000000, session=SessionInfo(
        session_id=sys.argv[2], ticket="T-3", agent="db01", staff="eve"))
    recorder = TranscriptRecorder(Path(sys.argv[1]), header, key, started_at=0.0)
    parser = MarkParser()
    for i in range(50):
        forward, marks = parser.feed(b"flushed %d\\r\\n" % i)
        recorder.output(forward, i / 10, marks)
    recorder.flush()
    forward, marks = parser.feed(b"never flushed\\r\\n")
    recorder.output(forward, 6.0, marks)
    print("flushed", flush=True)
    sys.stdin.read()  # wait here until killed
    """
)


def test_sigkilled_broker_transcript_is_recovered(tmp_path: Path) -> None:
    """After SIGKILL the flushed events are sealed as interrupted and verify as cut short."""
    session_id = sid("k")
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path), session_id],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=REPO,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"flushed\n"
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for stream in (child.stdin, child.stdout):
            if stream is not None:
                stream.close()
    cast = transcript_paths(tmp_path, session_id).cast
    assert status(cast) == "incomplete"
    assert find_unsealed(tmp_path) == [cast]
    seal = recover(cast, KEY, 1700000500.0)
    assert (seal.complete, seal.end_reason, seal.event_count) == (False, "interrupted", 50)
    result = verify_transcript(cast, KEY.public_key())
    assert result.status == "valid_cut_short", result.message
    assert "interrupted" in result.message
    assert find_unsealed(tmp_path) == []


def test_torn_last_line_is_dropped(tmp_path: Path) -> None:
    """A line torn by the crash is cut off before sealing."""
    cast = unsealed(tmp_path, sid("t"))
    with cast.open("ab") as fh:
        fh.write(b'[9.000000, "o", "half a li')
    seal = recover(cast, KEY, 1700000500.0)
    assert seal.event_count == 5
    assert cast.read_bytes().endswith(b"\n")
    assert status(cast) == "valid_cut_short"


def test_missing_chain_entries_are_completed(tmp_path: Path) -> None:
    """Events the crash kept out of the chain file are added to it, torn entry dropped."""
    cast = unsealed(tmp_path, sid("c"))
    chain = transcript_paths(tmp_path, sid("c")).chain
    data = chain.read_bytes()
    chain.write_bytes(data[: len(data) - 2 * CHAIN_ENTRY_BYTES - 10])
    recover(cast, KEY, 1700000500.0)
    assert chain.read_bytes() == data
    assert status(cast) == "valid_cut_short"


def test_missing_chain_file_is_rebuilt(tmp_path: Path) -> None:
    """A transcript whose chain file is gone gets a new one, so tampering can be named."""
    cast = unsealed(tmp_path, sid("m"))
    chain = transcript_paths(tmp_path, sid("m")).chain
    data = chain.read_bytes()
    chain.unlink()
    recover(cast, KEY, 1700000500.0)
    assert chain.read_bytes() == data
    assert chain.stat().st_mode & 0o777 == 0o600


def test_torn_chain_header_is_rewritten(tmp_path: Path) -> None:
    """A chain file without a complete first line is written afresh."""
    cast = unsealed(tmp_path, sid("h"))
    chain = transcript_paths(tmp_path, sid("h")).chain
    data = chain.read_bytes()
    chain.write_bytes(data[:20])
    recover(cast, KEY, 1700000500.0)
    assert chain.read_bytes() == data


def test_altered_transcript_is_not_sealed(tmp_path: Path) -> None:
    """A complete line that differs from its chain digest makes recovery refuse."""
    cast = unsealed(tmp_path, sid("a"))
    original = cast.read_bytes()
    altered = original.replace(b"line 2", b"line X")
    cast.write_bytes(altered)
    with pytest.raises(RecoveryError, match="event 3"):
        recover(cast, KEY, 1700000500.0)
    assert cast.read_bytes() == altered
    assert status(cast) == "invalid"


def test_altered_header_is_not_sealed(tmp_path: Path) -> None:
    """A header that differs from the chain file's h0 makes recovery refuse."""
    cast = unsealed(tmp_path, sid("b"))
    cast.write_bytes(cast.read_bytes().replace(b'"eve"', b'"mal"'))
    with pytest.raises(RecoveryError, match="header"):
        recover(cast, KEY, 1700000500.0)


def test_malformed_complete_line_is_not_sealed(tmp_path: Path) -> None:
    """A complete line that does not parse makes recovery refuse."""
    cast = unsealed(tmp_path, sid("f"))
    with cast.open("ab") as fh:
        fh.write(b"garbage\n")
    with pytest.raises(RecoveryError, match="cannot be sealed"):
        recover(cast, KEY, 1700000500.0)


def test_chain_file_longer_than_transcript_is_not_sealed(tmp_path: Path) -> None:
    """Events in the chain file that the transcript lacks mean lines were removed."""
    cast = unsealed(tmp_path, sid("l"))
    lines = cast.read_bytes().split(b"\n")
    cast.write_bytes(b"\n".join(lines[:-3]) + b"\n")
    with pytest.raises(RecoveryError, match="lacks"):
        recover(cast, KEY, 1700000500.0)


def test_header_only_torn_is_not_sealed(tmp_path: Path) -> None:
    """A transcript without a complete header has nothing to seal."""
    cast = unsealed(tmp_path, sid("e"), outputs=0)
    cast.write_bytes(cast.read_bytes()[:30])
    with pytest.raises(RecoveryError, match="no complete header"):
        recover(cast, KEY, 1700000500.0)


def test_header_naming_another_session_is_not_sealed(tmp_path: Path) -> None:
    """A transcript whose header names another session is refused."""
    cast = unsealed(tmp_path, sid("n"))
    other = tmp_path / f"{sid('o')}.cast"
    cast.rename(other)
    with pytest.raises(RecoveryError, match="another session"):
        recover(other, KEY, 1700000500.0)


def test_sealed_transcript_is_left_alone(tmp_path: Path) -> None:
    """Recovering a sealed transcript returns its seal and changes nothing."""
    cast = unsealed(tmp_path, sid("s"))
    first = recover(cast, KEY, 1700000500.0)
    before = cast.read_bytes()
    assert recover(cast, KEY, 1700000999.0) == first
    assert cast.read_bytes() == before


def test_torn_seal_is_rewritten(tmp_path: Path) -> None:
    """A seal file cut by a crash during sealing is written again."""
    cast = unsealed(tmp_path, sid("w"))
    seal_path = transcript_paths(tmp_path, sid("w")).seal
    seal_path.write_bytes(b'{"format": "secondline-se')
    recover(cast, KEY, 1700000500.0)
    assert status(cast) == "valid_cut_short"


def test_missing_seal_file_is_created(tmp_path: Path) -> None:
    """A transcript without even the seal placeholder is sealed all the same."""
    cast = unsealed(tmp_path, sid("x"))
    transcript_paths(tmp_path, sid("x")).seal.unlink()
    recover(cast, KEY, 1700000500.0)
    assert status(cast) == "valid_cut_short"


def test_recover_refusals(tmp_path: Path) -> None:
    """A missing transcript or a file not named after a session id is refused."""
    with pytest.raises(TranscriptNotFound):
        recover(tmp_path / f"{sid('z')}.cast", KEY, 0.0)
    with pytest.raises(InvalidSessionId):
        recover(tmp_path / "../etc/passwd", KEY, 0.0)


def test_find_unsealed_skips_sealed_and_foreign_files(tmp_path: Path) -> None:
    """Only unsealed transcripts with valid names are listed, in order."""
    first = unsealed(tmp_path, sid("p"))
    second = unsealed(tmp_path, sid("q"))
    recover(second, KEY, 1700000500.0)
    (tmp_path / "s-notasession.cast").write_bytes(b"")
    (tmp_path / "notes.txt").write_bytes(b"")
    assert find_unsealed(tmp_path) == [first]
    assert json.loads(transcript_paths(tmp_path, sid("q")).seal.read_bytes())["complete"] is False
    assert os.stat(first).st_size > 0
