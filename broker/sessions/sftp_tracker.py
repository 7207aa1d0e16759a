"""What an SFTP session does to files, read from the packets the gateway relays.

Why parse on the relay instead of terminating SFTP at the broker (an asyncssh SFTP server
for the client, an SFTP client to the agent): the relay keeps the agent's own SFTP server
(OpenSSH's ``sftp-server``, run as the login account) the only one deciding what a request
does, so the client sees exactly that server's answers, extensions and errors, and the
broker never holds a file or a handle of its own. Recording needs only the requests and the
answers to them, which is a small part of SFTP version 3 (draft-ietf-secsh-filexfer-02, the
version OpenSSH speaks):

* client → agent: OPEN, CLOSE, READ, WRITE, SETSTAT, FSETSTAT, REMOVE, MKDIR, RMDIR,
  RENAME, SYMLINK and the ``posix-rename@openssh.com`` extension, each with its id;
* agent → client: HANDLE, DATA and STATUS answering those ids.

Bytes are hashed in offset order: an out-of-order chunk waits (up to
:data:`MAX_HELD_BYTES` per file) for the ones before it; a file whose bytes did not arrive
as one run from offset 0 is reported with no digest ("not contiguous"), never a wrong one.
:class:`SftpTracker` never performs I/O; it returns :class:`FileEvent`\\ s, which the hub
records as transcript markers. A stream that is not SFTP (a bad length, a packet cut
short) raises :class:`SftpStreamError`: the hub ends the session rather than relay bytes
it cannot record.
"""

from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import dataclass, field
from typing import Final, Literal

from broker.transcript.asciicast import MAX_LABEL, clean_label

# Packet types (draft-ietf-secsh-filexfer-02, section 3).
INIT: Final = 1
VERSION: Final = 2
OPEN: Final = 3
CLOSE: Final = 4
READ: Final = 5
WRITE: Final = 6
SETSTAT: Final = 9
FSETSTAT: Final = 10
REMOVE: Final = 13
MKDIR: Final = 14
RMDIR: Final = 15
RENAME: Final = 18
SYMLINK: Final = 20
EXTENDED: Final = 200
STATUS: Final = 101
HANDLE: Final = 102
DATA: Final = 103

FXF_READ: Final = 0x01
FXF_WRITE: Final = 0x02
FX_OK: Final = 0
# OpenSSH's own limit is 256 KiB of payload; a little room for the header.
MAX_PACKET: Final = (256 << 10) + 1024
MAX_HELD_BYTES: Final = 16 << 20
MAX_OPEN_FILES: Final = 1024
MAX_PENDING: Final = 4096
MAX_PATH_INPUT: Final = 16 << 10

Direction = Literal["to_agent", "from_agent"]


class SftpStreamError(Exception):
    """The relayed bytes are not an SFTP stream this tracker can follow."""


class SftpLimitError(Exception):
    """A request or an answer passes one of the session's file limits; the packet that
    would pass it is not relayed, and the message says which limit and what to do."""


@dataclass(frozen=True, slots=True)
class FileLimits:
    """A file session's limits (broker.config: ``sftp_*``); 0 means no limit."""

    max_upload_bytes: int = 0
    max_download_bytes: int = 0
    max_files: int = 0
    keep_bytes: int = 10 << 20  # content kept with the transcript, per file
    # The SSH window the broker gives the agent's SFTP channel: at most this much of a
    # download is in flight in the agent's tunnel ahead of another session's keystrokes.
    window_bytes: int = 256 << 10


@dataclass(frozen=True, slots=True)
class Content:
    """Bytes of the file numbered ``number``, in offset order, to keep with the transcript.
    ``drop``: the file is not kept after all (past ``keep_bytes``, not one run of bytes, or
    not finished); what was kept of it goes."""

    number: int
    data: bytes = b""
    drop: bool = False


