"""File content kept with a transcript, on real files: the SFTP recording the hub uses
(tracker and content store) behind a real recorder; verification covers the kept bytes,
an export carries them, and a broker that cannot write them keeps the digest only."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.sessions.hub_files import FileRecording
from broker.sessions.sftp_tracker import (
    CLOSE,
    HANDLE,
    INIT,
    OPEN,
    STATUS,
    VERSION,
    WRITE,
    FileLimits,
)
from broker.transcript import (
    CastHeader,
    SessionInfo,
    TranscriptRecorder,
    export_cast,
    verify_path,
)
from broker.transcript.kept_files import kept_dir

KEY = Ed25519PrivateKey.from_private_bytes(b"\x22" * 32)
SID = "s-" + "k" * 22
SMALL = b"fixed config\n" * 1000
BIG = bytes(range(256)) * 100  # 25,600 bytes: past the 16 KiB kept below


def _s(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def _packet(kind: int, *fields: bytes) -> bytes:
    payload = bytes([kind]) + b"".join(fields)
    return struct.pack(">I", len(payload)) + payload


def _u32(value: int) -> bytes:
    return struct.pack(">I", value)


def _upload(files: FileRecording, rid: int, path: bytes, body: bytes) -> list[str]:
    """One upload as OpenSSH's sftp sends it: open, writes of 4 KiB, close, answers."""
    labels = files.feed("to_agent", _packet(OPEN, _u32(rid), _s(path), _u32(0x1A), _u32(0)))[0]
    labels += files.feed("from_agent", _packet(HANDLE, _u32(rid), _s(b"h%d" % rid)))[0]
    for at in range(0, len(body), 4096):
        chunk = body[at : at + 4096]
        write = _packet(WRITE, _u32(rid), _s(b"h%d" % rid), struct.pack(">Q", at), _s(chunk))
        labels += files.feed("to_agent", write)[0]
    labels += files.feed("to_agent", _packet(CLOSE, _u32(rid + 1), _s(b"h%d" % rid)))[0]
    ok = _packet(STATUS, _u32(rid + 1), _u32(0), _s(b""), _s(b""))
    return labels + files.feed("from_agent", ok)[0]


def _record(root: Path) -> Path:
    """A sealed file session with one small upload (kept) and one large one (digest)."""
    header = CastHeader(  # noqa: S604 - the recorded SHELL; nothing is run
        width=80,
        height=24,
        timestamp=1700000000,
        session=SessionInfo(session_id=SID, ticket="T-9", agent="web01", staff="bob"),
        term="xterm-256color",
        shell="/bin/bash",
        title="files",
    )
    recorder = TranscriptRecorder(root, header, KEY, started_at=1000.0)
    files = FileRecording(FileLimits(keep_bytes=16 << 10), recorder.paths.cast)
    files.feed("to_agent", _packet(INIT, _u32(3)))
    files.feed("from_agent", _packet(VERSION, _u32(3)))
    for rid, (path, body) in enumerate(((b"/etc/app.conf", SMALL), (b"/srv/big", BIG))):
        for label in _upload(files, 10 * rid + 1, path, body):
            recorder.marker(label, 1001.0 + rid)
    assert files.close() == []
    recorder.seal(True, "ended", 1003.0)
    return recorder.paths.cast


def test_small_files_are_kept_and_verification_covers_their_bytes(tmp_path: Path) -> None:
    """The small file's bytes lie beside the transcript, its marker names them, the large
    one keeps only its digest; verify passes, and fails naming the marker's event when
    one kept byte changes or the kept file is missing; an export carries the content."""
    cast = _record(tmp_path)
    text = cast.read_text()
    assert f"sha256={hashlib.sha256(SMALL).hexdigest()} kept=1" in text
    assert f'size={len(BIG)} sha256={hashlib.sha256(BIG).hexdigest()}"]' in text
    kept = kept_dir(cast)
    assert sorted(p.name for p in kept.iterdir()) == ["1"]
    assert (kept / "1").read_bytes() == SMALL
    public = KEY.public_key()
    assert verify_path(cast, public).status == "valid"

    copy = tmp_path / "out" / "copy.cast"
    copy.parent.mkdir()
    export_cast(cast, copy)
    assert verify_path(copy, public).status == "valid"

    changed = bytearray(SMALL)
    changed[500] ^= 1
    (kept_dir(copy) / "1").write_bytes(bytes(changed))
    result = verify_path(copy, public)
    assert result.status == "invalid"
    assert result.first_bad_event == 1
    assert "altered" in result.message
    (kept_dir(copy) / "1").unlink()
    assert "missing" in verify_path(copy, public).message
    assert verify_path(cast, public).status == "valid"  # the original is untouched


def test_content_the_broker_cannot_write_is_not_claimed(tmp_path: Path) -> None:
    """When the kept content cannot be written (here its directory's name is taken, as a
    full disk would refuse it), the marker carries the digest and no kept=, and the
    transcript verifies."""
    (tmp_path / f"{SID}.cast.files").write_bytes(b"")  # not a directory
    cast = _record(tmp_path)
    assert " kept=" not in cast.read_text()
    assert f'sha256={hashlib.sha256(SMALL).hexdigest()}"]' in cast.read_text()
    assert verify_path(cast, KEY.public_key()).status == "valid"
