"""The recorder on real files: what it writes, when, and how it verifies and exports."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from broker.tickets.outbox import TEXT_ATTACHMENT_LINES, TEXT_ATTACHMENT_MAX, read_attachments
from broker.transcript import (
    INPUT_HIDDEN_LABEL,
    CastHeader,
    Command,
    InvalidSessionId,
    InvalidValue,
    MarkParser,
    RecorderClosed,
    RecorderError,
    SessionInfo,
    TranscriptNotFound,
    TranscriptRecorder,
    commands_from_cast,
    commands_to_dicts,
    export_bundle,
    export_cast,
    export_text,
    transcript_paths,
    verify_bundle,
    verify_path,
    verify_transcript,
)
from broker.transcript import text_lines as export_text_lines
from broker.transcript.chain import SEAL_SIZE

KEY = Ed25519PrivateKey.from_private_bytes(b"\x11" * 32)
SID = "s-" + "r" * 22


def make_header(session_id: str = SID) -> CastHeader:
    return CastHeader(  # noqa: S604 - "shell" is the recorded SHELL; nothing is run
        width=80,
        height=24,
        timestamp=1700000000,
        session=SessionInfo(session_id=session_id, ticket="T-9", agent="web01", staff="bob"),
        term="xterm-256color",
        shell="/bin/bash",
        title="disk full on web01",
    )


class Session:
    """A parser and a recorder wired as the session hub wires them."""

    def __init__(self, root: Path, session_id: str = SID, **kwargs: int) -> None:
        self.parser = MarkParser()
        self.recorder = TranscriptRecorder(
            root, make_header(session_id), KEY, started_at=1000.0, **kwargs
        )
        self.shown = b""

    def out(self, data: bytes, now: float) -> None:
        forward, marks = self.parser.feed(data)
        self.shown += forward
        self.recorder.output(forward, now, marks)


def events(path: Path) -> list[list[object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()[1:]]


def test_files_are_created_private_with_a_reserved_seal(tmp_path: Path) -> None:
    """Starting writes the header, the chain header and a seal placeholder, all 0600."""
    session = Session(tmp_path)
    paths = session.recorder.paths
    for path in (paths.cast, paths.chain, paths.seal):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert paths.seal.stat().st_size == SEAL_SIZE
    assert json.loads(paths.cast.read_text())["secondline"]["session_id"] == SID
    assert verify_transcript(paths.cast, KEY.public_key()).status == "incomplete"


def test_writes_are_batched_until_flush(tmp_path: Path) -> None:
    """Events stay in memory until flush; then they are on disk in one go."""
    session = Session(tmp_path)
    cast = session.recorder.paths.cast
    size = cast.stat().st_size
    for i in range(100):
        session.out(b"line %d\r\n" % i, 1000.0 + i / 100)
    assert cast.stat().st_size == size
    session.recorder.flush()
    written = events(cast)
    assert "".join(str(e[2]) for e in written) == "".join(f"line {i}\r\n" for i in range(100))
    session.recorder.flush()  # nothing pending: a no-op
    assert events(cast) == written


def test_large_buffers_flush_by_themselves(tmp_path: Path) -> None:
    """Past flush_bytes the recorder writes without waiting for the owner."""
    session = Session(tmp_path, flush_bytes=4096)
    for _ in range(10):
        session.out(b"x" * 1000, 1001.0)
        session.recorder.input(b"y" * 1000, 1001.0, echoed=True)
    assert session.recorder.paths.cast.stat().st_size > 15000


def test_a_full_session_verifies_and_lists_commands(tmp_path: Path) -> None:
    """A recorded session with marks, input, resize and markers seals as valid."""
    session = Session(tmp_path)
    rec = session.recorder
    rec.marker("consent approved by bob", 1000.0)
    session.out(b"\x1b]133;A\x07$ \x1b]133;B\x07", 1000.5)
    rec.input(b"ls", 1001.0, echoed=True)
    session.out(b"ls", 1001.0)
    rec.input(b"\r", 1001.5, echoed=True)
    session.out(b"\r\n\x1b]633;E;ls\x07\x1b]133;C\x07a  b\r\n\x1b]133;D;0\x07", 1002.0)
    rec.resize(120, 40, 1002.5)
    rec.marker("participant joined: carol (observer)", 1003.0)
    session.out(b"\x1b]133;A\x07$ \x1b]133;B\x07\x1b]633;E;false\x07\x1b]133;C\x07", 1004.0)
    session.out(b"\x1b]133;D;1\x07", 1004.5)
    seal = rec.seal(True, "ended", 1005.0)
    assert seal.complete
    assert seal.event_count == len(events(rec.paths.cast))
    assert rec.commands() == (Command("ls", 2.0, 0.0, 0), Command("false", 4.0, 0.5, 1))
    assert commands_from_cast(rec.paths.cast) == rec.commands()
    assert commands_to_dicts(rec.commands())[1] == {
        "command": "false",
        "start": 4.0,
        "duration": 0.5,
        "exit_status": 1,
    }
    result = verify_transcript(rec.paths.cast, KEY.public_key())
    assert result.status == "valid", result.message
    assert [e[1] for e in events(rec.paths.cast)].count("r") == 1
    assert rec.paths.seal.stat().st_size < SEAL_SIZE  # padding trimmed


def test_password_typed_with_echo_off_never_reaches_the_file(tmp_path: Path) -> None:
    """Input reported as not echoed is one marker per hidden run, never the bytes; what the
    session prints (a forged in-band echo marker included) changes nothing."""
    session = Session(tmp_path)
    rec = session.recorder
    session.out(b"$ sudo -k true\r\n[sudo] password for bob: ", 1001.0)
    for key in b"hunter2\r":
        rec.input(bytes([key]), 1002.0, echoed=False)
    session.out(b"\x1b]6973;echo;on\x07\r\n$ ", 1003.0)
    rec.input(b"ok", 1004.0, echoed=True)
    session.out(b"Password: ", 1005.0)
    rec.input(b"s3cr3t-two\r", 1006.0, echoed=False)
    rec.answer_back(b"\x1b[5;1R", 1006.5, echoed=False)
    rec.answer_back(b"\x1b[?1;2c", 1006.6, echoed=True)
    rec.seal(True, "ended", 1007.0)
    raw = rec.paths.cast.read_bytes()
    for secret in (b"hunter2", b"hunt", b"s3cr3t", b"5;1R"):
        assert secret not in raw
    markers = [e for e in events(rec.paths.cast) if e[1] == "m"]
    assert [m[2] for m in markers] == [INPUT_HIDDEN_LABEL, INPUT_HIDDEN_LABEL]
    assert ["i", "ok"] in [e[1:] for e in events(rec.paths.cast)]
    assert ["a", "\x1b[?1;2c"] in [e[1:] for e in events(rec.paths.cast)]
    assert verify_transcript(rec.paths.cast, KEY.public_key()).status == "valid"


def test_utf8_split_across_chunks_survives(tmp_path: Path) -> None:
    """Multi-byte characters split across chunks come out whole; bad bytes become U+FFFD."""
    session = Session(tmp_path)
    text = "│ café ✓ 😀".encode()
    for i in range(len(text)):
        session.out(text[i : i + 1], 1000.0 + i / 100)
    session.out(b"\xff", 1001.0)
    session.out(b"\xe2\x82", 1002.0)  # cut at the end of the session
    session.recorder.seal(True, "ended", 1003.0)
    output = "".join(str(e[2]) for e in events(session.recorder.paths.cast) if e[1] == "o")
    assert output == "│ café ✓ 😀\ufffd\ufffd"


def test_huge_chunk_is_split_into_capped_events(tmp_path: Path) -> None:
    """An output chunk larger than an event's cap becomes several events, nothing lost."""
    session = Session(tmp_path)
    session.out(b"z" * 200_000, 1001.0)
    session.recorder.seal(True, "ended", 1002.0)
    out = [e for e in events(session.recorder.paths.cast) if e[1] == "o"]
    assert len(out) == 4
    assert "".join(str(e[2]) for e in out) == "z" * 200_000


