"""The SSH gateway: an asyncssh server on ``config.ssh_port`` for staff's own OpenSSH.

- The SSH user name names the target (``T-1042`` or ``T-1042+web01``); a name that does
  not parse is answered with an authentication banner that says why, and no key is
  accepted on that connection.
- Staff authenticate with a registered public key (``ssh_keys``); revoked keys and
  disabled accounts are refused exactly like keys nobody registered.
- Failed sign-ins are throttled per source address and per key, and audited. Connections
  that have not signed in are limited in number (overall and per source) and in time.
- Port, agent and X11 forwarding, subsystems and env requests are refused; nothing the
  gateway accepts runs on the broker host itself.
- Out-of-phase messages end the connection. asyncssh (2.24.1, pinned) does most of it: strict
  key exchange, no service, user-auth or connection message before NEWKEYS, no connection
  message before sign-in. The gateway adds what it leaves open: a client's cleartext start
  (version line, packet framing, message numbers before its NEWKEYS) is checked by
  :class:`ClientCleartext` before asyncssh reads it, and a USERAUTH_REQUEST without the
  ``ssh-userauth`` service request is refused. Both end the connection with DISCONNECT
  (protocol error), like asyncssh's own refusals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable
from typing import Final, cast

import asyncssh
from asyncssh.constants import MSG_USERAUTH_REQUEST
from asyncssh.listener import TCPListenerFactory
from asyncssh.packet import SSHPacket

from broker.auth.throttle import Throttle
from broker.rules import InvalidName, SshTarget, parse_ssh_target
from broker.sessions.access import StaffKey, key_owner
from broker.sessions.errors import AUDIT_STORE_UNAVAILABLE
from broker.sessions.gateway_session import GatewayChannel, GatewaySession
from broker.sessions.manager import DB_ERRORS, SessionManager

log = logging.getLogger(__name__)

FAILURES_ALLOWED: Final = 10
FAILURE_WINDOW: Final = 900.0
# AES-GCM first and no ChaCha20: the client's order wins, and asyncssh's ChaCha20-Poly1305
# builds a cipher per packet, which halves throughput on a shared broker; AES-GCM uses the
# CPU's AES instructions. CTR modes (with EtM MACs) remain for old clients.
ENCRYPTION_ALGS: Final = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
)
CHANNEL_WINDOW: Final = 2 << 20
CHANNEL_PACKET: Final = 32768


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


def _printable(text: str, limit: int = 80) -> str:
    return ascii(text[:limit])[1:-1]


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
        self._buf = bytearray()  # a partial version line or packet header, never a body
        self._version_seen = False
        self._skip = 0  # bytes of the current packet still to come
        self._kexinit = False
        self._newkeys = False
        self.done = False

    def feed(self, data: bytes) -> str | None:
        if self.done:
            return None
        self._buf += data
        if not self._version_seen:
            end = self._buf.find(b"\n", 0, MAX_VERSION_LINE)
            if end < 0:
                return "version line too long" if len(self._buf) >= MAX_VERSION_LINE else None
            line = bytes(self._buf[:end]).removesuffix(b"\r")
            del self._buf[: end + 1]
            if not _valid_version(line):
                return "invalid version line"
            self._version_seen = True
        while self._buf:
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
            self._kexinit = self._kexinit or msg == MSG_KEXINIT
            del self._buf[:6]
            self._skip = length - 2
            self._newkeys = msg == MSG_NEWKEYS
        if self._newkeys and not self._skip:
            self.done = True
            self._buf.clear()
        return None


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


class _CheckedStream(asyncio.Protocol):
    """Sits between a client's TCP transport and its asyncssh connection: the cleartext
    start of the stream passes :class:`ClientCleartext` before asyncssh reads it; after the
    client's NEWKEYS the bytes pass straight through."""

    def __init__(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self._check: ClientCleartext | None = ClientCleartext()
        self._refused = False
        self._source = ""
        # Per connection, so asyncssh's own class stays as it is.
        conn._packet_handlers = _PACKET_HANDLERS

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self._source = str(peer[0]) if peer else ""
        self._conn.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        check = self._check
        if check is not None:
            problem = check.feed(data)
            if problem is not None:
                self._refused = True
                log.info("SSH client %s broke the protocol: %s", self._source, problem)
                self._conn.disconnect(asyncssh.DISC_PROTOCOL_ERROR, problem)
                return
            if check.done:
                self._check = None
        self._conn.data_received(data)

    def eof_received(self) -> bool | None:
        self._conn.eof_received()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._conn.connection_lost(exc)

    def pause_writing(self) -> None:
        self._conn.pause_writing()

    def resume_writing(self) -> None:
        self._conn.resume_writing()


class _CheckedListener:
    """The gateway's TCP listener, handed to asyncssh through its listener hook for
    tunnels: asyncssh makes each connection, this puts :class:`_CheckedStream` in front."""

    async def create_server(
        self, session_factory: TCPListenerFactory[bytes], listen_host: str, listen_port: int
    ) -> asyncssh.SSHListener:
        def stream() -> asyncio.Protocol:
            conn = session_factory("", 0)
            assert isinstance(conn, asyncssh.SSHServerConnection)
            return _CheckedStream(conn)

        server = await asyncio.get_running_loop().create_server(
            stream, listen_host, listen_port, reuse_address=True
        )
        # asyncssh wraps it in its SSHAcceptor, which only closes it and reads its sockets.
        return cast(asyncssh.SSHListener, server)

    def close(self) -> None:
        """Nothing to close: the server is closed through asyncssh's acceptor."""

    async def wait_closed(self) -> None:
        """Nothing to wait for (see close)."""


class Gateway:
    """The listening SSH server and what its connections share."""

    def __init__(self, manager: SessionManager) -> None:
        self.manager = manager
        self.services = manager.services
        self.throttle = Throttle(limit=FAILURES_ALLOWED, window=FAILURE_WINDOW)
        config = self.services.config
        self.login_timeout = float(config.ssh_login_timeout_seconds)
        self.max_preauth = config.ssh_max_preauth
        self.max_preauth_per_source = config.ssh_max_preauth_per_source
        self.max_channels = config.ssh_max_channels
        self._preauth: Counter[str] = Counter()
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self._servers: set[GatewayServer] = set()
        self._audits: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the bound port."""
        self._acceptor = await asyncssh.listen(
            host,
            port,
            tunnel=_CheckedListener(),
            server_factory=lambda: GatewayServer(self),
            server_host_keys=[self.services.keys.ssh_host_key],
            config=None,
            login_timeout=self.login_timeout,
            encryption_algs=list(ENCRYPTION_ALGS),
            keepalive_interval=30,
            keepalive_count_max=3,
            agent_forwarding=False,
            x11_forwarding=False,
            allow_scp=False,
            allow_pty=True,
            line_editor=False,
            encoding=None,
            gss_host=None,
            rdns_lookup=False,
        )
        self.port = self._acceptor.get_port()
        log.info("SSH gateway listening on %s:%d", host, self.port)
        return self.port

    async def stop(self) -> None:
        """Stop listening and close every connection (sessions end before: see drain)."""
        if self._acceptor is not None:
            self._acceptor.close()
            await self._acceptor.wait_closed()
            self._acceptor = None
        for server in list(self._servers):
            server.close()
        for task in list(self._audits):
            with contextlib.suppress(Exception):
                await task

    # -- limits ----------------------------------------------------------------------------

    def signing_in(self, source: str | None = None) -> int:
        """How many connections have not signed in yet, in all or from ``source``."""
        return sum(self._preauth.values()) if source is None else self._preauth[source]

    def admit(self, server: GatewayServer) -> bool:
        """A new connection; False when too many are still signing in."""
        source = server.source
        if (
            self.signing_in() >= self.max_preauth
            or self.signing_in(source) >= self.max_preauth_per_source
        ):
            return False
        self._preauth[source] += 1
        self._servers.add(server)
        return True

    def signed_in(self, server: GatewayServer) -> None:
        self._release(server.source)

    def gone(self, server: GatewayServer, *, was_preauth: bool) -> None:
        self._servers.discard(server)
        if was_preauth:
            self._release(server.source)

    def _release(self, source: str) -> None:
        self._preauth[source] -= 1
        if self._preauth[source] <= 0:
            del self._preauth[source]

    def retry_after(self, key: str) -> float:
        return self.throttle.retry_after(key, time.monotonic())

    def failed(self, key: str) -> None:
        self.throttle.failed(key, time.monotonic())

    def audit_soon(
        self, actor: str, action: str, target: str, source: str, details: dict[str, object]
    ) -> None:
        """Audit from a synchronous asyncssh callback."""

        async def write() -> None:
            try:
                await self.manager.audit(
                    actor, action, target, outcome="denied", source=source, details=details
                )
            except DB_ERRORS:
                log.error("audit store unavailable: %s was not audited", action)

        task = asyncio.get_running_loop().create_task(write())
        self._audits.add(task)
        task.add_done_callback(self._audits.discard)


class GatewayServer(asyncssh.SSHServer):
    """One client connection: its target, its staff member, its channels."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.source = ""
        self.target: SshTarget | None = None
        self.staff: StaffKey | None = None
        self._conn: asyncssh.SSHServerConnection | None = None
        self._username = ""
        self._admitted = False
        self._signed_in = False
        self._blocked = False
        self._refusals: list[str] = []
        self._checked: dict[str, StaffKey | None] = {}
        self._channels = 0

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        peer = conn.get_extra_info("peername")
        self.source = str(peer[0]) if peer else ""
        self._admitted = self.gateway.admit(self)
        if not self._admitted:
            log.warning("too many SSH connections signing in; refused one from %s", self.source)
            asyncio.get_running_loop().call_soon(conn.close)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._admitted:
            self.gateway.gone(self, was_preauth=not self._signed_in)
        if not self._signed_in and self._refusals:
            self.gateway.failed(f"source:{self.source}")
            self.gateway.audit_soon(
                "anonymous",
                "ssh.auth_failed",
                _printable(self._username, 60),
                self.source,
                {"refusals": self._refusals[:8]},
            )

    def _banner(self, message: str) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError, asyncssh.Error):
                self._conn.send_auth_banner(f"secondline: {message}\r\n")

    # -- authentication --------------------------------------------------------------------

    def begin_auth(self, username: str) -> bool:
        self._username = username
        try:
            self.target = parse_ssh_target(username)
        except InvalidName as exc:
            self._refusals.append("invalid_target")
            self._banner(exc.message)
        wait = self.gateway.retry_after(f"source:{self.source}")
        if wait > 0:
            self._blocked = True
            self._refusals.append("throttled_source")
            minutes = max(1, round(wait / 60))
            self._banner(
                f"too many failed sign-ins from your address; try again in {minutes} minutes"
            )
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def host_based_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        if not username and not self._refusals:
            # asyncssh does not call begin_auth for an empty user name.
            self.begin_auth(username)
        if self._blocked or self.target is None:
            return False
        fingerprint = key.get_fingerprint("sha256")
        if fingerprint in self._checked:
            owner = self._checked[fingerprint]
        else:
            if self.gateway.retry_after(f"key:{fingerprint}") > 0:
                self._refusals.append("throttled_key")
                return False
            try:
                async with self.gateway.services.db() as db:
                    owner = await key_owner(db, fingerprint, key.public_data)
            except DB_ERRORS:
                self._refusals.append("store_unavailable")
                self._banner(AUDIT_STORE_UNAVAILABLE)
                return False
            if owner is not None and owner.disabled:
                owner = None
                self._refusals.append(f"disabled_account:{fingerprint}")
                self.gateway.failed(f"key:{fingerprint}")
            elif owner is None:
                self._refusals.append(f"unknown_key:{fingerprint}")
            self._checked[fingerprint] = owner
        if owner is None:
            return False
        self.staff = owner
        return True

    def auth_completed(self) -> None:
        self._signed_in = True
        self.gateway.signed_in(self)
        if self._conn is not None:
            self._conn.set_extra_info(staff=self.staff.name if self.staff else "")

    # -- channels --------------------------------------------------------------------------

    def session_requested(self) -> tuple[asyncssh.SSHServerChannel[bytes], GatewaySession]:
        limit = self.gateway.max_channels
        if self._channels >= limit:
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
                f"at most {limit} sessions per connection",
            )
        assert self._conn is not None
        self._channels += 1
        chan = GatewayChannel(
            self._conn,
            asyncio.get_running_loop(),
            True,  # allow_pty
            False,  # line_editor
            False,  # line_echo
            0,  # line_history
            1024,  # max_line_length
            None,  # encoding: bytes
            "strict",
            CHANNEL_WINDOW,
            CHANNEL_PACKET,
        )
        return chan, GatewaySession(self)

    def channel_closed(self) -> None:
        self._channels = max(0, self._channels - 1)

    def refused_request(self, what: str, detail: str) -> None:
        self.gateway.audit_soon(
            self.staff.name if self.staff else "anonymous",
            "ssh.refused",
            _printable(self._username, 60),
            self.source,
            {"request": what, "detail": _printable(detail, 60)},
        )

    def _forwarding(self, what: str) -> asyncssh.ChannelOpenError:
        self.refused_request(what, "forwarding is refused")
        return asyncssh.ChannelOpenError(
            asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
            f"{what} is refused by the Secondline gateway",
        )

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> bool:
        raise self._forwarding("port forwarding")

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        self.refused_request("remote port forwarding", "refused")
        return False

    def unix_connection_requested(self, dest_path: str) -> bool:
        raise self._forwarding("UNIX socket forwarding")

    def unix_server_requested(self, listen_path: str) -> bool:
        self.refused_request("remote UNIX socket forwarding", "refused")
        return False

    def tun_requested(self, unit: int | None) -> bool:
        raise self._forwarding("tunnel device forwarding")

    def tap_requested(self, unit: int | None) -> bool:
        raise self._forwarding("tunnel device forwarding")
