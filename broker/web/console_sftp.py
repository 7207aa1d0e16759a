"""The console's SFTP client: a file session's owner terminal that speaks SFTP version 3
to the agent's ``sftp-server`` through the session hub.

Why a client of our own and not asyncssh's: asyncssh's ``SFTPClient`` runs only on an SSH
channel of its own, while a console transfer must go through the hub like the bytes of an
OpenSSH ``sftp`` do, so that the same tracker records it (``broker.sessions.sftp_tracker``),
the same limits stop it and the same flow control paces it. The transfers need only a small
part of the protocol (INIT, STAT, OPEN, READ, WRITE, CLOSE and their answers), encoded by the
pure functions at the top.

Flow control: at most :data:`IN_FLIGHT` requests of :data:`CHUNK` bytes wait for an answer,
and none is sent while the hub says the agent is behind (``pause_input``), so what the broker
holds of a file is bounded whatever its size.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from typing import Final

from broker.sessions.facts import Outcome
from broker.sessions.hub_core import Member
from broker.sessions.routing import SessionHandle
from broker.sessions.sftp_tracker import (
    CLOSE,
    DATA,
    HANDLE,
    INIT,
    MAX_PACKET,
    OPEN,
    READ,
    STATUS,
    VERSION,
    WRITE,
)

STAT: Final = 17
ATTRS: Final = 105
FX_EOF: Final = 1
FXF_READ: Final = 0x01
FXF_WRITE: Final = 0x02
FXF_CREAT: Final = 0x08
FXF_TRUNC: Final = 0x10
ATTR_SIZE: Final = 0x01
ATTR_UIDGID: Final = 0x02
ATTR_PERMISSIONS: Final = 0x04
S_IFMT: Final = 0o170000
S_IFREG: Final = 0o100000
CHUNK: Final = 32 << 10  # OpenSSH's sftp-server takes up to 256 KiB; asyncssh sends 16 KiB
IN_FLIGHT: Final = 8
_STATUS_TEXT: Final = {
    2: "no such file or directory",
    3: "permission denied",
    4: "the machine's SFTP server reported a failure",
    8: "the machine's SFTP server does not support this",
}


class TransferError(Exception):
    """The transfer cannot go on; the message says what happened, for the person."""


# -- the wire (pure) ---------------------------------------------------------------------------


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def packet(kind: int, rid: int | None, *fields: bytes) -> bytes:
    """One SFTP packet: length, type, id (all but INIT) and the fields."""
    body = bytes([kind]) + (struct.pack(">I", rid) if rid is not None else b"") + b"".join(fields)
    return struct.pack(">I", len(body)) + body


def frames(buffer: bytearray) -> list[bytes]:
    """Take the whole packets (without their length) off the front of ``buffer``."""
    out: list[bytes] = []
    while len(buffer) >= 4:
        (size,) = struct.unpack_from(">I", buffer)
        if size < 1 or size > MAX_PACKET:
            raise TransferError("the machine's SFTP server sent something that is not SFTP")
        if len(buffer) < 4 + size:
            break
        out.append(bytes(buffer[4 : 4 + size]))
        del buffer[: 4 + size]
    return out


@dataclass(frozen=True, slots=True)
class Attrs:
    size: int | None
    regular: bool | None  # None: the server did not say


def parse_attrs(body: bytes) -> Attrs:
    (flags,) = struct.unpack_from(">I", body)
    at, size, regular = 4, None, None
    if flags & ATTR_SIZE:
        (size,) = struct.unpack_from(">Q", body, at)
        at += 8
    if flags & ATTR_UIDGID:
        at += 8
    if flags & ATTR_PERMISSIONS:
        (mode,) = struct.unpack_from(">I", body, at)
        regular = mode & S_IFMT == S_IFREG
    return Attrs(size, regular)


def status_of(body: bytes) -> int:
    (code,) = struct.unpack_from(">I", body)
    return int(code)


def status_error(body: bytes, path: str) -> TransferError:
    code = status_of(body)
    what = _STATUS_TEXT.get(code, f"the machine's SFTP server refused it (status {code})")
    return TransferError(f"{path}: {what}")


# -- the terminal ------------------------------------------------------------------------------


class SftpTerminal:
    """The owner of a console file session (:class:`~broker.sessions.facts.Terminal`)."""

    def __init__(self) -> None:
        self._live: SessionHandle | None = None
        self._pid = 0
        self._buffer = bytearray()
        self._waiting: dict[int, asyncio.Future[tuple[int, bytes]]] = {}
        self._next = 0
        self._version: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._may_send = asyncio.Event()
        self._may_send.set()
        self._slots = asyncio.Semaphore(IN_FLIGHT)
        self.outcome: Outcome | None = None
        self.ended = asyncio.Event()
        self._failure: str | None = None

    @property
    def session_id(self) -> str:
        return self._live.session_id if self._live is not None else ""

    def bind(self, live: SessionHandle, member: Member) -> None:
        self._live, self._pid = live, member.pid

    # -- Terminal ----------------------------------------------------------------------------

    def write_output(self, data: bytes, stderr: bool) -> None:
        if stderr:
            return  # the sftp-server's own log lines; the transcript keeps the file events
        self._buffer += data
        try:
            packets = frames(self._buffer)
        except TransferError as exc:
            self._fail(str(exc))
            return
        for body in packets:
            if body[0] == VERSION:
                if not self._version.done():
                    self._version.set_result(None)
                continue
            if len(body) < 5:
                self._fail("the machine's SFTP server sent something that is not SFTP")
                return
            (rid,) = struct.unpack_from(">I", body, 1)
            waiter = self._waiting.pop(rid, None)
            if waiter is not None and not waiter.done():
                waiter.set_result((body[0], body[5:]))

    def buffered(self) -> int:
        return 0  # answers are taken as they come; the waiting requests bound them

    def show_state(self, state: str, reason: str, session_id: str) -> None:
        pass  # the HTTP request waits meanwhile; its answer says how it ended

    def show_participants(self, people: list[dict[str, str]]) -> None:
        pass

    def show_notice(self, message: str) -> None:
        pass

    def drop(self, message: str) -> None:
        self._fail(message)

    def pause_input(self, paused: bool) -> None:
        if paused:
            self._may_send.clear()
        else:
            self._may_send.set()

    def finish(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self._fail(outcome.message)
        self.ended.set()

    def _fail(self, message: str) -> None:
        if self._failure is None:
            self._failure = message
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_exception(TransferError(message))
        self._waiting.clear()
        if not self._version.done():
            self._version.set_exception(TransferError(message))

    # -- requests ----------------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        if self._failure is not None or self._live is None:
            raise TransferError(self._failure or "the file session is not running")
        self._live.input(self._pid, data)

    async def start(self) -> None:
        await self._may_send.wait()
        self._send(packet(INIT, None, struct.pack(">I", 3)))
        await self._version

    async def _issue(self, kind: int, *fields: bytes) -> asyncio.Future[tuple[int, bytes]]:
        """Send one request as soon as the agent may take it; the future of its answer."""
        await self._may_send.wait()
        self._next = (self._next + 1) & 0xFFFFFFFF
        rid = self._next
        waiter: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = waiter
        self._send(packet(kind, rid, *fields))
        return waiter

    async def request(self, kind: int, *fields: bytes) -> tuple[int, bytes]:
        """One request and its answer's type and body."""
        return await (await self._issue(kind, *fields))

    async def stat(self, path: str) -> Attrs:
        kind, body = await self.request(STAT, _string(path.encode()))
        if kind != ATTRS:
            raise status_error(body, path)
        return parse_attrs(body)

    async def open(self, path: str, flags: int) -> bytes:
        kind, body = await self.request(OPEN, _string(path.encode()), struct.pack(">II", flags, 0))
        if kind != HANDLE:
            raise status_error(body, path)
        (size,) = struct.unpack_from(">I", body)
        return body[4 : 4 + size]

    async def close(self, handle: bytes, path: str) -> None:
        kind, body = await self.request(CLOSE, _string(handle))
        if kind != STATUS or status_of(body) != 0:
            raise status_error(body, path)

    async def write(self, handle: bytes, offset: int, data: bytes, path: str) -> asyncio.Task[None]:
        """Send one WRITE now (once fewer than IN_FLIGHT wait); the task ends with its
        answer, so offsets go out in order while the answers are awaited together."""
        await self._slots.acquire()
        try:
            waiter = await self._issue(
                WRITE, _string(handle), struct.pack(">Q", offset), _string(data)
            )
        except BaseException:
            self._slots.release()
            raise

        async def answered() -> None:
            try:
                kind, body = await waiter
            finally:
                self._slots.release()
            if kind != STATUS or status_of(body) != 0:
                raise status_error(body, path)

        return asyncio.get_running_loop().create_task(answered())

    async def read(self, handle: bytes, offset: int, path: str) -> asyncio.Task[bytes]:
        """Ask now for CHUNK bytes at ``offset`` (once fewer than IN_FLIGHT wait); the task
        ends with the bytes (empty at the end of the file)."""
        await self._slots.acquire()
        try:
            waiter = await self._issue(READ, _string(handle), struct.pack(">QI", offset, CHUNK))
        except BaseException:
            self._slots.release()
            raise

        async def answered() -> bytes:
            try:
                kind, body = await waiter
            finally:
                self._slots.release()
            if kind == DATA:
                (size,) = struct.unpack_from(">I", body)
                return body[4 : 4 + size]
            if kind == STATUS and status_of(body) == FX_EOF:
                return b""
            raise status_error(body, path)

        return asyncio.get_running_loop().create_task(answered())

    def end_input(self) -> None:
        """No more requests: the agent's sftp-server exits, and the session with it."""
        if self._live is not None:
            self._live.input_eof(self._pid)

    def leave(self, why: str) -> None:
        """The transfer broke off: leaving ends the file session (its open files are
        recorded as not finished)."""
        if self._live is not None and not self.ended.is_set():
            self._live.detach(self._pid, why)
