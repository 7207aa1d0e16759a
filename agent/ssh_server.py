"""The agent's SSH server, run over the tunnel with the broker as its only client.

* Authentication: public key only, user ``secondline``, exactly the broker key pinned at
  enrollment.
* Session channels: ``sl:facts``, ``sl:consent``, and shells or commands with or without
  a PTY (see :mod:`agent.pty_session`). Shells and commands need the ``SL_*``
  environment of the contract and, on an attended agent, an approval of the same session
  in the last five minutes; otherwise the request fails.
* The ``sftp`` subsystem, under the same checks as shells: OpenSSH's ``sftp-server``
  started as the login account (:data:`SFTP_SERVERS`), on pipes like a command. Not
  asyncssh's SFTP server: that one runs inside the agent's process, with the agent's
  identity (root, or its own account), while a file session must have exactly the login
  account's rights, which only a process of that account has.
* Everything else is refused: TCP/UNIX forwarding both ways, tun/tap, other subsystems,
  X11 and agent forwarding (the latter two by the connection options the runner passes,
  see :func:`server_options`).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

import asyncssh

from agent.consent import ConsentService, Decision
from agent.errors import MessageError, SpawnError
from agent.facts import Facts
from agent.held_reports import HeldReports
from agent.ignore_packets import drop_ignore_packets
from agent.login import LoginAccount, session_environment
from agent.protocol import (
    BROKER_SSH_USERNAME,
    CONSENT_COMMAND,
    END_BY_USER_MESSAGE,
    END_BY_USER_SIGNAL,
    FACTS_COMMAND,
    TERM_TYPE_RE,
    SessionEnv,
)
from agent.pty_session import ProcessTable, SessionProcess
from agent.send_turns import QUANTUM, SendTurns
from agent.session_log import ChannelKind, EndedBy, LiveChannel, SessionRegistry
from agent.session_signals import ALLOWED_SIGNALS, signal_name
from agent.sftp_activity import FileActivity
from agent.shell_integration import (
    ShellLaunch,
    ZshStartupFiles,
    command_shell,
    interactive_shell,
)
from agent.state import LocalConfig
from agent.terminal_modes import PtyRequest

logger = logging.getLogger(__name__)

LOGIN_TIMEOUT = 30.0
SPAWN_FAILED_STATUS = 127
# Where the distributions put OpenSSH's SFTP server (Debian, Fedora, Arch); the first that
# exists serves. Package openssh-sftp-server on Debian (a dependency of openssh-server).
SFTP_SERVERS = (
    "/usr/lib/openssh/sftp-server",
    "/usr/libexec/openssh/sftp-server",
    "/usr/lib/ssh/sftp-server",
)


def sftp_server_path(candidates: tuple[str, ...] = SFTP_SERVERS) -> str | None:
    """The SFTP server program of this machine, or None."""
    return next((path for path in candidates if os.access(path, os.X_OK)), None)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerContext:
    """What every connection and channel of the SSH server shares."""

    broker_key: asyncssh.SSHKey
    consent: ConsentService
    registry: SessionRegistry
    processes: ProcessTable
    config: LocalConfig
    facts: Callable[[], Facts]
    clock: Callable[[], float]
    environ: Mapping[str, str]
    #: Startup files for zsh's marks; None starts zsh without them.
    zsh_files: ZshStartupFiles | None = None


CHANNEL_WINDOW: Final = 256 << 10

#: What the agent offers in its KEXINIT: the broker's choices (broker/agents/
#: tunnel_endpoint.py) and their near neighbours, instead of asyncssh's defaults (every
#: GSS, DH group, CBC cipher and MAC it knows, 1.5 KB). The broker keeps the peer's
#: KEXINIT and its server-sig-algs for as long as the tunnel lives, thousands of them, and
#: parses them at every handshake. Only what this asyncssh supports is offered.
TUNNEL_KEX_ALGS: Final = (
    "mlkem768x25519-sha256",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
)
TUNNEL_ENCRYPTION_ALGS: Final = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
)
TUNNEL_MAC_ALGS: Final = ("hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com")
#: The host key and the broker's client key are Ed25519.
TUNNEL_SIGNATURE_ALGS: Final = ("ssh-ed25519",)


def tunnel_algorithms() -> dict[str, object]:
    """The algorithm keyword arguments of the agent's SSH server over the tunnel."""
    supported = set(asyncssh.kex.get_kex_algs())
    return {
        "kex_algs": [alg for alg in TUNNEL_KEX_ALGS if alg.encode() in supported],
        "encryption_algs": list(TUNNEL_ENCRYPTION_ALGS),
        "mac_algs": list(TUNNEL_MAC_ALGS),
        "compression_algs": None,
        "signature_algs": list(TUNNEL_SIGNATURE_ALGS),
    }