def test_time_never_goes_backwards(tmp_path: Path) -> None:
    """A clock that steps back does not make event times decrease."""
    session = Session(tmp_path)
    session.out(b"a", 1005.0)
    session.out(b"b", 1001.0)
    session.out(b"c", 900.0)
    session.recorder.seal(True, "ended", 1006.0)
    times = [e[0] for e in events(session.recorder.paths.cast)]
    assert times == [5.0, 5.0, 5.0]


def test_nothing_is_recorded_after_seal(tmp_path: Path) -> None:
    """After sealing every recording call is refused."""
    session = Session(tmp_path)
    session.recorder.seal(True, "ended", 1001.0)
    rec = session.recorder
    for call in (
        lambda: rec.output(b"x", 1002.0, []),
        lambda: rec.input(b"x", 1002.0, echoed=True),
        lambda: rec.answer_back(b"\x1b[0n", 1002.0, echoed=True),
        lambda: rec.resize(80, 24, 1002.0),
        lambda: rec.marker("late", 1002.0),
        rec.flush,
        lambda: rec.seal(True, "ended", 1002.0),
    ):
        with pytest.raises(RecorderClosed):
            call()


def test_bad_values_are_refused(tmp_path: Path) -> None:
    """Resizes out of range and malformed end reasons are refused."""
    session = Session(tmp_path)
    with pytest.raises(InvalidValue):
        session.recorder.resize(0, 24, 1001.0)
    with pytest.raises(InvalidValue):
        session.recorder.seal(True, "ended\nforged", 1001.0)
    assert session.recorder.seal(True, "agent disconnected", 1001.0).end_reason == (
        "agent disconnected"
    )


