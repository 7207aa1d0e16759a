"""One SSH connection to the gateway: the target its user name names, the staff key that
signs in, the second factor, and the session channels it opens (at most
``ssh_max_channels``); every forwarding request is refused. What connections share (the
listener, sign-in limits and throttles, audit writes) is ``gateway.Gateway``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

import asyncssh
from asyncssh.auth import KbdIntChallenge, KbdIntResponse

from agent.ignore_packets import drop_ignore_packets
from broker.connectors.mirror import ticket_of_external
from broker.connectors.refs import ExternalTarget, parse_external_target
from broker.rules import InvalidName, SshTarget, parse_ssh_target
from broker.sessions.access import StaffKey, key_owner
from broker.sessions.errors import AUDIT_STORE_UNAVAILABLE, DB_ERRORS
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

if TYPE_CHECKING:
    from broker.ssh_gateway.gateway import Gateway

log = logging.getLogger(__name__)

CHANNEL_WINDOW: Final = 2 << 20
CHANNEL_PACKET: Final = 32768


def printable(text: str, limit: int = 80) -> str:
    """Client-sent text for a log line or an audit record: ASCII only, cut to ``limit``."""
    return ascii(text[:limit])[1:-1]


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
        # Every packet to the client once, not after an ignore packet (agent.ignore_packets).
        drop_ignore_packets(conn)
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

    @property
    def has_channels(self) -> bool:
        """Whether a session channel of this connection is still open."""
        return self._channels > 0

    async def closed(self) -> None:
        """Return once the connection is closed (by either side)."""
        if self._conn is not None:
            await self._conn.wait_closed()

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
                printable(self._username, 60),
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
        target = printable(self._username, 60)
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
                    printable(self._username, 60),
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
            printable(self._username, 60),
            self.source,
            {"request": what, "detail": printable(detail, 60)},
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
