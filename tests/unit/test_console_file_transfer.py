"""The pure parts of the console's file transfers: which paths are refused, and the SFTP
packets the console's client frames and reads."""

from __future__ import annotations

import struct

import pytest

from broker.web.console_sftp import Attrs, TransferError, frames, packet, parse_attrs
from broker.web.file_transfer import MAX_PATH_BYTES, check_path


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("", "give the path"),
        ("/tmp/" + "é" * (MAX_PATH_BYTES // 2), "longer than 1024 bytes"),
        ("/tmp/a\x1b[2Jb", "U+001B"),
        ("/tmp/a\nb", "U+000A"),
        ("/tmp/a\x9bb", "U+009B"),
        ("/tmp/a\u2028b", "U+2028"),
        ("/etc/app/", "names a directory"),
    ],
)
def test_refused_paths_say_why(path: str, why: str) -> None:
    """Each refused path gets a sentence naming what is wrong."""
    refused = check_path(path)
    assert refused is not None
    assert why in refused


@pytest.mark.parametrize("path", ["/var/log/syslog", "fixed.conf", "../x", "/tmp/ü b.txt"])
def test_ordinary_paths_pass(path: str) -> None:
    """Relative paths, `..` and non-ASCII names are the login account's business."""
    assert check_path(path) is None


def test_frames_take_whole_packets_and_keep_the_rest() -> None:
    """Packets split anywhere come out whole, in order; a bad length is not SFTP."""
    stream = packet(101, 7, b"\x00" * 8) + packet(103, 8, b"data")
    buffer = bytearray(stream[:10])
    assert frames(buffer) == []
    buffer += stream[10:]
    first, second = frames(buffer)
    assert first[0] == 101
    assert struct.unpack_from(">I", first, 1) == (7,)
    assert second.endswith(b"data")
    assert buffer == b""
    with pytest.raises(TransferError):
        frames(bytearray(b"\xff\xff\xff\xff"))


def test_attrs_give_size_and_kind() -> None:
    """Size and the regular-file bit are read past the owner ids."""
    body = struct.pack(">IQIII", 0x1 | 0x2 | 0x4, 12345, 0, 0, 0o100644)
    assert parse_attrs(body) == Attrs(12345, True)
    assert parse_attrs(struct.pack(">II", 0x4, 0o040755)) == Attrs(None, False)
    assert parse_attrs(struct.pack(">I", 0)) == Attrs(None, None)