def test_marker_labels_are_cleaned(tmp_path: Path) -> None:
    """Marker labels lose control characters before they are written."""
    session = Session(tmp_path)
    session.recorder.marker("participant joined: \x1b]52;c;x\x07eve", 1001.0)
    session.recorder.seal(True, "ended", 1002.0)
    (marker,) = events(session.recorder.paths.cast)
    assert marker[2] == "participant joined: \\x1b]52;c;x\\x07eve"


def test_commands_are_available_while_recording(tmp_path: Path) -> None:
    """Finished commands can be listed before the session ends."""
    session = Session(tmp_path)
    session.out(b"\x1b]633;E;id\x07\x1b]133;C\x07uid=0\r\n\x1b]133;D;0\x07", 1001.0)
    assert session.recorder.commands() == (Command("id", 1.0, 0.0, 0),)


def test_cut_utf8_input_at_the_end_is_kept_replaced(tmp_path: Path) -> None:
    """Half a character typed last is recorded as U+FFFD, not dropped."""
    session = Session(tmp_path)
    session.recorder.input(b"\xc3", 1001.0, echoed=True)
    session.recorder.seal(True, "ended", 1002.0)
    assert events(session.recorder.paths.cast) == [[2.0, "i", "\ufffd"]]


def test_missing_root_is_a_write_error(tmp_path: Path) -> None:
    """A transcript root that does not exist is refused as a write failure."""
    with pytest.raises(RecorderError, match="No such file"):
        Session(tmp_path / "missing")


def test_second_recorder_for_a_session_is_refused(tmp_path: Path) -> None:
    """A session's transcript is never overwritten."""
    Session(tmp_path)
    with pytest.raises(RecorderError, match="exists already"):
        Session(tmp_path)


def test_symlink_at_a_transcript_name_is_refused(tmp_path: Path) -> None:
    """A symlink planted where a transcript file goes is not followed."""
    target = tmp_path / "elsewhere"
    paths = transcript_paths(tmp_path, SID)
    paths.seal.symlink_to(target)
    with pytest.raises(RecorderError):
        Session(tmp_path)
    assert not target.exists()
    assert not paths.cast.exists()


@pytest.mark.parametrize(
    "session_id",
    ["../" + "a" * 22, "s-" + "a" * 21 + "/", "s-" + "a" * 22 + "\x00", "s-" + "../" * 7 + "a"],
)
def test_session_ids_that_escape_the_root_are_refused(tmp_path: Path, session_id: str) -> None:
    """File names come from strictly valid session ids only."""
    with pytest.raises(InvalidSessionId):
        transcript_paths(tmp_path, session_id)
    assert list(tmp_path.iterdir()) == []


def test_symlink_leading_out_of_the_root_is_refused(tmp_path: Path) -> None:
    """A transcript name that resolves outside the root is refused before any open."""
    root = tmp_path / "root"
    root.mkdir()
    (root / f"{SID}.cast").symlink_to(tmp_path / "outside.cast")
    with pytest.raises(InvalidSessionId):
        transcript_paths(root, SID)


def test_root_that_is_a_symlink_is_resolved(tmp_path: Path) -> None:
    """A symlinked root is resolved once; files land inside its target."""
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    paths = transcript_paths(tmp_path / "link", SID)
    assert paths.cast.parent == real


