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
    FileEvent,
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


def _started() -> SftpTracker:
    tracker = SftpTracker()
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
    events = tracker.feed("from_agent", _ok(20))
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
    (event,) = tracker.feed("from_agent", _ok(4))
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
    (event,) = tracker.feed("from_agent", _ok(4))
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
    labels = [event.label() for event in tracker.feed("from_agent", answers)]
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
    (refused,) = tracker.feed("from_agent", _ok(1, 3))
    assert refused.label() == "file download /root/x failed:permission-denied"
    tracker.feed("to_agent", _packet(OPEN, _u32(2), _s("half"), _u32(2), _u32(0)))
    tracker.feed("from_agent", _packet(HANDLE, _u32(2), _s(b"h")))
    tracker.feed("to_agent", _packet(WRITE, _u32(3), _s(b"h"), _u64(0), _s(b"12345")))
    (cut,) = tracker.close()
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
    (event,) = tracker.feed("from_agent", _ok(3))
    label = event.label()
    assert len(label) <= MAX_LABEL
    assert label.endswith(f"size=1 sha256={hashlib.sha256(b'x').hexdigest()}")
    assert "\x1b" not in label
    tracker.feed("to_agent", _packet(RENAME, _u32(4), _s(hostile), _s(hostile)))
    (renamed,) = tracker.feed("from_agent", _ok(4, 3))
    assert len(renamed.label()) <= MAX_LABEL
    assert renamed.label().endswith("failed:permission-denied")


def _renamed(tracker: SftpTracker, rid: int, old: bytes, new: bytes) -> str:
    tracker.feed("to_agent", _packet(RENAME, _u32(rid), _s(old), _s(new)))
    (event,) = tracker.feed("from_agent", _ok(rid))
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
        assert shown_old.startswith("/tmp/d0/") and shown_new.startswith("/tmp/d0/")
        if len(old) > 90:
            assert shown_old.endswith(f"config.bin{path_tag(old)}")
            assert shown_new.endswith(f"config.new{path_tag(new)}")
            assert "…" in shown_old and path_tag(old) != path_tag(new)
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