def server_options(host_key: asyncssh.SSHKey, ctx: ServerContext) -> dict[str, object]:
    """Keyword arguments for ``asyncssh.connect_reverse`` that make the agent's server."""
    return {
        "server_factory": lambda: AgentSSHServer(ctx),
        "server_host_keys": [host_key],
        "config": None,
        "gss_host": None,
        "agent_forwarding": False,
        "x11_forwarding": False,
        "allow_scp": False,
        "sftp_factory": None,
        # Input goes to the shell untouched: no line editing or echo by asyncssh.
        "line_editor": False,
        "allow_pty": True,
        "encoding": None,
        "login_timeout": LOGIN_TIMEOUT,
        # agent.toml may change them (docs/agent.md); the defaults are the protocol's.
        "keepalive_interval": ctx.config.keepalive_interval_seconds,
        "keepalive_count_max": ctx.config.keepalive_count_max,
        # What the broker may send ahead on a channel: typed input needs little, and an
        # upload then has at most this much in the tunnel ahead of other sessions' bytes.
        "window": CHANNEL_WINDOW,
        **tunnel_algorithms(),
    }


def _refuse(what: str) -> asyncssh.ChannelOpenError:
    logger.warning("refused a %s request from the broker", what)
    return asyncssh.ChannelOpenError(
        asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, f"{what} is refused by the agent"
    )


class AgentSSHServer(asyncssh.SSHServer):
    """Authenticates the broker and hands out session channels."""

    def __init__(self, ctx: ServerContext) -> None:
        self._ctx = ctx

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        # Every packet to the broker once, not after an ignore packet (agent.ignore_packets).
        drop_ignore_packets(conn)

    def begin_auth(self, username: str) -> bool:
        return True  # authentication is always required

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        accepted = (
            username == BROKER_SSH_USERNAME and key.public_data == self._ctx.broker_key.public_data
        )
        if not accepted:
            logger.warning("refused an SSH client key that is not the pinned broker key")
        return accepted

    def session_requested(self) -> AgentSession:
        return AgentSession(self._ctx)

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> bool:
        raise _refuse("port forwarding")

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        logger.warning("refused a remote port forwarding request from the broker")
        return False

    def unix_connection_requested(self, dest_path: str) -> bool:
        raise _refuse("UNIX socket forwarding")

    def unix_server_requested(self, listen_path: str) -> bool:
        logger.warning("refused a remote UNIX socket forwarding request from the broker")
        return False

    def tun_requested(self, unit: int | None) -> bool:
        raise _refuse("tunnel device")

    def tap_requested(self, unit: int | None) -> bool:
        raise _refuse("tunnel device")


