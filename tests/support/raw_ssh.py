"""A raw SSH transport client for hostile-client tests: it sends exactly the bytes a test
asks for, in any order, which no real SSH client library would do.

The core is sans-I/O: the data types of RFC 4251 §5 (``uint32``, ``string``,
``name_list``, ``boolean``), the unencrypted binary packet protocol of RFC 4253 §6
(``frame`` builds a packet, :class:`PacketBuffer` takes bytes in and hands whole payloads
out), and the two messages the tests read: :class:`KexInit` and :class:`Disconnect`.
:class:`RawSshClient` is the thin asyncio layer over a plain TCP connection.

Only the part of the protocol before the first NEWKEYS is spoken: there is no cipher and no
MAC. For what comes after NEWKEYS, :class:`HostileConnection` is an asyncssh client that
stops after the key exchange and then sends any message in any phase
(:func:`keyed_connection`). Waits are unbounded here; a test bounds them with
``asyncio.timeout``.

Errors: :class:`RawSshError` — the peer sent bytes that are no SSH packet.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import asyncssh
from asyncssh.connection import SSHClientConnection
from asyncssh.packet import SSHPacket

MSG_DISCONNECT: Final = 1
MSG_IGNORE: Final = 2
MSG_UNIMPLEMENTED: Final = 3
MSG_DEBUG: Final = 4
MSG_SERVICE_REQUEST: Final = 5
MSG_SERVICE_ACCEPT: Final = 6
MSG_KEXINIT: Final = 20
MSG_NEWKEYS: Final = 21
MSG_KEX_ECDH_INIT: Final = 30
MSG_KEX_ECDH_REPLY: Final = 31
MSG_USERAUTH_REQUEST: Final = 50
MSG_USERAUTH_FAILURE: Final = 51
MSG_USERAUTH_SUCCESS: Final = 52
MSG_USERAUTH_BANNER: Final = 53
MSG_GLOBAL_REQUEST: Final = 80
MSG_CHANNEL_OPEN: Final = 90

DISCONNECT_PROTOCOL_ERROR: Final = 2
DISCONNECT_SERVICE_NOT_AVAILABLE: Final = 7

STRICT_KEX_CLIENT: Final = "kex-strict-c-v00@openssh.com"
STRICT_KEX_SERVER: Final = "kex-strict-s-v00@openssh.com"
CLIENT_VERSION: Final = b"SSH-2.0-SecondlineRawTest_1.0"

BLOCK: Final = 8  # the cipher block size before NEWKEYS ("none" cipher: 8, RFC 4253 §6)
MAX_PACKET: Final = 256 * 1024  # far above what a server sends before NEWKEYS
MAX_VERSION_LINE: Final = 8192


class RawSshError(Exception):
    """The peer sent bytes that are no SSH packet (or a field ran past its payload)."""


# -- RFC 4251 §5 data types ----------------------------------------------------------------


def uint32(value: int) -> bytes:
    """A big-endian unsigned 32-bit integer."""
    return struct.pack(">I", value)


def boolean(value: bool) -> bytes:
    """One byte, 1 for true and 0 for false."""
    return b"\x01" if value else b"\x00"


def string(value: bytes | str) -> bytes:
    """A uint32 length and the bytes (text is UTF-8)."""
    data = value.encode() if isinstance(value, str) else value
    return uint32(len(data)) + data


def name_list(names: Sequence[str]) -> bytes:
    """A string of comma-separated ASCII names."""
    return string(",".join(names).encode("ascii"))


def message(msg: int, *fields: bytes) -> bytes:
    """A payload: the message number byte and the encoded fields."""
    return bytes([msg]) + b"".join(fields)


class Cursor:
    """Reads RFC 4251 data types from a payload, front to back."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def take(self, count: int) -> bytes:
        end = self._pos + count
        if count < 0 or end > len(self._data):
            raise RawSshError(f"field of {count} bytes runs past the end of the payload")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def boolean(self) -> bool:
        return self.byte() != 0

    def uint32(self) -> int:
        value: int = struct.unpack(">I", self.take(4))[0]
        return value

    def string(self) -> bytes:
        return self.take(self.uint32())

    def name_list(self) -> tuple[str, ...]:
        text = self.string().decode("ascii", errors="replace")
        return tuple(text.split(",")) if text else ()

    def at_end(self) -> bool:
        return self._pos == len(self._data)


