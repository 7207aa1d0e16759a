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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from typing import Final

import asyncssh
from asyncssh.auth import KbdIntChallenge, KbdIntResponse
from asyncssh.kex import get_kex_algs

from broker.auth.throttle import Throttle
from broker.connectors.mirror import ticket_of_external
from broker.connectors.refs import ExternalTarget, parse_external_target
from broker.rules import InvalidName, SshTarget, parse_ssh_target
from broker.sessions.access import StaffKey, key_owner
from broker.sessions.errors import AUDIT_STORE_UNAVAILABLE
from broker.sessions.manager import DB_ERRORS, SessionManager
from broker.ssh_gateway.second_factor import (
    ASK_BANNER,
    INSTRUCTION,
    MAX_CODE_PROMPTS,
    NOT_ENROLLED,
    PROMPT,
    THROTTLED,
    CodeResult,
    KeyPolicy,
    check_code,
    key_policy,
)
from broker.ssh_gateway.session import GatewayChannel, GatewaySession
from broker.ssh_gateway.wire import CheckedListener

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
# MACs (only used with the CTR ciphers; AES-GCM carries its own): encrypt-then-MAC with
# tags of 128 bits or more. Encrypt-and-MAC and umac-64 are left out (ssh-audit warns).
MAC_ALGS: Final = (
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512-etm@openssh.com",
    "umac-128-etm@openssh.com",
)
# No compression: a terminal session gains little, and zlib before sign-in is attack surface.
COMPRESSION_ALGS: Final = ("none",)
CHANNEL_WINDOW: Final = 2 << 20
CHANNEL_PACKET: Final = 32768