@dataclass(frozen=True, slots=True)
class FileEvent:
    """One file operation, for a transcript marker (:meth:`label`)."""

    op: str  # upload, download, rename, remove, mkdir, rmdir, setstat, symlink, open
    path: str
    ok: bool
    size: int | None = None
    sha256: str | None = None
    other: str | None = None  # the new name of a rename, the target of a symlink
    detail: str = ""
    kept: int | None = None  # the number of its content kept with the transcript

    def label(self) -> str:
        """``file upload /tmp/a size=3 sha256=…``: one line, the form docs/transcripts.md
        describes and :func:`broker.transcript.export.files_from_cast` reads back."""
        tail: list[str] = []
        if self.size is not None:
            tail.append(f"size={self.size}")
        if self.sha256 is not None:
            tail.append(f"sha256={self.sha256}")
        if self.kept is not None:
            tail.append(f"kept={self.kept}")
        if not self.ok:
            tail.append(f"failed{':' if self.detail else ''}{self.detail}")
        elif self.detail:
            tail.append(self.detail)
        paths = [self.path] if self.other is None else [self.path, self.other]
        # The paths share what the rest leaves of a marker's 200 characters, each clipped
        # on its own: a longer label would be cut at its end, and the digest with it.
        fixed = len(f"file {self.op} ") + len(" -> ") * (len(paths) - 1)
        fixed += len(" ".join(tail)) + (1 if tail else 0)
        budget = max(MIN_PATH_SHOWN, (MAX_LABEL - fixed) // len(paths) - 2)
        shown = [shown_path(path, budget) for path in paths]
        return " ".join(["file", self.op, " -> ".join(shown), *tail])


# What the tracker returns: file events to mark, and file content to keep.
Item = FileEvent | Content

# A clipped path keeps this many characters at least (besides "…" and its tag).
MIN_PATH_SHOWN: Final = 40
PATH_TAG_HEX: Final = 16
# One shown character: an escape written for a control character (or a literal "…"),
# which a clip never cuts in two, or any single character.
_UNIT: Final = re.compile(r"\\(?:x[0-9a-f]{2}|u[0-9a-f]{4})|.", re.DOTALL)


def path_tag(path: str) -> str:
    """``#`` and the first 16 hex digits of the SHA-256 of the path's bytes as sent: what
    identifies a clipped path (``printf %s PATH | sha256sum``)."""
    raw = path.encode("utf-8", "surrogateescape")
    return "#" + hashlib.sha256(raw).hexdigest()[:PATH_TAG_HEX]


def shown_path(path: str, limit: int) -> str:
    """The path as a marker shows it, at most ``limit`` characters (plus quotes).

    Controls are escaped (``\\xHH``) and a literal ``…`` is written ``\\u2026``, so that
    ``…`` in a marker always means "clipped". A path longer than ``limit`` keeps its head
    and, longer, its tail (the file name), joined by ``…``, never splitting an escape,
    and ends with :func:`path_tag`, so two long paths that share head and tail are still
    told apart. Quoted when it holds a space (or is empty), so the label splits back."""
    escaped = clean_label(path.replace("…", "\\u2026"), MAX_PATH_INPUT * 6)
    if len(escaped) > limit:
        units = _UNIT.findall(escaped)
        room = max(2, limit - 1 - 1 - PATH_TAG_HEX)
        head_room = room // 3
        head: list[str] = []
        used = 0
        for unit in units:
            if used + len(unit) > head_room:
                break
            head.append(unit)
            used += len(unit)
        tail: list[str] = []
        for unit in reversed(units[len(head) :]):
            if used + len(unit) > room:
                break
            tail.append(unit)
            used += len(unit)
        escaped = "".join(head) + "…" + "".join(reversed(tail)) + path_tag(path)
    if " " in escaped or not escaped or escaped[0] in "'\"":
        return f'"{escaped}"'
    return escaped


@dataclass
class _OpenFile:
    path: str
    writing: bool
    number: int
    keep_left: int  # bytes that may still be kept; -1: not kept (any more)
    digest: hashlib._Hash = field(default_factory=hashlib.sha256)
    next_offset: int = 0
    held: dict[int, bytes] = field(default_factory=dict)
    held_bytes: int = 0
    contiguous: bool = True
    moved: int = 0
    refused: str = ""  # why the session's limits stopped it ("too-large")
    failed: str = ""  # the server refused a write (a full disk: "failure")

    def take(self, offset: int, data: bytes, out: list[Item]) -> None:
        self.moved += len(data)
        if not self.contiguous or not data:
            return
        if offset < self.next_offset:
            self.contiguous = False  # a rewrite or a re-read: no single stream of bytes
            self.drop(out)
            return
        self.held[offset] = data
        self.held_bytes += len(data)
        while self.next_offset in self.held:
            chunk = self.held.pop(self.next_offset)
            self.held_bytes -= len(chunk)
            self.digest.update(chunk)
            self.next_offset += len(chunk)
            self.keep(chunk, out)
        if self.held_bytes > MAX_HELD_BYTES:
            self.contiguous = False
            self.held.clear()
            self.drop(out)

    def keep(self, chunk: bytes, out: list[Item]) -> None:
        if self.keep_left < 0:
            return
        if len(chunk) > self.keep_left:
            self.drop(out)  # past keep_bytes: only the digest is kept
            return
        self.keep_left -= len(chunk)
        out.append(Content(self.number, chunk))

    def drop(self, out: list[Item]) -> None:
        if self.keep_left >= 0:
            self.keep_left = -1
            out.append(Content(self.number, drop=True))

    def event(self, out: list[Item]) -> FileEvent:
        op = "upload" if self.writing else "download"
        if self.failed:  # the bytes did not all land: no digest of what is not there
            self.drop(out)
            return FileEvent(op, self.path, False, self.moved, None, detail=self.failed)
        if self.contiguous and not self.held:
            kept = self.number if self.keep_left >= 0 else None
            return FileEvent(
                op, self.path, True, self.next_offset, self.digest.hexdigest(), kept=kept
            )
        self.drop(out)
        return FileEvent(op, self.path, True, self.moved, None, detail="not-contiguous")

    def unfinished(self, out: list[Item]) -> FileEvent:
        """The file as the session ended while it was open (or a limit stopped it)."""
        self.drop(out)
        op = "upload" if self.writing else "download"
        detail = self.refused or "incomplete"
        return FileEvent(op, self.path, False, self.moved, None, detail=detail)


class _Reader:
    def __init__(self, payload: bytes) -> None:
        self._data = payload
        self._at = 0

    def u8(self) -> int:
        return self.raw(1)[0]

    def u32(self) -> int:
        value: int = struct.unpack(">I", self.raw(4))[0]
        return value

    def u64(self) -> int:
        value: int = struct.unpack(">Q", self.raw(8))[0]
        return value

    def string(self) -> bytes:
        return self.raw(self.u32())

    def text(self) -> str:
        # Undecodable bytes kept as surrogates: the path tag digests the bytes as sent.
        return self.string().decode("utf-8", errors="surrogateescape")

    def raw(self, count: int) -> bytes:
        end = self._at + count
        if end > len(self._data):
            raise SftpStreamError("an SFTP packet is shorter than its fields")
        chunk = self._data[self._at : end]
        self._at = end
        return chunk


class _Framer:
    """Cuts one direction's bytes into SFTP packets (uint32 length, then the payload)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        packets: list[bytes] = []
        while len(self._buffer) >= 4:
            length = int.from_bytes(self._buffer[:4], "big")
            if length == 0 or length > MAX_PACKET:
                raise SftpStreamError(f"an SFTP packet of {length} bytes is out of bounds")
            if len(self._buffer) < 4 + length:
                break
            packets.append(bytes(self._buffer[4 : 4 + length]))
            del self._buffer[: 4 + length]
        return packets


# What a request id waits for: ("open", path, writing) / ("read", handle, offset) /
# ("write", handle, None) / ("close", handle, None) / ("op", event-without-outcome).
_Pending = tuple[str, object, object]


class SftpTracker:
    """Follows one SFTP session's two directions; returns the file events as they finish,
    and the content of the files to keep, in offset order."""

    def __init__(self, limits: FileLimits | None = None) -> None:
        self.limits = limits or FileLimits()
        self._to_agent = _Framer()
        self._from_agent = _Framer()
        self._pending: dict[int, _Pending] = {}
        self._files: dict[bytes, _OpenFile] = {}
        self._opens = 0  # OPEN requests so far (max_files counts them)
        self._numbered = 0  # files opened, numbered from 1 for their kept content
        self._out: list[Item] = []

    @property
    def open_files(self) -> int:
        return len(self._files)

    def feed(self, direction: Direction, data: bytes) -> list[Item]:
        """Bytes relayed one way; the file events they complete and the content to keep.
        Raises SftpStreamError (not SFTP) or SftpLimitError (a limit passed; relay none of
        ``data``, and end the session after marking :meth:`close`'s events)."""
        self._out = []
        if direction == "to_agent":
            for packet in self._to_agent.feed(data):
                self._request(_Reader(packet))
        else:
            for packet in self._from_agent.feed(data):
                self._response(_Reader(packet))
        return self._out

    def close(self) -> list[Item]:
        """The session ended: files still open were moved only in part."""
        out: list[Item] = []
        events = [state.unfinished(out) for state in self._files.values()]
        self._files.clear()
        self._pending.clear()
        return [*out, *events]

    def _wait(self, rid: int, pending: _Pending) -> None:
        if len(self._pending) >= MAX_PENDING:
            raise SftpStreamError("too many SFTP requests without an answer")
        self._pending[rid] = pending

    def _request(self, r: _Reader) -> None:
        kind = r.u8()
        if kind == INIT:
            return
        rid = r.u32()
        if kind == OPEN:
            path = r.text()
            flags = r.u32()
            self._opens += 1
            most = self.limits.max_files
            if most and self._opens > most:
                raise SftpLimitError(
                    f"this session has opened {most} files, the most one session may "
                    "(sftp_max_files_per_session); start a new session for more"
                )
            self._wait(rid, ("open", path, bool(flags & FXF_WRITE)))
        elif kind == CLOSE:
            self._wait(rid, ("close", r.string(), None))
        elif kind == READ:
            handle, offset = r.string(), r.u64()
            if handle in self._files:
                self._wait(rid, ("read", handle, offset))
        elif kind == WRITE:
            handle, offset, data = r.string(), r.u64(), r.string()
            state = self._files.get(handle)
            if state is not None and state.writing:
                self._check_size(state, offset + len(data), self.limits.max_upload_bytes)
                state.take(offset, data, self._out)
                self._wait(rid, ("write", handle, None))
        elif kind in (SETSTAT, REMOVE, MKDIR, RMDIR):
            op = {SETSTAT: "setstat", REMOVE: "remove", MKDIR: "mkdir", RMDIR: "rmdir"}[kind]
            self._wait(rid, ("op", FileEvent(op, r.text(), True), None))
        elif kind == FSETSTAT:
            state = self._files.get(r.string())
            if state is not None:
                self._wait(rid, ("op", FileEvent("setstat", state.path, True), None))
        elif kind == RENAME:
            old, new = r.text(), r.text()
            self._wait(rid, ("op", FileEvent("rename", old, True, other=new), None))
        elif kind == SYMLINK:
            # OpenSSH sends (target, link), the reverse of the draft; recorded as sent.
            first, second = r.text(), r.text()
            self._wait(rid, ("op", FileEvent("symlink", first, True, other=second), None))
        elif kind == EXTENDED and r.string() == b"posix-rename@openssh.com":
            old, new = r.text(), r.text()
            self._wait(rid, ("op", FileEvent("rename", old, True, other=new), None))

    def _check_size(self, state: _OpenFile, end: int, most: int) -> None:
        """Refuse the bytes that would take a file past its direction's limit."""
        if most and end > most:
            state.refused = "too-large"
            way, name = ("upload", "sftp_max_upload_bytes")
            if not state.writing:
                way, name = ("download", "sftp_max_download_bytes")
            raise SftpLimitError(
                f"{state.path!r} is larger than the {most} bytes one file may {way} ({name}); "
                "the session ended. Compress or split it, or ask an admin to raise the limit"
            )

    def _response(self, r: _Reader) -> None:
        kind = r.u8()
        if kind == VERSION:
            return
        rid = r.u32()
        pending = self._pending.pop(rid, None)
        if pending is None:
            return
        what, first, second = pending
        if what == "open":
            assert isinstance(first, str)
            if kind == HANDLE:
                if len(self._files) >= MAX_OPEN_FILES:
                    raise SftpStreamError("too many files open in one SFTP session")
                self._numbered += 1
                keep = self.limits.keep_bytes if self.limits.keep_bytes > 0 else -1
                self._files[r.string()] = _OpenFile(
                    first, writing=bool(second), number=self._numbered, keep_left=keep
                )
                return
            op = "upload" if second else "download"
            self._out.append(FileEvent(op, first, False, detail=_status(kind, r)))
            return
        if what == "read":
            assert isinstance(first, bytes)
            assert isinstance(second, int)
            state = self._files.get(first)
            if kind == DATA and state is not None and not state.writing:
                data = r.string()
                self._check_size(state, second + len(data), self.limits.max_download_bytes)
                state.take(second, data, self._out)
            return
        if what == "write":
            assert isinstance(first, bytes)
            state = self._files.get(first)
            code = _status(kind, r)
            if state is not None and code and not state.failed:
                state.failed = f"write-{code}"
            return
        if what == "close":
            assert isinstance(first, bytes)
            state = self._files.pop(first, None)
            if state is not None:
                self._out.append(state.event(self._out))
            return
        assert isinstance(first, FileEvent)
        code = _status(kind, r)
        if code == "":
            self._out.append(first)
            return
        event = FileEvent(first.op, first.path, False, other=first.other, detail=code)
        self._out.append(event)


_STATUS_NAMES: Final = {
    1: "eof",
    2: "no-such-file",
    3: "permission-denied",
    4: "failure",
    5: "bad-message",
    8: "unsupported",
}


def _status(kind: int, r: _Reader) -> str:
    """ "" for FX_OK, otherwise a short name of the error."""
    if kind != STATUS:
        return "unexpected-answer"
    code = r.u32()
    if code == FX_OK:
        return ""
    return _STATUS_NAMES.get(code, f"status-{code}")