# -- RFC 4253 §6 binary packets (before NEWKEYS) --------------------------------------------


def frame(payload: bytes, *, padding: int | None = None) -> bytes:
    """One unencrypted packet: uint32 packet_length, byte padding_length, payload and random
    padding (at least 4 bytes, the whole a multiple of 8). ``padding`` forces a length, for
    tests of malformed packets."""
    if padding is None:
        padding = -(5 + len(payload)) % BLOCK
        if padding < 4:
            padding += BLOCK
    body = bytes([padding]) + payload + os.urandom(padding)
    return uint32(len(body)) + body


class PacketBuffer:
    """Sans-I/O reader of what a server sends before NEWKEYS: its version line, then whole
    packets. ``feed`` takes any slice of the byte stream and returns the payloads it
    completed; ``version`` is the server's identification line once it has arrived. After
    the server's NEWKEYS its packets are encrypted: they are only counted
    (``encrypted_bytes``)."""

    def __init__(self, max_packet: int = MAX_PACKET) -> None:
        self._buf = bytearray()
        self._max_packet = max_packet
        self.version: bytes | None = None
        self.newkeys = False
        self.encrypted_bytes = 0

    def feed(self, data: bytes) -> list[bytes]:
        if self.newkeys:
            self.encrypted_bytes += len(data)
            return []
        self._buf += data
        payloads: list[bytes] = []
        while self.version is None:
            end = self._buf.find(b"\n")
            if end < 0:
                if len(self._buf) > MAX_VERSION_LINE:
                    raise RawSshError("the server's version line has no end")
                return payloads
            line = bytes(self._buf[:end]).rstrip(b"\r")
            del self._buf[: end + 1]
            # RFC 4253 §4.2: a server may send other lines before its version line.
            if line.startswith(b"SSH-"):
                self.version = line
        while len(self._buf) >= 4:
            length = int.from_bytes(self._buf[:4], "big")
            if length < 5 or length > self._max_packet:
                raise RawSshError(f"packet_length {length} is out of range")
            if len(self._buf) < 4 + length:
                break
            body = bytes(self._buf[4 : 4 + length])
            del self._buf[: 4 + length]
            padding = body[0]
            if padding < 4 or padding > length - 2 or (4 + length) % BLOCK:
                raise RawSshError(f"bad padding ({padding}) or length ({length})")
            payload = body[1 : length - padding]
            payloads.append(payload)
            if payload[:1] == bytes([MSG_NEWKEYS]):
                self.newkeys = True
                self.encrypted_bytes = len(self._buf)
                self._buf.clear()
                break
        return payloads


# -- messages --------------------------------------------------------------------------------