def _printable(text: str, limit: int = 80) -> str:
    return ascii(text[:limit])[1:-1]


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
        self._audits: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the bound port."""
        self._acceptor = await asyncssh.listen(
            host,
            port,
            tunnel=CheckedListener(self.legacy_kex),
            server_factory=lambda: GatewayServer(self),
            server_host_keys=[self.services.keys.ssh_host_key],
            config=None,
            login_timeout=self.login_timeout,
            encryption_algs=list(ENCRYPTION_ALGS),
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

    def legacy_kex(self, source: str, version: str) -> bool:
        """A client without strict key exchange: let in only with ssh_allow_legacy_kex,
        and then audited each time; refused, audited as a refusal."""
        client = _printable(version, 100)
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
            )
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

        self._track(write(), action)

    def _track(self, write: Coroutine[object, object, None], action: str = "ssh.refused") -> None:
        """Run an audit write from a synchronous asyncssh callback, keeping its task."""

        async def guarded() -> None:
            try:
                await write
            except DB_ERRORS:
                log.error("audit store unavailable: %s was not audited", action)

        task = asyncio.get_running_loop().create_task(guarded())
        self._audits.add(task)
        task.add_done_callback(self._audits.discard)


class GatewayServer(asyncssh.SSHServer):
    """One client connection: its target, its staff member, its channels."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.source = ""
        self.target: SshTarget | None = None
        self._external: ExternalTarget | None = None
        self.staff: StaffKey | None = None
        self._conn: asyncssh.SSHServerConnection | None = None
        self._finish_auth: Callable[[], Awaitable[None]] | None = None
        self._username = ""
        self._admitted = False
        self._signed_in = False
        self._blocked = False
        self._refusals: list[str] = []
        self._checked: dict[str, StaffKey | None] = {}
        self._policies: dict[str, KeyPolicy] = {}
        self._channels = 0
        # The second factor: a verified key that still owes its code, the code prompts
        # asked so far, whether one awaits its answer, and a good code.
        self._key_proven = False
        self._prompts = 0
        self._challenge_open = False
        self._code_ok = False

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        # asyncssh ends the sign-in on a verified key; this stands in front of that to ask
        # for the code first (see broker/ssh_gateway/second_factor.py).
        self._finish_auth = conn.send_userauth_success
        conn.send_userauth_success = self._auth_step_done  # type: ignore[method-assign]
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
        owed = not self._signed_in and self._key_proven and not self._code_ok
        if owed and not any(r.startswith("code_") for r in self._refusals):
            # Closed at the prompt, no terminal to answer it, or the login timeout.
            self._refusals.append("code_not_given")
        if not self._signed_in and self._refusals:
            # A refusal for the broker's own fault (its database was down) is no failed
            # sign-in: counted, ten of them would lock the address out after the recovery.
            if any(r != "store_unavailable" for r in self._refusals):
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
            problem = exc.message
            try:
                # Resolved to our ticket in validate_public_key, which may wait for the store.
                self._external = parse_external_target(username)
            except InvalidName as agent_error:
                problem = agent_error.message
            if self._external is None:
                self._refusals.append("invalid_target")
                self._banner(problem)
        wait = self.gateway.retry_after(f"source:{self.source}")
        if wait > 0:
            self._blocked = True
            self._refusals.append("throttled_source")
            minutes = max(1, round(wait / 60))
            self._banner(
                f"too many failed sign-ins from your address; try again in {minutes} minutes"
            )
        return True

    async def _resolve_external(self, external: ExternalTarget) -> None:
        """Our ticket for ``RT-1234``; a banner saying why when there is none."""
        self._external = None
        try:
            number = await ticket_of_external(
                self.gateway.services, external.prefix, external.external_id
            )
        except DB_ERRORS:
            self._refusals.append("store_unavailable")
            self._banner(AUDIT_STORE_UNAVAILABLE)
            return
        if number is None:
            self._refusals.append("unknown_external_ticket")
            self._banner(
                f"there is no ticket {external.ref} here: no connector has the prefix "
                f"{external.prefix!r} or it has not mirrored that ticket (yet); see "
                "`secondline connector list` and `secondline ticket list`"
            )
            return
        self.target = SshTarget(ticket=number, agent=external.agent)

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        # Only the second step: never instead of a key.
        # Listed even after the last prompt: an empty list of methods makes OpenSSH try them
        # all; a client asking past MAX_CODE_PROMPTS is cut off in get_kbdint_challenge.
        return self._key_proven and not self._code_ok

    def host_based_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return not self._key_proven

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        if not username and not self._refusals:
            # asyncssh does not call begin_auth for an empty user name.
            self.begin_auth(username)
        if self._blocked:
            return False
        if self.target is None and self._external is not None:
            await self._resolve_external(self._external)
        if self.target is None:
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
        if fingerprint not in self._policies:
            try:
                self._policies[fingerprint] = await key_policy(self.gateway.services, owner)
            except DB_ERRORS:
                self._refusals.append("store_unavailable")
                self._banner(AUDIT_STORE_UNAVAILABLE)
                return False
        policy = self._policies[fingerprint]
        if policy.code_due and not policy.enrolled:
            self._refusals.append(f"no_authenticator:{fingerprint}")
            self._banner(NOT_ENROLLED)
            return False
        self.staff = owner
        return True

    def _code_due(self) -> bool:
        if self.staff is None or self._code_ok:
            return False
        policy = self._policies.get(self.staff.fingerprint)
        return policy is None or policy.code_due

    async def _auth_step_done(self) -> None:
        """asyncssh's success, held back while the code is due: a partial success instead."""
        if self._code_due() and self._conn is not None:
            self._key_proven = True
            self._banner(ASK_BANNER)
            self._conn.send_userauth_failure(True)
            return
        if self._finish_auth is not None:
            await self._finish_auth()

    def get_kbdint_challenge(self, username: str, lang: str, submethods: str) -> KbdIntChallenge:
        if not self._key_proven or self._code_ok:
            return False
        self._prompts += 1
        if self._prompts > MAX_CODE_PROMPTS:
            self._refusals.append("code_prompts_exceeded")
            asyncio.get_running_loop().call_soon(self.close)
            return False
        self._challenge_open = True
        return "", INSTRUCTION, "", ((PROMPT, False),)

    async def validate_kbdint_response(
        self, username: str, responses: KbdIntResponse
    ) -> KbdIntChallenge:
        staff = self.staff
        if not self._challenge_open or staff is None:
            return False  # an answer nobody asked for, or a second answer to one prompt
        self._challenge_open = False
        code = responses[0] if len(responses) == 1 else ""
        policy = self._policies[staff.fingerprint].policy
        try:
            outcome = await check_code(self.gateway.services, staff, policy, self.source, code)
        except DB_ERRORS:
            self._refusals.append("store_unavailable")
            self._banner(AUDIT_STORE_UNAVAILABLE)
            return False
        target = _printable(self._username, 60)
        details: dict[str, object] = {"fingerprint": staff.fingerprint, "policy": policy}
        if outcome.result is CodeResult.THROTTLED:
            self._refusals.append("code_throttled")
            self.gateway.audit_soon(staff.name, "ssh.code_throttled", target, self.source, details)
            self._banner(THROTTLED)
            asyncio.get_running_loop().call_soon(self.close)
            return False
        if outcome.result is CodeResult.REFUSED:
            self._refusals.append("code_refused")
            self.gateway.audit_soon(staff.name, "ssh.code_refused", target, self.source, details)
            return False
        self._code_ok = True
        if outcome.window_until is not None:
            details["shift_window_until"] = outcome.window_until.isoformat()
        self.gateway.audit_soon(
            staff.name, "ssh.code_accepted", target, self.source, details, outcome="ok"
        )
        return True

    def auth_completed(self) -> None:
        self._signed_in = True
        self.gateway.signed_in(self)
        staff = self.staff
        if self._conn is not None:
            self._conn.set_extra_info(staff=staff.name if staff else "")
        if staff is not None and not self._code_ok:
            policy = self._policies[staff.fingerprint].policy
            if policy != "off":
                # Let in on an open shift window: audited, like a code would be.
                self.gateway.audit_soon(
                    staff.name,
                    "ssh.shift_window_used",
                    _printable(self._username, 60),
                    self.source,
                    {"fingerprint": staff.fingerprint, "policy": policy},
                    outcome="ok",
                )

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
