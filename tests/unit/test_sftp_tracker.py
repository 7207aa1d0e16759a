"""The SFTP tracker: file events from the packets of both directions, digests in offset
order, failures named, a stream that is not SFTP refused."""

from __future__ import annotations

import hashlib
import re
import struct

import pytest

from broker.sessions.sftp_tracker import (
    CLOSE,
    DATA,
    EXTENDED,
    HANDLE,
    INIT,
    MKDIR,
    OPEN,
    READ,
    REMOVE,
    RENAME,
    SETSTAT,
    STATUS,
    VERSION,
    WRITE,
    Content,
    FileEvent,
    FileLimits,
    Item,
    SftpLimitError,
    SftpStreamError,
    SftpTracker,
    path_tag,
)
from broker.transcript.asciicast import MAX_LABEL


def _s(value: bytes | str) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return struct.pack(">I", len(raw)) + raw


def _packet(kind: int, *fields: bytes) -> bytes:
    payload = bytes([kind]) + b"".join(fields)
    return struct.pack(">I", len(payload)) + payload


def _u32(value: int) -> bytes:
    return struct.pack(">I", value)


def _u64(value: int) -> bytes:
    return struct.pack(">Q", value)


def _ok(rid: int, code: int = 0) -> bytes:
    return _packet(STATUS, _u32(rid), _u32(code), _s("msg"), _s(""))


def _events(items: list[Item]) -> list[FileEvent]:
    """The file events among what the tracker returned (here: all of it)."""
    assert all(isinstance(item, FileEvent) for item in items), items
    return [item for item in items if isinstance(item, FileEvent)]


def _started(limits: FileLimits | None = None) -> SftpTracker:
    # Content kept only where a test asks for it (keep_bytes=0: digests only).
    tracker = SftpTracker(limits or FileLimits(keep_bytes=0))
    assert tracker.feed("to_agent", _packet(INIT, _u32(3))) == []
    assert tracker.feed("from_agent", _packet(VERSION, _u32(3))) == []
    return tracker


def test_upload_in_pieces_gives_size_and_digest_at_close() -> None:
    """Writes split across feeds, then a close: one upload event with size and SHA-256."""
    tracker = _started()
    body = bytes(range(256)) * 300
    tracker.feed("to_agent", _packet(OPEN, _u32(1), _s("/tmp/up load"), _u32(0x1A), _u32(0)))
    tracker.feed("from_agent", _packet(HANDLE, _u32(1), _s(b"h1")))
    stream = b"".join(
        _packet(WRITE, _u32(10 + i), _s(b"h1"), _u64(i * 32768), _s(body[i * 32768 :][:32768]))
        for i in range(3)
    )
    for start in range(0, len(stream), 1000):  # packets cut anywhere
        assert tracker.feed("to_agent", stream[start : start + 1000]) == []
    tracker.feed("to_agent", _packet(CLOSE, _u32(20), _s(b"h1")))
    events = _events(tracker.feed("from_agent", _ok(20)))
    digest = hashlib.sha256(body).hexdigest()
    assert events == [FileEvent("upload", "/tmp/up load", True, len(body), digest)]
    assert events[0].label() == f'file upload "/tmp/up load" size={len(body)} sha256={digest}'


def test_download_answers_out_of_order_still_hash_in_order() -> None:
    """Read answers that arrive out of order are held and hashed in offset order."""
    tracker = _started()
    body = b"a" * 50 + b"b" * 50
    tracker.feed("to_agent", _packet(OPEN, _u32(1), _s("/var/log/x"), _u32(1), _u32(0)))
    tracker.feed("from_agent", _packet(HANDLE, _u32(1), _s(b"h")))
    tracker.feed("to_agent", _packet(READ, _u32(2), _s(b"h"), _u64(0), _u32(50)))
    tracker.feed("to_agent", _packet(READ, _u32(3), _s(b"h"), _u64(50), _u32(50)))
    tracker.feed("from_agent", _packet(DATA, _u32(3), _s(body[50:])))
    tracker.feed("from_agent", _packet(DATA, _u32(2), _s(body[:50])))
    tracker.feed("to_agent", _packet(CLOSE, _u32(4), _s(b"h")))
    (event,) = _events(tracker.feed("from_agent", _ok(4)))
    assert (event.op, event.size, event.sha256) == (
        "download",
        100,
        hashlib.sha256(body).hexdigest(),
    )


