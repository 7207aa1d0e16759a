"""Transcript format 2: output as its exact bytes (``b``, base64) where JSON text would cost
more, read back, verified, recovered, exported and played like format 1."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.sessions.session_end import plan_attachments
from broker.tickets.outbox import read_attachments
from broker.transcript import (
    FORMAT_DENSE,
    FORMAT_TEXT,
    CastFormatError,
    CastHeader,
    MarkParser,
    SessionInfo,
    TranscriptRecorder,
    commands_from_cast,
    export_bundle,
    export_text,
    playable_cast,
    recover,
    verify_bundle,
    verify_transcript,
)
from broker.transcript.asciicast import (
    CastReader,
    encode_header_line,
    parse_header_line,
    read_lines,
)
from broker.transcript.export import read_cast
from broker.transcript.output import DENSE_MIN_BYTES, output_bytes, playable_size

KEY = Ed25519PrivateKey.from_private_bytes(b"\x33" * 32)
SID = "s-" + "f" * 22


class Session:
    """A parser and a recorder wired as the session hub wires them, in format 2 (the
    broker's) unless told otherwise."""

    def __init__(self, root: Path, transcript_format: int = FORMAT_DENSE) -> None:
        self.parser = MarkParser()
        header = CastHeader(
            width=80,
            height=24,
            timestamp=1700000000,
            session=SessionInfo(session_id=SID, ticket="T-9", agent="web01", staff="bob"),
            term="xterm-256color",
            transcript_format=transcript_format,
        )
        root.mkdir(parents=True, exist_ok=True)
        self.recorder = TranscriptRecorder(root, header, KEY, started_at=1000.0)
        self.cast = self.recorder.paths.cast

    def out(self, data: bytes, now: float) -> None:
        forward, marks = self.parser.feed(data)
        self.recorder.output(forward, now, marks)

    def seal(self, now: float = 1010.0) -> Path:
        self.recorder.output(self.parser.close(), now, [])  # as the hub does at the end
        self.recorder.seal(True, "ended", now)
        return self.cast


def lines(cast: Path) -> list[bytes]:
    return cast.read_bytes().split(b"\n")[:-1]


def codes(cast: Path) -> list[str]:
    return [json.loads(line)[1] for line in lines(cast)[1:]]


def recorded_output(cast: Path) -> bytes:
    """Every output byte the stored file holds, in order (o as UTF-8, b decoded)."""
    _, events = read_cast(cast)
    return b"".join(data for event in events if (data := output_bytes(event)) is not None)


def test_header_names_format_2_and_format_1_stays_as_it_was(tmp_path: Path) -> None:
    dense = Session(tmp_path / "2").seal()
    plain = Session(tmp_path / "1", FORMAT_TEXT).seal()
    assert json.loads(lines(dense)[0])["secondline"]["format"] == 2
    assert "format" not in json.loads(lines(plain)[0])["secondline"]
    assert parse_header_line(lines(dense)[0]).transcript_format == FORMAT_DENSE
    assert parse_header_line(lines(plain)[0]).transcript_format == FORMAT_TEXT


def test_zeros_are_bytes_text_stays_text_and_every_byte_comes_back(tmp_path: Path) -> None:
    """A block of zeros is written as base64 (4/3 of a byte per byte, not six), readable
    output as text; invalid UTF-8 as bytes, kept exactly (format 1 made it U+FFFD)."""
    session = Session(tmp_path)
    zeros = bytes(32 << 10)
    text = b"total 0\r\n" * 1000
    small_controls = b"\x1b]133;A\x07$ \x1b]133;B\x07"
    bad = b"caf\xe9 \xff\xfe ok"
    session.out(zeros, 1000.0)
    session.out(text, 1000.1)
    session.out(small_controls, 1000.2)
    session.out(bad, 1000.3)
    cast = session.seal()
    assert codes(cast) == ["b", "o", "o", "b"]
    assert recorded_output(cast) == zeros + text + small_controls + bad
    assert len(lines(cast)[1]) < len(zeros) * 4 // 3 + 40
    assert verify_transcript(cast, KEY.public_key()).status == "valid"


@pytest.mark.parametrize(
    ("block", "code"),
    [
        (b"y\n" * 4096, "b"),  # 1.5 bytes per byte as JSON text, 1.33 as base64
        (b"yes\n" * 2048, "o"),  # 1.25 as JSON text
        (b"\x1b[K" * 3000, "b"),  # six bytes for every ESC
        (b"\x1b[K" * 1000, "o"),  # under 4 KiB: text, whatever it holds
        (("é" * 3000).encode(), "o"),
    ],
)
def test_a_block_is_written_in_the_smaller_form(tmp_path: Path, block: bytes, code: str) -> None:
    session = Session(tmp_path)
    session.out(block, 1000.0)
    cast = session.seal()
    assert codes(cast) == [code]
    assert recorded_output(cast) == block


def test_a_large_chunk_becomes_events_of_at_most_64_kib(tmp_path: Path) -> None:
    session = Session(tmp_path)
    data = os.urandom(200_000)
    session.out(data, 1000.0)
    cast = session.seal()
    assert codes(cast) == ["b"] * 4
    assert recorded_output(cast) == data
    assert verify_transcript(cast, KEY.public_key()).status == "valid"


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    chunks=st.lists(
        st.one_of(
            st.binary(max_size=300),
            st.binary(min_size=DENSE_MIN_BYTES, max_size=DENSE_MIN_BYTES + 3000),
            st.text(max_size=2000).map(lambda s: s.encode("utf-8", "surrogatepass")),
        ),
        max_size=12,
    )
)
def test_any_output_round_trips_and_verifies(
    tmp_path_factory: pytest.TempPathFactory, chunks: list[bytes]
) -> None:
    """Whatever the chunks hold, the stored file gives back exactly those bytes, parses
    strictly, and verifies; its playable copy is the text format 1 would have recorded."""
    root = tmp_path_factory.mktemp("any")
    session = Session(root)
    for i, chunk in enumerate(chunks):
        session.out(chunk, 1000.0 + i * 0.1)  # one event per chunk: 100 ms apart
    cast = session.seal()
    forwarded = b"".join(chunks)
    assert recorded_output(cast) == forwarded
    assert verify_transcript(cast, KEY.public_key()).status == "valid"
    playable = playable_cast(cast, 1 << 30)
    assert playable is not None
    played = [json.loads(line) for line in playable.split(b"\n")[1:-1]]
    assert {event[1] for event in played} <= {"o"}
    assert "".join(event[2] for event in played) == forwarded.decode("utf-8", "replace")


