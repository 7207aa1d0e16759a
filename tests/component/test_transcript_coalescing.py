"""Output coalescing in the recorder: one event per window or block instead of one per SSH
packet, the same canonical encoding, and transcripts written per chunk still verifying."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.transcript import (
    CastHeader,
    MarkParser,
    SessionInfo,
    TranscriptRecorder,
    verify_transcript,
)
from broker.transcript.asciicast import encode_event_line, event_line_parts
from broker.transcript.recorder import OUTPUT_BLOCK, OUTPUT_WINDOW

KEY = Ed25519PrivateKey.from_private_bytes(b"\x11" * 32)
SID = "s-" + "c" * 22
# Written by the recorder before coalescing (one o event per chunk), with KEY.
PER_CHUNK = Path(__file__).parent / "data" / "transcript_per_chunk"
PER_CHUNK_SID = "s-" + "g" * 22


class Session:
    """A parser and a recorder wired as the session hub wires them."""

    def __init__(self, root: Path, session_id: str = SID, **kwargs: int) -> None:
        self.parser = MarkParser()
        header = CastHeader(  # noqa: S604 - "shell" is the recorded SHELL; nothing is run
            width=80,
            height=24,
            timestamp=1700000000,
            session=SessionInfo(session_id=session_id, ticket="T-7", agent="web01", staff="bob"),
            term="xterm-256color",
            shell="/bin/bash",
            title="golden",
        )
        self.recorder = TranscriptRecorder(root, header, KEY, started_at=1000.0, **kwargs)

    def out(self, data: bytes, now: float) -> None:
        forward, marks = self.parser.feed(data)
        self.recorder.output(forward, now, marks)


def events(path: Path) -> list[list[object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()[1:]]


def output_text(path: Path) -> str:
    return "".join(str(e[2]) for e in events(path) if e[1] == "o")


def test_output_is_coalesced_per_window_not_per_chunk(tmp_path: Path) -> None:
    """Chunks 10 ms apart share one event per OUTPUT_WINDOW, timed at its first chunk."""
    session = Session(tmp_path)
    for i in range(100):
        session.out(b"%d;" % i, 1000.0 + i / 100)
    session.recorder.seal(True, "ended", 1002.0)
    out = [e for e in events(session.recorder.paths.cast) if e[1] == "o"]
    assert "".join(str(e[2]) for e in out) == "".join(f"{i};" for i in range(100))
    assert len(out) <= 1.0 / OUTPUT_WINDOW + 1
    starts = [float(str(e[0])) for e in out]
    assert all(b - a >= OUTPUT_WINDOW - 1e-6 for a, b in itertools.pairwise(starts))


def test_any_other_event_cuts_the_output_run(tmp_path: Path) -> None:
    """Input, markers and resizes land between the output before and after them."""
    session = Session(tmp_path)
    session.out(b"before", 1000.0)
    session.recorder.input(b"k", 1000.001, echoed=True)
    session.out(b"echo", 1000.002)
    session.recorder.resize(100, 30, 1000.003)
    session.out(b"after", 1000.004)
    session.recorder.seal(True, "ended", 1001.0)
    assert [e[1:] for e in events(session.recorder.paths.cast)] == [
        ["o", "before"],
        ["i", "k"],
        ["o", "echo"],
        ["r", "100x30"],
        ["o", "after"],
    ]


def test_bulk_output_becomes_block_sized_events(tmp_path: Path) -> None:
    """Many small chunks at one instant become events of OUTPUT_BLOCK bytes, not one each."""
    session = Session(tmp_path, flush_bytes=1 << 30)  # no flush cuts a run short here
    for _ in range(1000):
        session.out(b"\x00" * 1000, 1001.0)
    session.recorder.seal(True, "ended", 1002.0)
    out = [e for e in events(session.recorder.paths.cast) if e[1] == "o"]
    assert "".join(str(e[2]) for e in out) == "\x00" * 1_000_000
    # Every event but the last holds as many whole chunks as fit in a block.
    assert all(len(str(e[2])) > OUTPUT_BLOCK - 1000 for e in out[:-1])
    assert verify_transcript(session.recorder.paths.cast, KEY.public_key()).status == "valid"


@pytest.mark.parametrize(
    "data",
    [
        "",
        "plain",
        "\x00\x01\x1b[0m\x7f",
        'quote " back \\ slash',
        "é ✓ 😀",
        "\u2028\u2029",
        "\ufffd",
    ],
)
def test_event_parts_are_the_canonical_encoding(data: str) -> None:
    """head + body + "]" is exactly the json.dumps encoding the verifier re-creates."""
    head, body = event_line_parts(12.5, "o", data)
    dumped = json.dumps(data, ensure_ascii=False, separators=(", ", ": "))
    assert head + body + b"]" == f'[12.500000, "o", {dumped}]'.encode()
    assert encode_event_line(12.5, "o", data) == head + body + b"]"


def copy_per_chunk(root: Path) -> Path:
    for name in PER_CHUNK.iterdir():
        shutil.copy(name, root / name.name)
    return root / f"{PER_CHUNK_SID}.cast"


def test_a_transcript_written_per_chunk_still_verifies(tmp_path: Path) -> None:
    """A transcript from before coalescing (two o events 1 ms apart) verifies as valid."""
    cast = copy_per_chunk(tmp_path)
    written = events(cast)
    assert [0.21, "o", "l"] in written
    assert [0.211, "o", "s"] in written
    assert verify_transcript(cast, KEY.public_key()).status == "valid"


def test_a_changed_byte_in_a_per_chunk_transcript_is_named(tmp_path: Path) -> None:
    """One byte changed in event 5 of the old transcript: invalid, event 5 named."""
    cast = copy_per_chunk(tmp_path)
    lines = cast.read_bytes().split(b"\n")
    assert lines[5] == b'[0.211000, "o", "s"]'
    lines[5] = b'[0.211000, "o", "S"]'
    cast.write_bytes(b"\n".join(lines))
    result = verify_transcript(cast, KEY.public_key())
    assert result.status == "invalid"
    assert result.first_bad_event == 5


def test_the_same_session_today_holds_the_same_text_in_fewer_events(tmp_path: Path) -> None:
    """Replaying the old transcript's chunks into today's recorder coalesces the chunks
    1 ms apart and keeps every other event where it was."""
    (tmp_path / "new").mkdir()
    (tmp_path / "old").mkdir()
    session = Session(tmp_path / "new", PER_CHUNK_SID)
    rec = session.recorder
    rec.marker("consent approved by bob", 1000.0)
    session.out(b"\x1b]133;A\x07$ \x1b]133;B\x07", 1000.1)
    rec.input(b"l", 1000.2, echoed=True)
    session.out(b"l", 1000.21)
    session.out(b"s", 1000.211)
    rec.input(b"\r", 1000.3, echoed=True)
    session.out(b"\r\n\x1b]133;C\x07caf\xc3", 1000.4)
    session.out(b"\xa9 \x00\x01 \xe2\x9c\x93\r\n", 1000.401)
    session.out(b"\x1b]133;D;0\x07", 1000.402)
    rec.resize(100, 30, 1000.5)
    session.out(b"Password: ", 1000.6)
    rec.input(b"secret\r", 1000.7, echoed=False)
    session.out(b"\r\nbye\r\n", 1000.8)
    rec.seal(True, "ended", 1001.0)
    old = copy_per_chunk(tmp_path / "old")
    new = rec.paths.cast
    assert output_text(new) == output_text(old)
    assert [0.21, "o", "ls"] in events(new)
    assert [0.4, "o", "\r\n\x1b]133;C\x07café \x00\x01 ✓\r\n\x1b]133;D;0\x07"] in events(new)
    assert len(events(new)) == len(events(old)) - 3
    assert verify_transcript(new, KEY.public_key()).status == "valid"


def test_a_changed_byte_inside_a_block_event_is_named(tmp_path: Path) -> None:
    """Bulk output recorded as block events: one changed byte deep in event 2 is found."""
    session = Session(tmp_path, flush_bytes=1 << 30)
    for _ in range(200):
        session.out(b"y\n" * 500, 1001.0)
    session.recorder.seal(True, "ended", 1002.0)
    cast = session.recorder.paths.cast
    assert verify_transcript(cast, KEY.public_key()).status == "valid"
    lines = cast.read_bytes().split(b"\n")
    line = bytearray(lines[2])
    middle = line.index(b"y", len(line) // 2)
    line[middle] = ord("z")
    lines[2] = bytes(line)
    cast.write_bytes(b"\n".join(lines))
    result = verify_transcript(cast, KEY.public_key())
    assert result.status == "invalid"
    assert result.first_bad_event == 2