def test_rewritten_bytes_give_no_digest() -> None:
    """A write over bytes already written has no single stream: no digest, said so."""
    tracker = _started()
    tracker.feed("to_agent", _packet(OPEN, _u32(1), _s("f"), _u32(2), _u32(0)))
    tracker.feed("from_agent", _packet(HANDLE, _u32(1), _s(b"h")))
    tracker.feed("to_agent", _packet(WRITE, _u32(2), _s(b"h"), _u64(0), _s(b"abc")))
    tracker.feed("to_agent", _packet(WRITE, _u32(3), _s(b"h"), _u64(0), _s(b"xyz")))
    tracker.feed("to_agent", _packet(CLOSE, _u32(4), _s(b"h")))
    (event,) = _events(tracker.feed("from_agent", _ok(4)))
    assert event.sha256 is None
    assert event.label() == "file upload f size=6 not-contiguous"


def test_operations_report_their_outcome() -> None:
    """Rename, remove, mkdir, setstat, posix-rename: an event each when answered."""
    tracker = _started()
    tracker.feed("to_agent", _packet(RENAME, _u32(1), _s("a"), _s("b")))
    tracker.feed("to_agent", _packet(REMOVE, _u32(2), _s("gone")))
    tracker.feed("to_agent", _packet(MKDIR, _u32(3), _s("d"), _u32(0)))
    tracker.feed("to_agent", _packet(SETSTAT, _u32(4), _s("d"), _u32(0)))
    extended = _packet(EXTENDED, _u32(5), _s("posix-rename@openssh.com"), _s("c"), _s("e"))
    tracker.feed("to_agent", extended)
    answers = _ok(1) + _ok(2, 2) + _ok(3) + _ok(4, 3) + _ok(5)
    labels = [event.label() for event in _events(tracker.feed("from_agent", answers))]
    assert labels == [
        "file rename a -> b",
        "file remove gone failed:no-such-file",
        "file mkdir d",
        "file setstat d failed:permission-denied",
        "file rename c -> e",
    ]


def test_refused_open_and_unfinished_file() -> None:
    """A refused open is a failed event; a file open when the session ends is incomplete."""
    tracker = _started()
    tracker.feed("to_agent", _packet(OPEN, _u32(1), _s("/root/x"), _u32(1), _u32(0)))
    (refused,) = _events(tracker.feed("from_agent", _ok(1, 3)))
    assert refused.label() == "file download /root/x failed:permission-denied"
    tracker.feed("to_agent", _packet(OPEN, _u32(2), _s("half"), _u32(2), _u32(0)))
    tracker.feed("from_agent", _packet(HANDLE, _u32(2), _s(b"h")))
    tracker.feed("to_agent", _packet(WRITE, _u32(3), _s(b"h"), _u64(0), _s(b"12345")))
    (cut,) = _events(tracker.close())
    assert cut.label() == "file upload half size=5 failed:incomplete"


@pytest.mark.parametrize(
    "stream",
    [struct.pack(">I", 0), struct.pack(">I", 10 << 20), _packet(OPEN, _u32(1), b"\x00\x00")],
)
def test_not_sftp_is_refused(stream: bytes) -> None:
    """A zero or huge length, or a packet shorter than its fields, is no SFTP stream."""
    tracker = _started()
    with pytest.raises(SftpStreamError):
        tracker.feed("to_agent", stream)


def test_long_and_hostile_paths_keep_the_digest_in_the_label() -> None:
    """Paths of 4 KB with control characters are escaped and cut so the label, digest
    included, fits a transcript marker."""
    tracker = _started()
    hostile = "/tmp/" + "\x1b[2J\n" * 600
    tracker.feed("to_agent", _packet(OPEN, _u32(1), _s(hostile), _u32(2), _u32(0)))
    tracker.feed("from_agent", _packet(HANDLE, _u32(1), _s(b"h")))
    tracker.feed("to_agent", _packet(WRITE, _u32(2), _s(b"h"), _u64(0), _s(b"x")))
    tracker.feed("to_agent", _packet(CLOSE, _u32(3), _s(b"h")))
    (event,) = _events(tracker.feed("from_agent", _ok(3)))
    label = event.label()
    assert len(label) <= MAX_LABEL
    assert label.endswith(f"size=1 sha256={hashlib.sha256(b'x').hexdigest()}")
    assert "\x1b" not in label
    tracker.feed("to_agent", _packet(RENAME, _u32(4), _s(hostile), _s(hostile)))
    (renamed,) = _events(tracker.feed("from_agent", _ok(4, 3)))
    assert len(renamed.label()) <= MAX_LABEL
    assert renamed.label().endswith("failed:permission-denied")