# -- verification --------------------------------------------------------------------------


def _sealed_mixed(root: Path) -> Path:
    session = Session(root)
    session.out(b"$ ", 1000.0)
    session.recorder.input(b"x", 1000.5, echoed=True)
    session.out(bytes(8192), 1001.0)
    session.out(b"done\r\n", 1002.0)
    return session.seal()


def test_a_changed_byte_inside_a_b_event_names_that_event(tmp_path: Path) -> None:
    cast = _sealed_mixed(tmp_path)
    data = lines(cast)
    assert json.loads(data[3])[1] == "b"
    raw = bytearray(base64.b64decode(json.loads(data[3])[2]))
    raw[4000] = 1
    data[3] = b'[1.000000, "b", "' + base64.b64encode(bytes(raw)) + b'"]'
    cast.write_bytes(b"\n".join(data) + b"\n")
    result = verify_transcript(cast, KEY.public_key())
    assert result.status == "invalid"
    assert (result.first_bad_event, result.first_bad_line) == (3, 4)


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (b'[1.000000, "b", "AAB="]', "canonical base64"),  # padding bits not zero
        (b'[1.000000, "b", "AA=="]', None),  # the canonical spelling of one NUL: parses
        (b'[1.000000, "b", "AA"]', "canonical base64"),  # padding missing
        (b'[1.000000, "b", "A A="]', "canonical base64"),
        (b'[1.000000, "b", ""]', "canonical base64"),
        (b'[1.000000, "b", "' + base64.b64encode(bytes(65537)) + b'"]', "canonical base64"),
    ],
)
def test_b_events_parse_only_in_canonical_base64(event: bytes, reason: str | None) -> None:
    reader = CastReader()
    reader.feed_line(_header_line(FORMAT_DENSE))
    if reason is None:
        assert reader.feed_line(event).data == "AA=="  # type: ignore[union-attr]
        return
    with pytest.raises(CastFormatError) as info:
        reader.feed_line(event)
    assert reason in info.value.reason


def test_format_1_refuses_b_events_and_unknown_versions() -> None:
    reader = CastReader()
    reader.feed_line(_header_line(FORMAT_TEXT))
    with pytest.raises(CastFormatError, match="not in format 1"):
        reader.feed_line(b'[1.000000, "b", "AA=="]')
    for version in (b"1", b"3", b'"2"', b"2.0"):
        line = _header_line(FORMAT_DENSE).replace(b'"format": 2', b'"format": ' + version)
        with pytest.raises(CastFormatError, match=r"format|canonical"):
            CastReader().feed_line(line)