def test_flush_from_a_worker_thread_keeps_order(tmp_path: Path) -> None:
    """Flushing in a thread while output continues keeps every event, in order."""
    session = Session(tmp_path)
    stop = threading.Event()

    def flusher() -> None:
        while not stop.is_set():
            session.recorder.flush()

    thread = threading.Thread(target=flusher)
    thread.start()
    try:
        for i in range(2000):
            session.out(b"%d\n" % i, 1000.0 + i / 1000)
    finally:
        stop.set()
        thread.join()
    session.recorder.seal(True, "ended", 1003.0)
    data = "".join(str(e[2]) for e in events(session.recorder.paths.cast))
    assert data == "".join(f"{i}\n" for i in range(2000))
    assert verify_transcript(session.recorder.paths.cast, KEY.public_key()).status == "valid"


# -- exports ----------------------------------------------------------------------------


def sealed_session(root: Path) -> Path:
    session = Session(root)
    session.recorder.marker("consent approved by bob", 1000.0)
    session.out(b"\x1b]133;A\x07\x1b[32m$\x1b[0m \x1b]133;B\x07", 1000.5)
    session.out(b"echo \xc3\xa9t\xc3\xa9\r\n\x1b]133;C\x07\xc3\xa9t\xc3\xa9\r\n", 1001.0)
    session.out(b"\x1b]133;D;0\x07Password: ", 1002.0)
    session.recorder.input(b"secret\r", 1003.0, echoed=False)
    session.out(b"\r\nbye\r\n", 1004.0)
    session.recorder.seal(True, "ended", 1005.0)
    return session.recorder.paths.cast


def test_export_cast_copies_with_seal_beside(tmp_path: Path) -> None:
    """The .cast export writes FILE.cast.seal.json beside a copy that verifies alone."""
    cast = sealed_session(tmp_path)
    out = tmp_path / "out" / "ticket-9.cast"
    out.parent.mkdir()
    written = export_cast(cast, out)
    assert written == [
        out,
        out.with_name("ticket-9.cast.chain"),
        out.with_name("ticket-9.cast.seal.json"),
    ]
    assert verify_path(out, KEY.public_key()).status == "valid"
    with pytest.raises(TranscriptNotFound):
        export_cast(tmp_path / "missing.cast", out)


def test_export_bundle_verifies_on_its_own(tmp_path: Path) -> None:
    """The JSON bundle carries everything needed to verify it, and names tampering."""
    cast = sealed_session(tmp_path)
    bundle = tmp_path / "bundle.json"
    export_bundle(cast, bundle)
    assert verify_bundle(bundle, KEY.public_key()).status == "valid"
    assert verify_path(bundle, KEY.public_key()).status == "valid"
    doc = json.loads(bundle.read_text(encoding="utf-8"))
    assert list(doc) == ["format", "version", "header", "seal", "chain", "events"]
    assert len(doc["chain"]) == len(doc["events"]) + 1
    doc["events"][2][2] = "tampered"
    bundle.write_text(json.dumps(doc), encoding="utf-8")
    result = verify_path(bundle, KEY.public_key())
    assert (result.status, result.first_bad_event) == ("invalid", 3)


def test_export_bundle_keeps_the_recorded_chain(tmp_path: Path) -> None:
    """A transcript altered before export still has its altered event named in the bundle."""
    cast = sealed_session(tmp_path)
    lines = cast.read_bytes().split(b"\n")
    lines[2] = lines[2].replace(b"\\u001b[32m", b"\\u001b[31m")
    cast.write_bytes(b"\n".join(lines))
    bundle = tmp_path / "bundle.json"
    export_bundle(cast, bundle)
    result = verify_bundle(bundle, KEY.public_key())
    assert (result.status, result.first_bad_event) == ("invalid", 2)


def test_export_bundle_of_a_live_session_is_incomplete(tmp_path: Path) -> None:
    """Exporting a session still being recorded gives an unsealed bundle."""
    session = Session(tmp_path)
    session.out(b"still running", 1001.0)
    session.recorder.flush()
    with session.recorder.paths.cast.open("ab") as fh:
        fh.write(b'[1.5, "o", "tor')  # a write in progress
    bundle = tmp_path / "bundle.json"
    export_bundle(session.recorder.paths.cast, bundle)
    result = verify_bundle(bundle, KEY.public_key())
    assert result.status == "incomplete"
    assert result.event_count == 1


