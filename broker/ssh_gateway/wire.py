"""What an SSH client sends before encryption starts, checked before asyncssh reads it.

asyncssh (2.24.1, pinned) enforces strict key exchange and refuses service, user-auth and
connection messages before NEWKEYS; :class:`ClientCleartext` refuses what it leaves open
(malformed version lines and framing, unknown messages and a second KEXINIT from clients
without strict kex), :class:`CheckedStream` puts that check in front of each connection,
and a USERAUTH_REQUEST without the ``ssh-userauth`` service request is refused. Each
refusal ends the connection with DISCONNECT (protocol error), like asyncssh's own.

asyncssh also accepts clients that do not ask for strict key exchange, which leaves them
open to Terrapin (CVE-2023-48795): :class:`ClientCleartext` reads the client's KEXINIT, and
:class:`CheckedStream` refuses such a client (DISCONNECT, key exchange failed, saying why)
before asyncssh has read that KEXINIT, unless the gateway's legacy policy lets it in.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Final, cast

import asyncssh
from asyncssh.constants import MSG_USERAUTH_REQUEST
from asyncssh.listener import TCPListenerFactory
from asyncssh.packet import SSHPacket

from broker.write_coalescing import CoalescedTransport

log = logging.getLogger(__name__)

# RFC 4253 §4.2: the version line is at most 255 bytes with its CR LF.
MAX_VERSION_LINE: Final = 255
# RFC 4253 §6.1: the packet size every implementation must take; nothing a client sends
# before its NEWKEYS comes near it (a post-quantum key share is under 2 KiB).
MAX_CLEARTEXT_PACKET: Final = 35000
# What a client may send before its NEWKEYS (RFC 4253 §7, §11): DISCONNECT, IGNORE,
# UNIMPLEMENTED, DEBUG, KEXINIT, NEWKEYS and the key exchange method's own messages.
CLEARTEXT_MESSAGES: Final = frozenset({1, 2, 3, 4, 20, 21, *range(30, 50)})
MSG_KEXINIT: Final = 20
MSG_NEWKEYS: Final = 21
# OpenSSH's marker for strict key exchange, the Terrapin (CVE-2023-48795) counter-measure.
STRICT_KEX_CLIENT: Final = b"kex-strict-c-v00@openssh.com"


class ClientCleartext:
    """Checks what an SSH client sends before encryption starts: its version line, then
    unencrypted packets (RFC 4253 §6) up to and including its NEWKEYS, after which the
    stream is encrypted and ``done`` is set.

    asyncssh 2.24.1 takes a packet_length of 0 and then waits, reading the next packet's
    bytes as the rest of that one; takes packets that are no multiple of 8 or carry fewer
    than 4 bytes of padding; takes control characters in the version line; and, when the
    client did not ask for strict key exchange, answers an unknown message number before
    NEWKEYS with UNIMPLEMENTED and starts a second key exchange on a KEXINIT that comes
    before the client's NEWKEYS. This refuses all of those, as OpenSSH's sshd does.
    Sans-I/O: ``feed`` returns the reason to end the connection, or None.
    """

    def __init__(self) -> None:
        # A partial version line, packet header or KEXINIT; no other packet's body.
        self._buf = bytearray()
        self._version_seen = False
        self._skip = 0  # bytes of the current packet still to come
        self._kexinit = False
        self._kexinit_rest: tuple[int, int] | None = None  # (payload, padding) still to come
        self._newkeys = False
        self.done = False
        self.version = ""  # the client's version line, once read
        self._fed = 0  # bytes fed so far
        self.kexinit_at = -1  # where in the stream the client's KEXINIT starts, once seen
        # Whether the client's KEXINIT asked for strict key exchange; None before it.
        self.strict: bool | None = None

    def feed(self, data: bytes) -> str | None:
        if self.done:
            return None
        self._fed += len(data)
        self._buf += data
        if not self._version_seen:
            end = self._buf.find(b"\n", 0, MAX_VERSION_LINE)
            if end < 0:
                return "version line too long" if len(self._buf) >= MAX_VERSION_LINE else None
            line = bytes(self._buf[:end]).removesuffix(b"\r")
            del self._buf[: end + 1]
            if not _valid_version(line):
                return "invalid version line"
            self.version = line.decode("ascii")
            self._version_seen = True
        while self._buf:
            if self._kexinit_rest is not None:
                payload, padding = self._kexinit_rest
                if len(self._buf) < payload + padding:
                    return None
                self.strict = _asks_strict_kex(bytes(self._buf[:payload]))
                del self._buf[: payload + padding]
                self._kexinit_rest = None
                continue
            if self._skip:
                step = min(self._skip, len(self._buf))
                del self._buf[:step]
                self._skip -= step
                continue
            if self._newkeys:
                break
            if len(self._buf) < 6:
                return None
            length = int.from_bytes(self._buf[:4], "big")
            padding, msg = self._buf[4], self._buf[5]
            if not 12 <= length <= MAX_CLEARTEXT_PACKET or (4 + length) % 8:
                return "bad packet length"
            if not 4 <= padding <= length - 2:
                return "bad padding length"
            if msg not in CLEARTEXT_MESSAGES:
                return f"message {msg} before the key exchange ended"
            if msg == MSG_KEXINIT and self._kexinit:
                return "second KEXINIT before the key exchange ended"
            if msg == MSG_KEXINIT:
                self.kexinit_at = self._fed - len(self._buf)
            del self._buf[:6]
            if msg == MSG_KEXINIT:
                # Kept whole (it is at most MAX_CLEARTEXT_PACKET) to read its kex list.
                self._kexinit = True
                self._kexinit_rest = (length - padding - 2, padding)
                continue
            self._skip = length - 2
            self._newkeys = msg == MSG_NEWKEYS
        if self._newkeys and not self._skip:
            self.done = True
            self._buf.clear()
        return None


def _asks_strict_kex(kexinit: bytes) -> bool:
    """Whether a KEXINIT payload (after its message number: a 16-byte cookie, then the
    kex_algorithms name-list, RFC 4253 §7.1) names ``kex-strict-c-v00@openssh.com``. A list
    that runs past the payload names nothing: asyncssh refuses that KEXINIT itself."""
    if len(kexinit) < 20:
        return False
    length = int.from_bytes(kexinit[16:20], "big")
    names = kexinit[20 : 20 + length]
    return len(names) == length and STRICT_KEX_CLIENT in names.split(b",")


def _valid_version(line: bytes) -> bool:
    """``SSH-2.0-softwareversion [comments]`` in printable US-ASCII (1.99: an old client
    that also speaks 2.0). A ``-`` in the software version is let through: older JSch
    clients send one."""
    for prefix in (b"SSH-2.0-", b"SSH-1.99-"):
        if line.startswith(prefix):
            rest = line[len(prefix) :]
            return bool(rest) and not rest.startswith(b" ") and all(0x20 <= c < 0x7F for c in rest)
    return False


_ASYNCSSH_USERAUTH_REQUEST: Final = asyncssh.SSHServerConnection._packet_handlers[
    MSG_USERAUTH_REQUEST
]


def _userauth_request(
    conn: asyncssh.SSHServerConnection, pkttype: int, pktid: int, packet: SSHPacket
) -> Awaitable[None] | None:
    # RFC 4253 §10: authentication starts with the client's ssh-userauth service request;
    # asyncssh 2.24.1 takes a USERAUTH_REQUEST without one (and calls begin_auth).
    if not (conn._auth_in_progress or conn._auth_complete):
        raise asyncssh.ProtocolError("user authentication before its service request")
    return _ASYNCSSH_USERAUTH_REQUEST(conn, pkttype, pktid, packet)


_PACKET_HANDLERS: Final = {
    **asyncssh.SSHServerConnection._packet_handlers,
    MSG_USERAUTH_REQUEST: _userauth_request,
}


#: A client without strict key exchange, given (source address, version line): True lets
#: it in (the legacy setting, audited), False refuses it.
LegacyKexPolicy = Callable[[str, str], bool]

NOT_STRICT: Final = (
    "strict key exchange (kex-strict-c-v00@openssh.com) is required against the Terrapin "
    "attack (CVE-2023-48795); update the SSH client (OpenSSH 9.6 or later, PuTTY 0.80 or later)"
)


class CheckedStream(asyncio.Protocol):
    """Sits between a client's TCP transport and its asyncssh connection: the cleartext
    start of the stream passes :class:`ClientCleartext` before asyncssh reads it; after the
    client's NEWKEYS the bytes pass straight through. A KEXINIT without strict key exchange
    is held back until ``legacy`` lets it through; refused, asyncssh never reads it, so no
    key exchange reply is ever sent."""

    def __init__(self, conn: asyncssh.SSHServerConnection, legacy: LegacyKexPolicy) -> None:
        self._conn = conn
        self._passed = 0  # bytes handed to asyncssh
        self._check: ClientCleartext | None = ClientCleartext()
        self._legacy = legacy
        self._kex_asked = False
        self._refused = False
        self._source = ""
        # Per connection, so asyncssh's own class stays as it is.
        conn._packet_handlers = _PACKET_HANDLERS

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self._source = str(peer[0]) if peer else ""
        # asyncssh writes every SSH packet on its own (two per packet of output, with its
        # IGNORE): one iteration's packets leave in one send (broker.write_coalescing).
        self._conn.connection_made(CoalescedTransport(cast(asyncio.Transport, transport)))

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        check = self._check
        if check is not None:
            problem = check.feed(data)
            if problem is not None:
                self._refuse(asyncssh.DISC_PROTOCOL_ERROR, problem)
                return
            if check.strict is False and not self._kex_asked:
                self._kex_asked = True
                if not self._legacy(self._source, check.version):
                    # What came before the KEXINIT passed the check: asyncssh takes it, so
                    # the client gets the server's KEXINIT (strict-kex marker included)
                    # before the refusal, and auditors can still read what is offered.
                    before = check.kexinit_at - self._passed
                    if before > 0:
                        self._conn.data_received(data[:before])
                    self._refuse(asyncssh.DISC_KEY_EXCHANGE_FAILED, NOT_STRICT)
                    return
            if check.done:
                self._check = None
        self._passed += len(data)
        self._conn.data_received(data)

    def _refuse(self, code: int, reason: str) -> None:
        self._refused = True
        log.info("SSH client %s refused: %s", self._source, reason)
        self._conn.disconnect(code, reason)

    def eof_received(self) -> bool | None:
        self._conn.eof_received()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._conn.connection_lost(exc)

    def pause_writing(self) -> None:
        self._conn.pause_writing()

    def resume_writing(self) -> None:
        self._conn.resume_writing()


class CheckedListener:
    """The gateway's TCP listener, handed to asyncssh through its listener hook for
    tunnels: asyncssh makes each connection, this puts :class:`CheckedStream` in front."""

    def __init__(self, legacy: LegacyKexPolicy) -> None:
        self._legacy = legacy

    async def create_server(
        self, session_factory: TCPListenerFactory[bytes], listen_host: str, listen_port: int
    ) -> asyncssh.SSHListener:
        def stream() -> asyncio.Protocol:
            conn = session_factory("", 0)
            assert isinstance(conn, asyncssh.SSHServerConnection)
            return CheckedStream(conn, self._legacy)

        server = await asyncio.get_running_loop().create_server(
            stream, listen_host, listen_port, reuse_address=True
        )
        # asyncssh wraps it in its SSHAcceptor, which only closes it and reads its sockets.
        return cast(asyncssh.SSHListener, server)

    def close(self) -> None:
        """Nothing to close: the server is closed through asyncssh's acceptor."""

    async def wait_closed(self) -> None:
        """Nothing to wait for (see close)."""