def _renamed(tracker: SftpTracker, rid: int, old: bytes, new: bytes) -> str:
    tracker.feed("to_agent", _packet(RENAME, _u32(rid), _s(old), _s(new)))
    (event,) = _events(tracker.feed("from_agent", _ok(rid)))
    return event.label()


def test_two_long_paths_are_clipped_each_with_its_tag() -> None:
    """A rename of two long paths that differ only in the middle: each is clipped on its
    own, keeps its file name and ends with the SHA-256 tag of its own bytes, so the two
    stay told apart and the label fits a marker whatever the directory's length."""
    tracker = _started()
    for depth in (10, 60, 400):
        old = "/tmp/" + "/".join(f"d{i}" for i in range(depth)) + "/x/config.bin"
        new = old.replace("/x/", "/y/").replace("config.bin", "config.new")
        label = _renamed(tracker, depth, old.encode(), new.encode())
        assert len(label) <= MAX_LABEL
        shown_old, shown_new = label.removeprefix("file rename ").split(" -> ")
        assert shown_old.startswith("/tmp/d0/")
        assert shown_new.startswith("/tmp/d0/")
        if len(old) > 90:
            assert shown_old.endswith(f"config.bin{path_tag(old)}")
            assert shown_new.endswith(f"config.new{path_tag(new)}")
            assert "…" in shown_old
            assert path_tag(old) != path_tag(new)
        else:
            assert (shown_old, shown_new) == (old, new)  # short paths as they are


def test_clipping_never_splits_an_escape_and_a_literal_ellipsis_is_escaped() -> None:
    """Control characters stay whole escapes when a path is clipped; a "…" in a name is
    written \\u2026, so a marker's "…" always means clipped; undecodable bytes are
    digested as sent."""
    tracker = _started()
    label = _renamed(tracker, 1, b"/tmp/a\xe2\x80\xa6b", b"/tmp/" + b"\x07" * 3000)
    old, new = label.removeprefix("file rename ").split(" -> ")
    assert old == "/tmp/a\\u2026b"
    assert re.fullmatch(r"/tmp/(\\x07)+…(\\x07)+#[0-9a-f]{16}", new), new
    raw = b"/srv/" + b"\xff" * 300 + b"/name"
    label = _renamed(tracker, 2, raw, b"/srv/short")
    assert label.split(" -> ")[0].endswith("/name#" + hashlib.sha256(raw).hexdigest()[:16])


def _open(tracker: SftpTracker, rid: int, path: str, flags: int, handle: bytes) -> None:
    tracker.feed("to_agent", _packet(OPEN, _u32(rid), _s(path), _u32(flags), _u32(0)))
    assert tracker.feed("from_agent", _packet(HANDLE, _u32(rid), _s(handle))) == []


def _write(tracker: SftpTracker, rid: int, handle: bytes, offset: int, data: bytes) -> list[Item]:
    return tracker.feed("to_agent", _packet(WRITE, _u32(rid), _s(handle), _u64(offset), _s(data)))


def _close(tracker: SftpTracker, rid: int, handle: bytes) -> list[Item]:
    tracker.feed("to_agent", _packet(CLOSE, _u32(rid), _s(handle)))
    return tracker.feed("from_agent", _ok(rid))


def test_content_is_kept_in_offset_order_up_to_keep_bytes() -> None:
    """Bytes of a small file come out in offset order, numbered, and its marker names the
    number; a file past keep_bytes is dropped and keeps only its digest; a rewritten one
    is dropped too."""
    tracker = _started(FileLimits(keep_bytes=10))
    _open(tracker, 1, "/etc/small", 2, b"a")
    assert _write(tracker, 2, b"a", 4, b"5678") == []  # held until offset 0 arrives
    assert _write(tracker, 3, b"a", 0, b"1234") == [Content(1, b"1234"), Content(1, b"5678")]
    (small,) = _events(_close(tracker, 4, b"a"))
    digest = hashlib.sha256(b"12345678").hexdigest()
    assert small.label() == f"file upload /etc/small size=8 sha256={digest} kept=1"

    _open(tracker, 5, "/etc/big", 2, b"b")
    assert _write(tracker, 6, b"b", 0, b"x" * 8) == [Content(2, b"x" * 8)]
    assert _write(tracker, 7, b"b", 8, b"x" * 8) == [Content(2, drop=True)]
    assert _write(tracker, 8, b"b", 16, b"x") == []
    (big,) = _events(_close(tracker, 9, b"b"))
    assert big.kept is None
    assert big.sha256 == hashlib.sha256(b"x" * 17).hexdigest()

    _open(tracker, 10, "/etc/again", 2, b"c")
    _write(tracker, 11, b"c", 0, b"ab")
    assert _write(tracker, 12, b"c", 0, b"cd") == [Content(3, drop=True)]
    (again,) = _events(_close(tracker, 13, b"c"))
    assert again.kept is None
    assert again.detail == "not-contiguous"