def _header_line(transcript_format: int) -> bytes:
    header = CastHeader(
        width=80,
        height=24,
        timestamp=1700000000,
        session=SessionInfo(session_id=SID, ticket="T-9", agent="web01", staff="bob"),
        transcript_format=transcript_format,
    )
    return encode_header_line(header)


def test_the_export_bundle_of_format_2_verifies_and_names_a_change(tmp_path: Path) -> None:
    cast = _sealed_mixed(tmp_path)
    bundle = tmp_path / "bundle.json"
    export_bundle(cast, bundle)
    assert verify_bundle(bundle, KEY.public_key()).status == "valid"
    doc = json.loads(bundle.read_text())
    assert doc["header"]["secondline"]["format"] == 2
    assert doc["events"][2][1] == "b"
    doc["events"][2][2] = base64.b64encode(b"\x00" * 8191 + b"\x01").decode()
    bundle.write_text(json.dumps(doc))
    result = verify_bundle(bundle, KEY.public_key())
    assert (result.status, result.first_bad_event) == ("invalid", 3)


def test_a_crashed_format_2_transcript_is_recovered_with_its_bytes(tmp_path: Path) -> None:
    """Flushed b events survive a crash; a torn b line is dropped; the seal says cut short."""
    session = Session(tmp_path)
    session.out(bytes(10_000), 1000.0)
    session.out(b"\xff" * 10, 1000.2)
    session.recorder.flush()
    with open(session.cast, "ab") as fh:
        fh.write(b'[1.500000, "b", "AAAA')  # the write a SIGKILL cut
    assert verify_transcript(session.cast, KEY.public_key()).status == "incomplete"
    seal = recover(session.cast, KEY, 2000.0)
    assert (seal.complete, seal.end_reason, seal.event_count) == (False, "interrupted", 2)
    assert verify_transcript(session.cast, KEY.public_key()).status == "valid_cut_short"
    assert recorded_output(session.cast) == bytes(10_000) + b"\xff" * 10


# -- what is read from it ----------------------------------------------------------------------


def test_commands_and_text_come_from_b_events_too(tmp_path: Path) -> None:
    """A command whose output is binary (its marks inside a b event) is still listed, and
    the text rendering shows what the terminal would."""
    session = Session(tmp_path)
    session.out(b"\x1b]133;A\x07$ \x1b]133;B\x07", 1000.0)
    session.out(b"head -c 8192 /dev/zero; echo end\r\n\x1b]133;C\x07", 1000.2)
    session.out(bytes(8192) + b"end\r\n\x1b]133;D;0\x07", 1000.4)
    cast = session.seal()
    assert codes(cast) == ["o", "o", "b"]
    (command,) = commands_from_cast(cast)
    assert (command.command_line, command.exit_status) == ("head -c 8192 /dev/zero; echo end", 0)
    out = tmp_path / "out.txt"
    export_text(cast, out)
    assert "end" in out.read_text().splitlines()


def test_the_playable_copy_is_asciicast_v2_text(tmp_path: Path) -> None:
    """b events become o text decoded as format 1 recorded it: a character split across
    two events stays whole, an invalid byte is U+FFFD; other lines stay as they are."""
    session = Session(tmp_path)
    block = b"\x01" * (DENSE_MIN_BYTES + 1) + "€".encode()[:2]
    session.out(block, 1000.0)
    session.out("€".encode()[2:] + b"\xff\x01" * 3000, 1000.2)
    session.recorder.resize(100, 30, 1000.3)
    session.out(b"plain", 1000.4)
    cast = session.seal()
    assert codes(cast) == ["b", "b", "r", "o"]
    playable = playable_cast(cast, 1 << 20)
    assert playable is not None
    stored, played = lines(cast), playable.split(b"\n")[:-1]
    assert played[0] == stored[0]
    events = [json.loads(line) for line in played[1:]]
    assert [e[1] for e in events] == ["o", "o", "r", "o"]
    assert events[0][2] == "\x01" * (DENSE_MIN_BYTES + 1)
    assert events[1][2] == "€" + "\ufffd\x01" * 3000
    assert played[3:] == stored[3:]
    assert playable_cast(cast, len(playable) - 1) is None  # over the limit: refused


def test_a_format_1_file_is_served_as_it_is(tmp_path: Path) -> None:
    cast = _sealed_format_1(tmp_path)
    assert playable_cast(cast, 1 << 20) == cast.read_bytes()