class AgentSession(asyncssh.SSHServerSession[bytes]):
    """One session channel: facts, consent, or a process of a staff session."""

    def __init__(self, ctx: ServerContext) -> None:
        self._ctx = ctx
        self._chan: asyncssh.SSHServerChannel[bytes] | None = None
        self._pty: PtyRequest | None = None
        self._env: SessionEnv | None = None
        self._kind: str = ""
        self._command: str | None = None
        self._process: SessionProcess | None = None
        self._task: asyncio.Task[None] | None = None
        self._live: LiveChannel | None = None
        self._closed = False
        self._eof = False
        self._early_input: list[bytes] = []
        # Output stops while the channel's window is full or while it waits for its turn
        # at the tunnel (agent.send_turns); it goes on when neither holds it.
        self._turns: SendTurns | None = None
        self._window_full = False
        self._waiting_turn = False
        # Input reports wait for the output that follows them (agent.held_reports).
        self._reports: HeldReports | None = None

    # -- requests -----------------------------------------------------------------------

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self._chan = chan
        turns = chan.get_extra_info("send_turns")
        self._turns = turns if isinstance(turns, SendTurns) else None
        if self._turns is not None:
            # What waits here for the channel's window goes into the tunnel at once when
            # the window opens: at most two quanta (agent.send_turns.SendTurns.bound).
            chan.set_write_buffer_limits(high=QUANTUM, low=QUANTUM // 2)

    def pty_requested(
        self, term_type: str, term_size: tuple[int, int, int, int], term_modes: Mapping[int, int]
    ) -> bool:
        if TERM_TYPE_RE.fullmatch(term_type) is None:
            logger.warning("refused a PTY with an invalid terminal type")
            return False
        cols, rows, pixel_width, pixel_height = term_size
        self._pty = PtyRequest(
            term=term_type,
            cols=cols or 80,
            rows=rows or 24,
            pixel_width=pixel_width,
            pixel_height=pixel_height,
            modes=dict(term_modes),
        )
        return True

    def shell_requested(self) -> bool:
        return self._authorize("shell", None)

    def exec_requested(self, command: str) -> bool:
        if command == FACTS_COMMAND:
            self._kind = "facts"
            return True
        if command == CONSENT_COMMAND:
            self._env = self._session_env()
            self._kind = "consent"
            return self._env is not None
        return self._authorize("exec", command)

    def subsystem_requested(self, subsystem: str) -> bool:
        if subsystem != "sftp":
            logger.warning("refused a subsystem request from the broker")
            return False
        return self._authorize("sftp", None)

    def break_received(self, msec: int) -> bool:
        return False

    def _session_env(self) -> SessionEnv | None:
        assert self._chan is not None
        try:
            return SessionEnv.parse(self._chan.get_environment())
        except MessageError as exc:
            logger.warning("refused a channel with an invalid session environment: %s", exc)
            return None

    def _authorize(self, kind: ChannelKind, command: str | None) -> bool:
        env = self._session_env()
        if env is None:
            return False
        if not self._ctx.consent.is_allowed(env.session):
            logger.warning(
                "refused a %s for session %s: the end user has not approved it", kind, env.session
            )
            return False
        self._env, self._kind, self._command = env, kind, command
        return True

    # -- running ------------------------------------------------------------------------

    def session_started(self) -> None:
        chan = self._chan
        assert chan is not None
        if self._kind == "facts":
            self._task = asyncio.get_running_loop().create_task(self._send_facts())
        elif self._kind == "consent":
            self._task = asyncio.get_running_loop().create_task(self._run_consent())
        else:
            # Hold the client's input until the process exists to take it.
            chan.pause_reading()
            self._task = asyncio.get_running_loop().create_task(self._start_process())

    async def _send_facts(self) -> None:
        # Listing packages runs dpkg-query or rpm: off the loop, which serves sessions.
        facts = await asyncio.to_thread(self._ctx.facts)
        if self._closed or self._chan is None:
            return
        self._chan.write(facts.serialize() + b"\n")
        self._chan.exit(0)

    async def _run_consent(self) -> None:
        assert self._chan is not None
        assert self._env is not None
        decision: Decision = await self._ctx.consent.ask(self._env)
        if self._closed:
            return
        self._chan.write(decision.answer().serialize())
        if decision.decision == "approved" and self._env.role is not None:
            # A broker that names the role keeps the channel open while the person is in
            # the session; a denial after the approval is the second line it reads.
            decision = await self._ctx.consent.hold(decision)
            if self._closed:
                return
            self._chan.write(decision.answer().serialize())
        self._chan.exit(0 if decision.allows else 1)

    def _launch(self, account: LoginAccount) -> ShellLaunch:
        if self._kind == "sftp":
            program = sftp_server_path()
            if program is None:
                raise SpawnError(
                    "this machine has no SFTP server program (install openssh-sftp-server)"
                )
            # -e -l INFO: one line per file operation on stderr, which the agent reads for
            # the end user's `sessions` (agent.sftp_activity) and never relays.
            return ShellLaunch(program, ("sftp-server", "-e", "-l", "INFO"), {}, ())
        if self._kind == "exec":
            assert self._command is not None
            return command_shell(account.shell, self._command)
        if self._pty is not None:
            return interactive_shell(account.shell, self._ctx.zsh_files)
        name = os.path.basename(account.shell)
        return ShellLaunch(account.shell, (f"-{name}",), {}, ())

    async def _start_process(self) -> None:
        chan, env = self._chan, self._env
        assert chan is not None
        assert env is not None
        kind: ChannelKind = "shell"
        if self._kind in ("exec", "sftp"):
            kind = "exec" if self._kind == "exec" else "sftp"
        try:
            account = LoginAccount.resolve(self._ctx.config.login_user, self._ctx.config.shell)
            environment = session_environment(
                account,
                env,
                term=self._pty.term if self._pty is not None else None,
                inherited=self._ctx.environ,
            )
            launch = self._launch(account)
            # Registered before the process exists: a fast one may end before spawn returns.
            self._live = LiveChannel(
                env=env,
                kind=kind,
                command=self._command,
                login_user=account.name,
                started_at=self._ctx.clock(),
                close=self._end_by_user,
                files=FileActivity() if kind == "sftp" else None,
            )
            self._ctx.registry.started(self._live)
            logger.info(
                "session %s: %s for %s (ticket %s) as %s",
                env.session,
                kind,
                env.staff,
                env.ticket,
                account.name,
            )
            table = self._ctx.processes
            if self._pty is not None:
                process = await SessionProcess.start_pty(
                    launch, account, environment, self._pty, self, table.discard
                )
            else:
                process = await SessionProcess.start_pipes(
                    launch, account, environment, self, table.discard
                )
            table.add(process)
        except SpawnError as exc:
            logger.error("session %s: %s", env.session, exc)
            if self._live is not None:
                self._ctx.registry.ended(
                    self._live, ended_by="exit", returncode=SPAWN_FAILED_STATUS
                )
            if not self._closed:
                chan.write_stderr(f"secondline-agent: {exc}\r\n".encode())
                chan.exit(SPAWN_FAILED_STATUS)
            return
        if self._closed:
            process.terminate()
            return
        self._process = process
        for data in self._early_input:
            process.write(data)
        self._early_input.clear()
        chan.resume_reading()
        if self._eof:
            process.write_eof()  # the client's EOF came while the process was starting

    def _end_by_user(self) -> None:
        if self._reports is not None:
            self._reports.flush()
        if self._chan is not None and not self._closed:
            self._chan.exit_with_signal(END_BY_USER_SIGNAL, False, END_BY_USER_MESSAGE)

    # -- channel events -----------------------------------------------------------------

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if self._process is not None:
            self._process.write(data)
        elif self._kind in ("shell", "exec", "sftp"):
            # Input sent along with the request, before the process existed (bounded by
            # the channel window, since reading pauses once the session has started).
            self._early_input.append(data)

    def eof_received(self) -> bool:
        self._eof = True
        if self._process is not None:
            self._process.write_eof()
        return True  # keep sending output after the client's EOF

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        if self._pty is None:
            return
        self._pty = PtyRequest(
            term=self._pty.term,
            cols=width,
            rows=height,
            pixel_width=pixwidth,
            pixel_height=pixheight,
        )
        if self._process is not None:
            self._process.resize(self._pty)

    def signal_received(self, signal: str) -> None:
        signum = ALLOWED_SIGNALS.get(signal)
        if signum is not None and self._process is not None:
            self._process.send_signal(signum)

    def pause_writing(self) -> None:
        self._window_full = True
        if self._process is not None:
            self._process.pause_output()

    def resume_writing(self) -> None:
        self._window_full = False
        if self._process is None or self._waiting_turn:
            return
        if self._turns is not None and self._turns.full():
            # The window opened while the tunnel's queue is full: wait for a turn.
            self._waiting_turn = True
            self._turns.wait(self)
            return
        self._process.resume_output()

    def turn_granted(self) -> None:
        """The tunnel's queue drained (agent.send_turns): read the next quantum."""
        self._waiting_turn = False
        if self._process is not None and not self._window_full and not self._closed:
            self._process.resume_output()

    def _after_write(self) -> None:
        # One quantum was written; a full queue sends this channel to the back of the line.
        turns = self._turns
        if turns is not None and turns.full() and self._process is not None:
            self._waiting_turn = True
            self._process.pause_output()
            turns.wait(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._reports is not None:
            self._reports.drop()
        if self._turns is not None:
            self._turns.forget(self)
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._process is not None:
            self._process.terminate()
        if self._live is not None:
            ended_by: EndedBy = "disconnect" if exc is not None else "broker"
            self._ctx.registry.ended(self._live, ended_by=ended_by, returncode=None)

    # -- ProcessEvents ------------------------------------------------------------------

    def process_output(self, data: bytes) -> None:
        if self._reports is not None:
            self._reports.flush()  # the input before this output, in the same message
        if self._chan is not None and not self._closed:
            self._chan.write(data)
            self._after_write()

    def process_stderr(self, data: bytes) -> None:
        if self._live is not None and self._live.files is not None:
            self._live.files.feed(data)  # sftp-server's log: the SFTP client never sees it
            return
        if self._chan is not None and not self._closed:
            self._chan.write_stderr(data)
            self._after_write()

    def input_written(self, count: int, echo: bool) -> None:
        # Only on a PTY channel: its stderr stream is the agent's alone (the PTY carries the
        # session's stderr on stdout), so no program on the machine can forge a report.
        # A command on pipes has no terminal to echo; the broker records none of its input.
        if self._pty is not None and self._chan is not None and not self._closed:
            if self._reports is None:
                self._reports = HeldReports(self._send_reports)
            self._reports.add(count, echo)

    def _send_reports(self, lines: bytes) -> None:
        if self._chan is not None and not self._closed:
            self._chan.write_stderr(lines)

    def process_finished(self, returncode: int) -> None:
        if self._reports is not None:
            self._reports.flush()
        if self._live is not None:
            self._ctx.registry.ended(self._live, ended_by="exit", returncode=returncode)
        if self._chan is None or self._closed:
            return
        if returncode >= 0:
            self._chan.exit(returncode)
        else:
            self._chan.exit_with_signal(signal_name(returncode))

    def input_paused(self, paused: bool) -> None:
        if self._chan is not None and not self._closed:
            if paused:
                self._chan.pause_reading()
            else:
                self._chan.resume_reading()