def test_upload_and_download_past_their_limits_are_refused() -> None:
    """A write past sftp_max_upload_bytes and an answer past sftp_max_download_bytes raise
    a limit error naming the setting before the bytes are relayed; the file is recorded as
    failed:too-large and what was kept of it is dropped."""
    tracker = _started(FileLimits(max_upload_bytes=10, max_download_bytes=4, keep_bytes=100))
    _open(tracker, 1, "/tmp/up", 2, b"u")
    assert _write(tracker, 2, b"u", 0, b"x" * 10) == [Content(1, b"x" * 10)]
    with pytest.raises(SftpLimitError, match="sftp_max_upload_bytes"):
        _write(tracker, 3, b"u", 10, b"y")
    _open(tracker, 4, "/var/log/down", 1, b"d")
    tracker.feed("to_agent", _packet(READ, _u32(5), _s(b"d"), _u64(0), _u32(5)))
    with pytest.raises(SftpLimitError, match="sftp_max_download_bytes"):
        tracker.feed("from_agent", _packet(DATA, _u32(5), _s(b"12345")))
    items = tracker.close()
    assert items[:2] == [Content(1, drop=True), Content(2, drop=True)]
    assert [item.label() for item in items[2:] if isinstance(item, FileEvent)] == [
        "file upload /tmp/up size=10 failed:too-large",
        "file download /var/log/down size=0 failed:too-large",
    ]


def test_an_upload_stopped_halfway_is_incomplete_and_not_kept() -> None:
    """The client goes away in the middle of an upload: the file is recorded as
    failed:incomplete with the bytes that went through, and its kept content dropped."""
    tracker = _started(FileLimits())
    _open(tracker, 1, "/srv/half.iso", 2, b"h")
    assert _write(tracker, 2, b"h", 0, b"z" * 1000) == [Content(1, b"z" * 1000)]
    assert [item if isinstance(item, Content) else item.label() for item in tracker.close()] == [
        Content(1, drop=True),
        "file upload /srv/half.iso size=1000 failed:incomplete",
    ]


def test_files_per_session_and_ten_thousand_handles_are_bounded() -> None:
    """sftp_max_files_per_session refuses the open past it (before it reaches the agent);
    without it, a client holding 10,000 handles open is stopped at the tracker's own bound
    rather than growing the broker's memory."""
    tracker = _started(FileLimits(max_files=2))
    _open(tracker, 1, "a", 1, b"1")
    _open(tracker, 2, "b", 1, b"2")
    with pytest.raises(SftpLimitError, match="sftp_max_files_per_session"):
        tracker.feed("to_agent", _packet(OPEN, _u32(3), _s("c"), _u32(1), _u32(0)))

    tracker = _started()
    for rid in range(1024):
        _open(tracker, rid, f"/tmp/f{rid}", 1, b"h%d" % rid)
    tracker.feed("to_agent", _packet(OPEN, _u32(1024), _s("/tmp/f"), _u32(1), _u32(0)))
    with pytest.raises(SftpStreamError, match="too many files open"):
        tracker.feed("from_agent", _packet(HANDLE, _u32(1024), _s(b"one more")))
    assert tracker.open_files == 1024
    # 10,000 opens sent without waiting for answers: refused at the bound on pending ones.
    tracker = _started()
    opens = b"".join(
        _packet(OPEN, _u32(rid), _s("/tmp/f"), _u32(1), _u32(0)) for rid in range(10_000)
    )
    with pytest.raises(SftpStreamError, match="without an answer"):
        tracker.feed("to_agent", opens)


def test_a_write_the_server_refuses_fails_the_file() -> None:
    """A write answered with a failure (the machine's disk is full) makes the upload a
    failed one: its bytes did not all land, so no digest and nothing kept."""
    tracker = _started(FileLimits())
    _open(tracker, 1, "/srv/full", 2, b"f")
    assert _write(tracker, 2, b"f", 0, b"abc") == [Content(1, b"abc")]
    assert tracker.feed("from_agent", _ok(2, 4)) == []
    assert _close(tracker, 3, b"f") == [
        Content(1, drop=True),
        FileEvent("upload", "/srv/full", False, 3, None, detail="write-failure"),
    ]