@dataclass(frozen=True)
class KexInit:
    """SSH_MSG_KEXINIT (RFC 4253 §7.1)."""

    kex_algorithms: tuple[str, ...]
    host_key_algorithms: tuple[str, ...] = ("ssh-ed25519",)
    ciphers_c2s: tuple[str, ...] = ("aes128-gcm@openssh.com",)
    ciphers_s2c: tuple[str, ...] = ("aes128-gcm@openssh.com",)
    macs_c2s: tuple[str, ...] = ("hmac-sha2-256-etm@openssh.com",)
    macs_s2c: tuple[str, ...] = ("hmac-sha2-256-etm@openssh.com",)
    compression_c2s: tuple[str, ...] = ("none",)
    compression_s2c: tuple[str, ...] = ("none",)
    languages_c2s: tuple[str, ...] = ()
    languages_s2c: tuple[str, ...] = ()
    first_kex_follows: bool = False
    cookie: bytes = field(default_factory=lambda: os.urandom(16))

    def serialize(self) -> bytes:
        return message(
            MSG_KEXINIT,
            self.cookie,
            name_list(self.kex_algorithms),
            name_list(self.host_key_algorithms),
            name_list(self.ciphers_c2s),
            name_list(self.ciphers_s2c),
            name_list(self.macs_c2s),
            name_list(self.macs_s2c),
            name_list(self.compression_c2s),
            name_list(self.compression_s2c),
            name_list(self.languages_c2s),
            name_list(self.languages_s2c),
            boolean(self.first_kex_follows),
            uint32(0),
        )

    @classmethod
    def parse(cls, payload: bytes) -> KexInit:
        cursor = Cursor(payload)
        if cursor.byte() != MSG_KEXINIT:
            raise RawSshError("not a KEXINIT message")
        cookie = cursor.take(16)
        lists = [cursor.name_list() for _ in range(10)]
        follows = cursor.boolean()
        cursor.uint32()
        if not cursor.at_end():
            raise RawSshError("bytes after the end of KEXINIT")
        return cls(
            kex_algorithms=lists[0],
            host_key_algorithms=lists[1],
            ciphers_c2s=lists[2],
            ciphers_s2c=lists[3],
            macs_c2s=lists[4],
            macs_s2c=lists[5],
            compression_c2s=lists[6],
            compression_s2c=lists[7],
            languages_c2s=lists[8],
            languages_s2c=lists[9],
            first_kex_follows=follows,
            cookie=cookie,
        )


def client_kexinit(*, strict: bool = True, kex: str = "curve25519-sha256") -> KexInit:
    """The KEXINIT of a plain modern client; ``strict`` adds the strict-kex marker."""
    extra = (STRICT_KEX_CLIENT,) if strict else ()
    return KexInit(kex_algorithms=(kex, *extra))


@dataclass(frozen=True)
class Disconnect:
    """SSH_MSG_DISCONNECT (RFC 4253 §11.1)."""

    code: int
    reason: str

    @classmethod
    def parse(cls, payload: bytes) -> Disconnect:
        cursor = Cursor(payload)
        if cursor.byte() != MSG_DISCONNECT:
            raise RawSshError("not a DISCONNECT message")
        code = cursor.uint32()
        reason = cursor.string().decode("utf-8", errors="replace")
        return cls(code, reason)


@dataclass(frozen=True)
class Closed:
    """How a connection ended: every payload the server sent on the way, its DISCONNECT
    message if it sent one in the clear, and how many encrypted bytes followed its NEWKEYS
    (an encrypted DISCONNECT among them cannot be read here)."""

    payloads: tuple[bytes, ...]
    disconnect: Disconnect | None
    encrypted_bytes: int = 0

    def types(self) -> list[int]:
        return [p[0] for p in self.payloads if p]


# -- the asyncio layer -----------------------------------------------------------------------


