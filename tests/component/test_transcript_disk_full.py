"""A full disk while recording, for real: a tiny tmpfs, and a file-size limit."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.transcript import (
    CastHeader,
    MarkParser,
    RecorderDiskFull,
    SessionInfo,
    TranscriptRecorder,
    transcript_paths,
    verify_transcript,
)
from broker.transcript.chain import CHAIN_ENTRY_BYTES

KEY = Ed25519PrivateKey.from_private_bytes(b"\x33" * 32)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs, unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace')}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def header(session_id: str) -> CastHeader:
    return CastHeader(
        width=80,
        height=24,
        timestamp=1700000000,
        session=SessionInfo(session_id=session_id, ticket="T-5", agent="nas01", staff="dan"),
    )


def fill(root: Path) -> Path:
    """Take every free byte of the file system with a filler file."""
    filler = root / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while True:
            try:
                os.write(fd, b"\0" * 4096)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
        while True:  # the last partial page, byte by byte
            try:
                os.write(fd, b"\0")
            except OSError:
                break
    finally:
        os.close(fd)
    return filler


def chain_entries(path: Path) -> int:
    data = path.read_bytes()
    body = data[data.index(b"\n") + 1 :]
    assert len(body) % CHAIN_ENTRY_BYTES == 0
    return len(body) // CHAIN_ENTRY_BYTES


def record_until_full(recorder: TranscriptRecorder) -> int:
    """Record 3 KB outputs, flushing every third, until the disk is full; return the count."""
    parser = MarkParser()
    for i in range(10_000):
        forward, marks = parser.feed(b"%05d " % i + b"x" * 3000 + b"\r\n")
        try:
            recorder.output(forward, i / 100, marks)
            if i % 3 == 2:
                recorder.flush()
        except RecorderDiskFull:
            return i
    raise AssertionError("the disk never filled")


def test_disk_full_midway_seals_what_fitted(tiny_fs: Path) -> None:
    """Recording until ENOSPC stops cleanly; the seal still fits; verify says cut short."""
    session_id = "s-" + "d" * 22
    recorder = TranscriptRecorder(tiny_fs, header(session_id), KEY, started_at=0.0)
    written = record_until_full(recorder)
    assert written < 10_000
    with pytest.raises(RecorderDiskFull):  # nothing more is taken once the disk is full
        recorder.output(b"more", 200.0, [])
    fill(tiny_fs)  # not one byte left: the seal must come from its reserved space
    seal = recorder.seal(True, "ended", 1700000100.0)
    assert (seal.complete, seal.end_reason) == (False, "disk full")
    paths = transcript_paths(tiny_fs, session_id)
    assert paths.cast.read_bytes().endswith(b"\n")
    assert chain_entries(paths.chain) <= seal.event_count
    result = verify_transcript(paths.cast, KEY.public_key())
    assert result.status == "valid_cut_short", result.message
    assert "disk full" in result.message
    assert result.event_count == seal.event_count > 0


def test_torn_write_is_cut_back_to_the_last_line(tiny_fs: Path) -> None:
    """A flush that only partly fits leaves the file ending at a complete line."""
    session_id = "s-" + "e" * 22
    recorder = TranscriptRecorder(tiny_fs, header(session_id), KEY, started_at=0.0)
    fill(tiny_fs)
    for i in range(400):  # about 9 KB: more than the cast file's last page holds
        recorder.output(b"%03d.................." % i, i / 10, [])
    with pytest.raises(RecorderDiskFull):
        recorder.flush()
    seal = recorder.seal(False, "disk full", 100.0)
    paths = transcript_paths(tiny_fs, session_id)
    lines = paths.cast.read_bytes().split(b"\n")
    assert lines[-1] == b""
    assert len(lines) - 2 == seal.event_count > 0
    assert verify_transcript(paths.cast, KEY.public_key()).status == "valid_cut_short"


def test_chain_file_full_keeps_the_transcript(tiny_fs: Path) -> None:
    """When only the chain file's write fails, every event in the .cast is sealed."""
    session_id = "s-" + "f" * 22
    recorder = TranscriptRecorder(tiny_fs, header(session_id), KEY, started_at=0.0)
    fill(tiny_fs)
    # 70 short events fit in the slack of the .cast's last page, but 70 chain entries
    # (4550 bytes) do not fit in the chain file's.
    for i in range(70):
        recorder.output(b"%02d" % i, i / 10, [])
    with pytest.raises(RecorderDiskFull):
        recorder.flush()
    seal = recorder.seal(True, "ended", 100.0)
    assert (seal.event_count, seal.complete) == (70, False)
    paths = transcript_paths(tiny_fs, session_id)
    assert chain_entries(paths.chain) < 70
    assert verify_transcript(paths.cast, KEY.public_key()).status == "valid_cut_short"


def test_disk_already_full_refuses_to_start(tiny_fs: Path) -> None:
    """No session is recorded (or run) when its transcript cannot even be created."""
    fill(tiny_fs)
    with pytest.raises(RecorderDiskFull):
        TranscriptRecorder(tiny_fs, header("s-" + "g" * 22), KEY, started_at=0.0)
    assert sorted(p.name for p in tiny_fs.iterdir()) == ["filler"]


CHILD = textwrap.dedent(
    """
    import resource, signal, sys
    from pathlib import Path
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from broker.transcript import (CastHeader, RecorderWriteError, SessionInfo,
                                   TranscriptRecorder)

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a fatal signal
    resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))
    key = Ed25519PrivateKey.from_private_bytes(b"\\x33" * 32)
    header = CastHeader(width=80, height=24, timestamp=0, session=SessionInfo(
        session_id=sys.argv[2], ticket="T-5", agent="nas01", staff="dan"))
    recorder = TranscriptRecorder(Path(sys.argv[1]), header, key, started_at=0.0)
    try:
        for i in range(1000):
            recorder.output(b"y" * 1000, i / 10, [])
            recorder.flush()
    except RecorderWriteError as exc:
        print("write error:", exc)
    seal = recorder.seal(True, "ended", 100.0)
    print(seal.complete, seal.end_reason, seal.event_count, sep="|")
    """
)


def test_other_write_errors_also_seal_cut_short(tmp_path: Path) -> None:
    """A write refused for another reason (EFBIG under a file-size limit) seals cut short."""
    session_id = "s-" + "h" * 22
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path), session_id],
        capture_output=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    lines = done.stdout.decode().splitlines()
    assert lines[0].startswith("write error: writing the transcript failed")
    complete, reason, count = lines[1].split("|")
    cast = transcript_paths(tmp_path, session_id).cast
    result = verify_transcript(cast, KEY.public_key())
    assert result.status == "valid_cut_short"
    assert (complete, reason) == ("False", "write error")
    assert result.event_count == int(count) > 0