def _sealed_format_1(root: Path) -> Path:
    session = Session(root, FORMAT_TEXT)
    session.out(b"\x00\x00 old", 1000.0)
    return session.seal()


def test_both_versions_verify(tmp_path: Path) -> None:
    old = _sealed_format_1(tmp_path / "1")
    new = _sealed_mixed(tmp_path / "2")
    assert verify_transcript(old, KEY.public_key()).status == "valid"
    assert verify_transcript(new, KEY.public_key()).status == "valid"
    with old.open("rb") as fh:
        assert list(read_lines(fh))[1].data == b'[0.000000, "o", "\\u0000\\u0000 old"]'


def test_the_note_attachment_is_the_playable_copy(tmp_path: Path) -> None:
    cast = _sealed_mixed(tmp_path)
    (attachment,) = read_attachments(tmp_path, SID, [f"{SID}.cast"], 1 << 20)
    assert attachment.data == playable_cast(cast, 1 << 20)
    assert b'"b"' not in attachment.data


def test_the_note_leaves_out_a_cast_whose_playable_copy_is_over_the_limit(tmp_path: Path) -> None:
    """Zeros are 4/3 of a byte each stored, six as asciicast v2 text: the note plans with
    the size of what it would attach, and says why the .cast is left out."""
    session = Session(tmp_path)
    session.out(bytes(60_000), 1000.0)
    cast = session.seal()
    stored = cast.stat().st_size
    playable = playable_cast(cast, 1 << 20)
    assert playable is not None
    assert stored < 100_000 < len(playable)
    assert playable_size(cast, 1 << 20) == len(playable)
    assert playable_size(cast, 100_000) is None
    plan = plan_attachments(cast, SID, 100_000)
    assert plan.names == (f"{SID}.txt",)
    assert "as asciicast v2, over the attachment limit" in plan.left_out[0]
    assert plan_attachments(cast, SID, len(playable)).names == (f"{SID}.cast", f"{SID}.txt")
    (attachment,) = read_attachments(tmp_path, SID, [f"{SID}.cast"], len(playable))
    assert attachment.data == playable


def test_asciinema_cat_plays_the_playable_copy(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "asciinema"
    assert exe.exists(), "asciinema is a dev dependency (pyproject.toml): run make install"
    session = Session(tmp_path)
    output = b"\x1b[1mbold\x1b[0m\r\n" + b"\x1b[K" * 3000 + "é\r\n".encode()
    session.out(output, 1000.0)
    cast = session.seal()
    assert codes(cast) == ["b"]
    playable = tmp_path / "play.cast"
    data = playable_cast(cast, 1 << 20)
    assert data is not None
    playable.write_bytes(data)
    done = subprocess.run(
        [str(exe), "cat", str(playable)],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        timeout=60,
        check=False,
        env={**os.environ, "ASCIINEMA_CONFIG_HOME": "/nonexistent-asciinema-config"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == output


def test_the_notes_text_stops_reading_output_that_renders_to_nothing(tmp_path: Path) -> None:
    """24 MiB of zeros render to no text at all: the note's .txt stops taking output in
    after its budget (16 MiB) and says it was cut, instead of reading the whole transcript
    for a text that never reaches its size limit; the .cast keeps every byte."""
    session = Session(tmp_path)
    session.out(b"before the zeros\r\n", 1000.0)
    block = bytes(1 << 20)
    for i in range(24):
        session.out(block, 1000.1 + i / 100)
    session.out(b"after the zeros\r\n", 1001.0)
    cast = session.seal()
    (attachment,) = read_attachments(tmp_path, SID, [f"{SID}.txt"], 1 << 20)
    text = attachment.data.decode()
    assert text.splitlines()[0] == "before the zeros"
    assert "after the zeros" not in text
    assert text.endswith("[... cut: the rest is in the .cast transcript]\n")
    assert len(recorded_output(cast)) == 24 * (1 << 20) + len(
        b"before the zeros\r\nafter the zeros\r\n"
    )


def test_the_notes_text_reads_all_output_within_its_budget(tmp_path: Path) -> None:
    """Below the budget nothing is cut: the line after 8 MiB of zeros is there."""
    session = Session(tmp_path)
    session.out(bytes(8 << 20), 1000.0)
    session.out(b"after the zeros\r\n", 1001.0)
    session.seal()
    (attachment,) = read_attachments(tmp_path, SID, [f"{SID}.txt"], 1 << 20)
    assert attachment.data.decode().splitlines() == ["after the zeros"]