class RawSshClient:
    """A TCP connection that speaks raw SSH packets, with no protocol rules of its own."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._packets = PacketBuffer()
        self._pending: list[bytes] = []
        self._eof = False

    @classmethod
    async def connect(cls, host: str, port: int, *, source: str | None = None) -> RawSshClient:
        """Connect, from the local address ``source`` if given (any 127.x.y.z on Linux)."""
        local = (source, 0) if source is not None else None
        reader, writer = await asyncio.open_connection(host, port, local_addr=local)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        """Write bytes as they are. A server that already closed is not an error here: the
        test asserts on how the connection ended (see :meth:`closed`)."""
        with contextlib.suppress(ConnectionError):
            self._writer.write(data)
            await self._writer.drain()

    async def send_version(self, line: bytes = CLIENT_VERSION) -> None:
        await self.send(line + b"\r\n")

    async def send_packet(self, payload: bytes) -> None:
        await self.send(frame(payload))

    async def _read(self) -> bool:
        """Read more from the socket into the packet buffer; False at EOF."""
        if self._eof:
            return False
        try:
            data = await self._reader.read(65536)
        except ConnectionError:
            data = b""
        if not data:
            self._eof = True
            return False
        self._pending += self._packets.feed(data)
        return True

    async def server_version(self) -> bytes:
        """The server's version line (without CR LF)."""
        while self._packets.version is None:
            if not await self._read():
                raise RawSshError("the server closed before sending its version")
        return self._packets.version

    async def next_payload(self) -> bytes | None:
        """The next payload from the server, or None once it has closed the connection."""
        while not self._pending:
            if not await self._read():
                return None
        return self._pending.pop(0)

    async def start(self, kexinit: KexInit | None = None) -> KexInit:
        """Exchange versions and KEXINITs; returns the server's KEXINIT. With ``kexinit``
        None the client sends no KEXINIT, so a test can send something else first."""
        await self.send_version()
        await self.server_version()
        if kexinit is not None:
            await self.send_packet(kexinit.serialize())
        payload = await self.next_payload()
        if payload is None:
            raise RawSshError("the server closed before sending KEXINIT")
        return KexInit.parse(payload)

    async def closed(self) -> Closed:
        """Read until the server closes the connection; how it ended."""
        payloads: list[bytes] = []
        disconnect: Disconnect | None = None
        while (payload := await self.next_payload()) is not None:
            payloads.append(payload)
            if payload[:1] == bytes([MSG_DISCONNECT]):
                disconnect = Disconnect.parse(payload)
        return Closed(tuple(payloads), disconnect, self._packets.encrypted_bytes)

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()


# -- after NEWKEYS: asyncssh does the cryptography -----------------------------------------


class HostileConnection(SSHClientConnection):
    """An asyncssh client connection that stops after the key exchange (no service request,
    no sign-in) and then sends whatever a test asks, in any phase. It takes every answer
    without objecting, so that only the gateway can end the connection. It works on
    asyncssh 2.24.1's internals (pinned): its packet handler table and phase flags."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, options: asyncssh.SSHClientConnectionOptions
    ) -> None:
        super().__init__(loop, options, wait="kex")
        self.answers: list[int] = []
        self.refusal: tuple[int, str] | None = None
        taken = (
            MSG_SERVICE_ACCEPT,
            MSG_USERAUTH_FAILURE,
            MSG_USERAUTH_SUCCESS,
            MSG_USERAUTH_BANNER,
        )
        self._packet_handlers = {
            **SSHClientConnection._packet_handlers,
            **dict.fromkeys(taken, HostileConnection._take),
            MSG_DISCONNECT: HostileConnection._disconnected,
        }

    def send_any(self, payload: bytes) -> None:
        """Send ``payload`` (message number first) now, whatever the phase."""
        # asyncssh holds back messages of later phases until their phase; lift that.
        phase = self._kex_complete, self._auth_complete
        self._kex_complete = self._auth_complete = True
        try:
            self.send_packet(payload[0], payload[1:])
        finally:
            self._kex_complete, self._auth_complete = phase

    def _take(self, pkttype: int, pktid: int, packet: SSHPacket) -> None:
        self.answers.append(pkttype)

    def _disconnected(self, pkttype: int, pktid: int, packet: SSHPacket) -> None:
        code = packet.get_uint32()
        self.refusal = (code, packet.get_string().decode("utf-8", "replace"))
        self.abort()


async def keyed_connection(
    port: int, host_key: asyncssh.SSHKey, host: str = "127.0.0.1"
) -> HostileConnection:
    """A connection to the SSH server at ``host:port`` (whose key is ``host_key``) with the
    key exchange done and nothing else: no service request, no sign-in."""
    loop = asyncio.get_running_loop()
    options = await asyncssh.SSHClientConnectionOptions.construct(
        host=host,
        port=port,
        username="T-1",
        known_hosts=([host_key.convert_to_public()], [], []),
        config=None,
        agent_path=None,
    )
    # What asyncssh.connect does, with our connection class and its stop after the kex.
    options.waiter = loop.create_future()
    _, conn = await loop.create_connection(lambda: HostileConnection(loop, options), host, port)
    await options.waiter
    return conn
