"""The SSH gateway: an asyncssh server on ``config.ssh_port`` for staff's own OpenSSH.

- The SSH user name names the target (``T-1042`` or ``T-1042+web01``), or a ticket mirrored
  from a connector by its number there (``RT-1234``, ``RT-1234+web01``); a name that does
  not parse or names no ticket is answered with an authentication banner that says why,
  and no key is accepted on that connection.
- Staff authenticate with a registered public key (``ssh_keys``); revoked keys and
  disabled accounts are refused exactly like keys nobody registered. Then, unless the
  policy is ``off`` or a shift window is open for the key, with their authenticator code
  over keyboard-interactive (``broker/ssh_gateway/second_factor.py``).
- Failed sign-ins are throttled per source address and per key, and audited. Connections
  that have not signed in are limited in number (overall and per source) and in time.
- Port, agent and X11 forwarding, subsystems and env requests are refused; nothing the
  gateway accepts runs on the broker host itself.
- Out-of-phase messages end the connection: asyncssh (2.24.1, pinned) enforces strict key
  exchange and message order; ``broker/ssh_gateway/wire.py`` checks what asyncssh
  leaves open in a client's cleartext start and user-auth request.
- Clients without strict key exchange (Terrapin) are refused before any key exchange
  reply, unless ``ssh_allow_legacy_kex`` lets them in (each one audited). Only a modern
  algorithm set is offered (see docs/security.md).

This module is the listener and what all connections share (limits, throttles, audit
writes); one connection's sign-in and channels are ``broker.ssh_gateway.connection``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Coroutine
from typing import Final

import asyncssh
from asyncssh.kex import get_kex_algs

from broker.auth.throttle import Throttle
from broker.log_context import context_logger
from broker.sessions.errors import DB_ERRORS
from broker.sessions.manager import SessionManager
from broker.ssh_gateway.connection import GatewayServer, printable
from broker.ssh_gateway.wire import CheckedListener
from broker.supervision import Supervisor

log = logging.getLogger(__name__)

FAILURES_ALLOWED: Final = 10
#: At shutdown, how long clients whose sessions the drain ended get to write out what they
#: were last told and leave by themselves, before their connections are closed.
LEAVE_GRACE_S: Final = 2.0
FAILURE_WINDOW: Final = 900.0
# AES-GCM only, and no ChaCha20: the client's order wins, and asyncssh's ChaCha20-Poly1305
# builds a cipher per packet, which halves throughput on a shared broker; AES-GCM is one
# OpenSSL call per packet on the CPU's AES instructions. Every client the gateway lets in
# by default asks for strict key exchange (OpenSSH 9.6, PuTTY 0.80 and later), and all of
# them have AES-GCM; offering CTR too would only make OpenSSH, which lists CTR before GCM,
# pick CTR with a separate MAC (three calls through asyncssh per packet, about 1 s of
# broker CPU per relayed GB). CTR is offered only when ssh_allow_legacy_kex lets older
# clients in (PuTTY before 0.76 has no GCM).
ENCRYPTION_ALGS: Final = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
)
LEGACY_ENCRYPTION_ALGS: Final = (*ENCRYPTION_ALGS, "aes128-ctr", "aes256-ctr")
# Key exchange: post-quantum hybrids first, then X25519, then two large fixed DH groups for
# clients without X25519. No NIST curves, no group exchange (asyncssh offers 1024-bit
# moduli), no 2048-bit group14, no SHA-1 (ssh-audit fails or warns on each). The sntrup761
# hybrid is what OpenSSH 9.0 to 9.8 (Debian 12's 9.2) prefers; asyncssh has it only where
# it finds liboqs, so it is offered where the library has it. docs/security.md lists this.
POST_QUANTUM_KEX: Final = (
    "mlkem768x25519-sha256",
    "sntrup761x25519-sha512",
    "sntrup761x25519-sha512@openssh.com",
)
KEX_ALGS: Final = (
    *(alg for alg in POST_QUANTUM_KEX if alg.encode() in get_kex_algs()),
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "diffie-hellman-group16-sha512",
    "diffie-hellman-group18-sha512",
)
# MACs (only used with the legacy CTR ciphers; AES-GCM carries its own): encrypt-then-MAC with
# tags of 128 bits or more. Encrypt-and-MAC and umac-64 are left out (ssh-audit warns).
MAC_ALGS: Final = (
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512-etm@openssh.com",
    "umac-128-etm@openssh.com",
)
# No compression: a terminal session gains little, and zlib before sign-in is attack surface.
COMPRESSION_ALGS: Final = ("none",)


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
        self.allow_legacy_kex = config.ssh_allow_legacy_kex
        self._preauth: Counter[str] = Counter()
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self._servers: set[GatewayServer] = set()
        #: Audit writes from asyncssh's synchronous callbacks, and each channel's start.
        self.tasks = Supervisor("SSH gateway")
        self.port = 0

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the bound port."""
        await self.tasks.open()
        try:
            self._acceptor = await self._listen(host, port)
        except BaseException:
            # A port already in use fails the broker's start: what was opened is closed,
            # so nothing is left running behind the error.
            await self.tasks.stop()
            raise
        self.port = self._acceptor.get_port()
        log.info("SSH gateway listening on %s:%d", host, self.port)
        return self.port

    async def _listen(self, host: str, port: int) -> asyncssh.SSHAcceptor:
        return await asyncssh.listen(
            host,
            port,
            tunnel=CheckedListener(self.legacy_kex),
            server_factory=lambda: GatewayServer(self),
            server_host_keys=[self.services.keys.ssh_host_key],
            config=None,
            login_timeout=self.login_timeout,
            encryption_algs=list(
                LEGACY_ENCRYPTION_ALGS if self.allow_legacy_kex else ENCRYPTION_ALGS
            ),
            kex_algs=list(KEX_ALGS),
            mac_algs=list(MAC_ALGS),
            compression_algs=list(COMPRESSION_ALGS),
            keepalive_interval=30,
            keepalive_count_max=3,
            agent_forwarding=False,
            x11_forwarding=False,
            allow_scp=False,
            kbdint_auth=True,  # offered only after a verified key (GatewayServer)
            allow_pty=True,
            line_editor=False,
            encoding=None,
            gss_host=None,
            rdns_lookup=False,
        )

    async def stop(self) -> None:
        """Stop listening and close every connection (sessions end before: see drain)."""
        if self._acceptor is not None:
            self._acceptor.close()
            await self._acceptor.wait_closed()
            self._acceptor = None
        await self._let_clients_leave(LEAVE_GRACE_S)
        for server in list(self._servers):
            server.close()
        await self.tasks.stop()

    async def _let_clients_leave(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for the connections that have sessions to close.

        The drain ended every session with a sentence on the channel and its exit. OpenSSH's
        client exits at a DISCONNECT at once, without writing out the channel output it
        still holds: closed right after the drain, a client that had not been scheduled in
        between lost the sentence and said only "Disconnected by application". Given the
        moment, it writes the sentence, closes its channel and leaves by itself."""
        leaving = [server.closed() for server in self._servers if server.has_channels]
        if leaving:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await asyncio.gather(*leaving)

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

    def legacy_kex(self, source: str, version: str) -> bool:
        """A client without strict key exchange: let in only with ssh_allow_legacy_kex,
        and then audited each time; refused, audited as a refusal."""
        client = printable(version, 100)
        if self.allow_legacy_kex:
            log.warning("SSH client without strict key exchange let in from %s", source)
            self.audit_soon(
                "anonymous",
                "ssh.legacy_kex",
                "",
                source,
                {"client": client, "setting": "ssh_allow_legacy_kex"},
                outcome="ok",
            )
            return True
        # Before any sign-in: counted into the source's summary (broker.audit.anonymous).
        self._track(
            self.services.anonymous.refused(
                source=source, action="ssh.refused", target="", reason="no strict key exchange"
            ),
            source=source,
        )
        return False

    def audit_soon(
        self,
        actor: str,
        action: str,
        target: str,
        source: str,
        details: dict[str, object],
        *,
        outcome: str = "denied",
    ) -> None:
        """Audit from a synchronous asyncssh callback."""

        async def write() -> None:
            await self.manager.audit(
                actor, action, target, outcome=outcome, source=source, details=details
            )

        self._track(write(), action, source=source)

    def _track(
        self,
        write: Coroutine[object, object, None],
        action: str = "ssh.refused",
        *,
        source: str,
    ) -> None:
        """Run an audit write from a synchronous asyncssh callback, to its end."""
        where = context_logger(__name__, peer=source)
        if self.tasks.stopped:
            # A connection closed by the gateway's stop: no task group left to write in.
            write.close()
            where.warning("%s not audited: the SSH gateway has stopped", action)
            return

        async def guarded() -> None:
            try:
                await write
            except DB_ERRORS:
                # One line, no traceback: the database being away is logged elsewhere too.
                where.error("audit store unavailable: %s was not audited", action)

        self.tasks.spawn(f"auditing {action}", guarded(), logger=where)