def test_export_text_renders_inert_text(tmp_path: Path) -> None:
    """The text export has no escape sequences, keeps markers, and no secrets."""
    cast = sealed_session(tmp_path)
    out = tmp_path / "t.txt"
    export_text(cast, out)
    assert out.read_text(encoding="utf-8") == (
        "[00:00:00] consent approved by bob\n"
        "$ echo été\n"
        "été\n"
        "Password:\n"
        "[00:00:03] input hidden (echo off)\n"
        "bye\n"
    )
    export_text(cast, out, markers=False)
    assert "consent" not in out.read_text(encoding="utf-8")


def test_export_bundle_with_odd_side_files(tmp_path: Path) -> None:
    """A pending or broken seal gives an unsealed bundle; a foreign chain file is ignored."""
    cast = sealed_session(tmp_path)
    paths = transcript_paths(tmp_path, SID)
    other = Session(tmp_path, "s-" + "o" * 22)
    paths.chain.write_bytes(other.recorder.paths.chain.read_bytes())
    bundle = tmp_path / "b.json"
    export_bundle(cast, bundle)
    assert verify_bundle(bundle, KEY.public_key()).status == "valid"
    paths.seal.write_bytes(b"{broken")
    export_bundle(cast, bundle)
    assert verify_bundle(bundle, KEY.public_key()).status == "incomplete"
    paths.chain.unlink()
    paths.seal.unlink()
    export_bundle(cast, bundle, seal_path=other.recorder.paths.seal)  # still pending
    assert verify_bundle(bundle, KEY.public_key()).status == "incomplete"
    with pytest.raises(TranscriptNotFound):
        export_text(tmp_path / "none.cast", tmp_path / "t.txt")


def test_exports_refuse_a_malformed_transcript(tmp_path: Path) -> None:
    """Exports read strictly: a malformed line raises CastFormatError."""
    from broker.transcript import CastFormatError

    cast = sealed_session(tmp_path)
    cast.write_bytes(cast.read_bytes().replace(b'"o"', b'"x"', 1))
    with pytest.raises(CastFormatError):
        export_text(cast, tmp_path / "t.txt")
    cast.write_bytes(b"")
    with pytest.raises(CastFormatError):
        commands_from_cast(cast)
    cast.write_bytes(b"x" * (1 << 21))
    with pytest.raises(CastFormatError):
        export_bundle(cast, tmp_path / "b.json")


def test_verify_missing_file_raises_not_found(tmp_path: Path) -> None:
    """Verifying a file that is not there is TranscriptNotFound."""
    for call in (verify_path, verify_transcript, verify_bundle):
        with pytest.raises(TranscriptNotFound):
            call(tmp_path / "none.cast", KEY.public_key())


def test_seal_verifies_by_hand_with_openssl(tmp_path: Path) -> None:
    """The documented manual check (Python hashlib and openssl) accepts a real seal."""
    cast = sealed_session(tmp_path)
    lines = cast.read_bytes().split(b"\n")
    digest = hashlib.sha256(lines[0]).digest()
    for line in lines[1:-1]:
        digest = hashlib.sha256(digest + line).digest()
    seal = json.loads(transcript_paths(tmp_path, SID).seal.read_bytes())
    assert (digest.hex(), len(lines) - 2) == (seal["final_hash"], seal["event_count"])
    (tmp_path / "sig").write_bytes(base64.b64decode(seal.pop("signature")))
    canonical = json.dumps(seal, sort_keys=True, separators=(",", ":")).encode()
    (tmp_path / "msg").write_bytes(b"secondline-transcript-seal-v1\n" + canonical)
    (tmp_path / "pub.pem").write_bytes(
        KEY.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    done = subprocess.run(
        [
            "openssl",
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            "pub.pem",
            "-rawin",
            "-in",
            "msg",
            "-sigfile",
            "sig",
        ],
        cwd=tmp_path,
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert b"Signature Verified Successfully" in done.stdout


# -- asciinema --------------------------------------------------------------------------


def _asciinema(*args: str) -> subprocess.CompletedProcess[bytes]:
    exe = Path(sys.executable).parent / "asciinema"
    if not exe.exists():
        pytest.skip("asciinema is not installed in this environment")
    env = {**os.environ, "ASCIINEMA_CONFIG_HOME": "/nonexistent-asciinema-config"}
    return subprocess.run(
        [str(exe), *args],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # no controlling terminal: asciinema must not grab /dev/tty
        timeout=60,
        check=False,
        env=env,
    )


def test_asciinema_cat_plays_the_recorded_file(tmp_path: Path) -> None:
    """asciinema cat prints the recorded output, byte for byte, from our file."""
    cast = sealed_session(tmp_path)
    done = _asciinema("cat", str(cast))
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        b"\x1b]133;A\x07\x1b[32m$\x1b[0m \x1b]133;B\x07echo \xc3\xa9t\xc3\xa9\r\n\x1b]133;C\x07"
        b"\xc3\xa9t\xc3\xa9\r\n\x1b]133;D;0\x07Password: \r\nbye\r\n"
    )


def test_asciinema_play_runs_the_recorded_file(tmp_path: Path) -> None:
    """asciinema play reads the file as it is and plays it to the end."""
    cast = sealed_session(tmp_path)
    done = _asciinema("play", "--idle-time-limit", "0.01", "--speed", "100", str(cast))
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith(b"bye\r\n")


@pytest.mark.parametrize("max_bytes", [60, 61, 62, 100, 2000])
def test_note_text_attachment_keeps_whole_lines_up_to_its_limit(
    tmp_path: Path, max_bytes: int
) -> None:
    """The .txt a note carries holds whole lines of the rendering (multi-byte ones too)
    within its limit, and says where it was cut; a short session comes whole."""
    session = Session(tmp_path)
    session.out("".join(f"zeile-{i}-äö\r\n" for i in range(200)).encode(), 1001.0)
    session.recorder.seal(True, "ended", 1002.0)
    cast = transcript_paths(tmp_path, SID).cast
    full = "".join(f"{line}\n" for line in export_text_lines(cast)).encode()
    (text,) = read_attachments(tmp_path, SID, [f"{SID}.txt"], max_bytes)
    assert len(text.data) <= max_bytes
    cut = b"\n[... cut: the rest is in the .cast transcript]\n"
    kept = text.data.removesuffix(cut)
    assert text.data.endswith(cut)
    assert full.startswith(kept)
    assert kept == b"" or kept.endswith(b"\n")
    assert len(kept) + len(cut) + len("zeile-0-äö\n".encode()) + 4 > max_bytes
    (whole,) = read_attachments(tmp_path, SID, [f"{SID}.txt"], len(full) + len(cut))
    assert whole.data == full


def test_note_text_attachment_is_cut_at_one_mib_whatever_the_attachment_limit(
    tmp_path: Path,
) -> None:
    """A long session's text on the ticket stops at 1 MiB of whole lines (the .cast holds
    the rest), even where attachments may be larger."""
    session = Session(tmp_path)
    line = "y" * 99 + "\r\n"
    for _ in range(12):
        session.out((line * 1000).encode(), 1001.0)
    session.recorder.seal(True, "ended", 1002.0)
    (text,) = read_attachments(tmp_path, SID, [f"{SID}.txt"], 10 << 20)
    assert TEXT_ATTACHMENT_MAX - 200 < len(text.data) <= TEXT_ATTACHMENT_MAX
    assert text.data.endswith(b"\n[... cut: the rest is in the .cast transcript]\n")


@pytest.mark.parametrize("extra", [0, 1, 5000])
def test_note_text_attachment_of_short_lines_stops_at_its_line_limit(
    tmp_path: Path, extra: int
) -> None:
    """A session of short lines (`yes`) far under the megabyte: its .txt holds the first
    TEXT_ATTACHMENT_LINES lines and says it was cut; exactly that many come whole."""
    session = Session(tmp_path)
    total = TEXT_ATTACHMENT_LINES + extra
    lines = [f"y{i}" for i in range(total)]
    for start in range(0, total, 1000):
        session.out("".join(f"{x}\r\n" for x in lines[start : start + 1000]).encode(), 1001.0)
    session.recorder.seal(True, "ended", 1002.0)
    (text,) = read_attachments(tmp_path, SID, [f"{SID}.txt"], 10 << 20)
    cut = b"\n[... cut: the rest is in the .cast transcript]\n"
    kept = "".join(f"{x}\n" for x in lines[:TEXT_ATTACHMENT_LINES]).encode()
    assert text.data == (kept + cut if extra else kept)
