"""One SSH session channel of the gateway: a staff member's terminal in a live session.

The channel is a participant's :class:`~broker.sessions.hub.Terminal`: the owner's, or
(``T-1042+s-…``) a joiner's or an observer's, who first get the current screen. Its input
is held (SSH flow control) until the session runs; refusals and broker messages go to stderr
as ``secondline: ...`` lines, and a session the broker ended exits with status 255 (the
status OpenSSH itself uses for "the connection failed"), while a shell or command that
ended by itself passes its own exit status or signal through.

An ``sftp`` subsystem request (``sftp``, and ``scp`` in its default SFTP mode) opens a
file session: the same rules, consent and limits as a shell, its channel the agent's SFTP
subsystem, its bytes relayed as they are and its file operations recorded by the hub
(:mod:`broker.sessions.sftp_tracker`). Other subsystems are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

import asyncssh

from broker.log_context import ContextLogger, context_logger
from broker.sessions.admission import OpenRequest
from broker.sessions.cross_node import attach_anywhere, open_anywhere
from broker.sessions.errors import SessionNotFound, SessionRefused
from broker.sessions.facts import Outcome
from broker.sessions.hub_core import Member
from broker.sessions.routing import SessionHandle
from broker.transcript.asciicast import TERM_PATTERN

if TYPE_CHECKING:
    from broker.ssh_gateway.connection import GatewayServer

log = logging.getLogger(__name__)

MAX_COMMAND_BYTES: Final = 16 << 10
# Input that arrives before the session runs is held up to this much, then flow control
# holds the rest (asyncssh resumes reading right after ``session_started``, so pausing
# there would not last).
EARLY_INPUT_MAX: Final = 64 << 10
BROKER_EXIT: Final = 255
# Refusals to join that still allow watching: the SSH participant then watches.
WATCH_INSTEAD: Final = frozenset({"not_invited", "observer_only"})
WRITE_HIGH: Final = 1 << 20
WRITE_LOW: Final = 256 << 10


class GatewayChannel(asyncssh.SSHServerChannel[bytes]):
    """A server channel that refuses environment requests: they would reach nothing (the
    agent takes only the broker's own SL_* variables).

    asyncssh offers no supported way to refuse them: left alone it keeps every variable a
    client sends, as many as it sends, and logs each with its value. So this overrides its
    private handler; tests/unit/test_library_guards.py fails when asyncssh changes how it
    dispatches or keeps them. (Agent and X11 forwarding need no such override: the
    gateway's ``agent_forwarding=False`` and ``x11_forwarding=False`` refuse them.)"""

    def _process_env_request(self, packet: asyncssh.packet.SSHPacket) -> bool:
        packet.get_string()
        packet.get_string()
        packet.check_end()
        return False


def _line(message: str) -> bytes:
    text = "".join(c if c.isprintable() else " " for c in message)
    return f"secondline: {text}\r\n".encode()


class GatewaySession(asyncssh.SSHServerSession[bytes]):
    """A staff member's shell or command through the gateway."""

    def __init__(self, server: GatewayServer) -> None:
        self._server = server
        self._chan: asyncssh.SSHServerChannel[bytes] | None = None
        self._term: str | None = None
        self._cols, self._rows = 80, 24
        self._command: str | None = None
        self._exec = False
        self._sftp = False
        self._live: SessionHandle | None = None
        self._pid = 0
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._exited = False
        self._people: dict[str, str] = {}
        self._early = bytearray()
        self._early_eof = False

    # -- requests from the SSH client ------------------------------------------------------

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self._chan = chan
        chan.set_write_buffer_limits(high=WRITE_HIGH, low=WRITE_LOW)

    def pty_requested(
        self, term_type: str, term_size: tuple[int, int, int, int], term_modes: Mapping[int, int]
    ) -> bool:
        if not TERM_PATTERN.fullmatch(term_type):
            self._server.refused_request("pty", "invalid terminal type")
            return False
        self._term = term_type
        cols, rows = term_size[0], term_size[1]
        self._cols = min(max(cols, 1), 1000) if cols else 80
        self._rows = min(max(rows, 1), 1000) if rows else 24
        return True

    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        if len(command.encode()) > MAX_COMMAND_BYTES or "\x00" in command or not command.strip():
            self._server.refused_request("exec", "command empty, too long or with NUL")
            return False
        self._exec, self._command = True, command
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        if subsystem != "sftp" or self._term is not None:
            self._server.refused_request("subsystem", subsystem[:40])
            return False
        self._sftp = True
        return True

    def break_received(self, msec: int) -> bool:
        return False

    def session_started(self) -> None:
        self._task = self._server.gateway.tasks.spawn(
            "opening a session", self._open(), logger=self._log(), cancel_at_stop=True
        )
        if self._task is None:  # the gateway is stopping
            self._exit_with("the broker is shutting down; connect again in a moment")

    def _log(self) -> ContextLogger:
        """This channel's log: the staff member, the session joined, or else the peer."""
        server = self._server
        staff, target = server.staff, server.target
        return context_logger(
            __name__,
            staff=staff.name if staff is not None else "",
            session=target.session or "" if target is not None else "",
            peer=server.source,
        )

    async def _attach(self) -> tuple[SessionHandle, Member]:
        """``T-1042+s-…``: join the live session, or watch it when the rules let this staff
        member watch but not type (not invited, level 1). The hub sends its current screen
        first."""
        server = self._server
        staff, target = server.staff, server.target
        assert staff is not None
        assert target is not None
        assert target.session is not None
        if self._exec or self._sftp:
            raise SessionRefused(
                "joining a session takes an interactive shell: leave out the command "
                "(files go through a session of their own: sftp to the ticket alone)",
                code="join_needs_shell",
            )
        manager = server.gateway.manager
        try:
            return await attach_anywhere(
                manager,
                staff_name=staff.name,
                session_id=target.session,
                ticket_id=target.ticket,
                role="joiner",
                terminal=self,
                source=server.source,
            )
        except SessionRefused as exc:
            if exc.code not in WATCH_INSTEAD:
                raise
        return await attach_anywhere(
            manager,
            staff_name=staff.name,
            session_id=target.session,
            ticket_id=target.ticket,
            role="observer",
            terminal=self,
            source=server.source,
        )

    async def _open(self) -> None:
        server = self._server
        staff, target = server.staff, server.target
        assert staff is not None
        assert target is not None
        if target.session is not None:
            try:
                live, member = await self._attach()
            except (SessionRefused, SessionNotFound) as exc:
                self._exit_with(exc.message)
                return
            except Exception:  # a connection boundary: the client gets a sentence
                self._log().exception("joining a session failed")
                self._exit_with("the session could not be joined (internal error); tell an admin")
                return
            self._started(live, member)
            return
        request = OpenRequest(
            staff=staff.name,
            target=target,
            kind="sftp" if self._sftp else "exec" if self._exec else "shell",
            command=self._command,
            term=self._term,
            cols=self._cols,
            rows=self._rows,
            via="ssh",
            source=server.source,
        )
        try:
            live, member = await open_anywhere(server.gateway.manager, request, self)
        except SessionRefused as exc:
            self._exit_with(exc.message)
            return
        except Exception:  # a connection boundary: the client gets a sentence
            self._log().exception("opening a session failed")
            self._exit_with("the session could not be started (internal error); tell an admin")
            return
        self._started(live, member)

    def _started(self, live: SessionHandle, member: Member) -> None:
        if self._closed:
            live.detach(member.pid, "disconnected")
            return
        self._live, self._pid = live, member.pid
        if self._early:
            live.input(member.pid, bytes(self._early))
            self._early.clear()
        if self._early_eof:
            live.input_eof(member.pid)
        if self._chan is not None:
            self._chan.resume_reading()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if self._live is not None:
            self._live.input(self._pid, data)
            return
        self._early += data
        if len(self._early) >= EARLY_INPUT_MAX and self._chan is not None:
            self._chan.pause_reading()

    def eof_received(self) -> bool:
        if self._live is not None:
            self._live.input_eof(self._pid)
        else:
            self._early_eof = True
        return True  # keep the channel open for the output still to come

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        if self._live is not None:
            self._live.resize(self._pid, width, height)
        elif width and height:
            self._cols, self._rows = min(width, 1000), min(height, 1000)

    def signal_received(self, signal: str) -> None:
        if self._live is not None:
            self._live.send_signal(self._pid, signal)

    def resume_writing(self) -> None:
        if self._live is not None:
            self._live.drained(self._pid)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._task is not None and not self._task.done() and self._live is None:
            self._task.cancel()
        if self._live is not None:
            self._live.detach(self._pid, "disconnected")
        self._server.channel_closed()

    # -- Terminal: what the hub tells this staff member ------------------------------------

    def write_output(self, data: bytes, stderr: bool) -> None:
        chan = self._chan
        if chan is None or self._closed or self._exited:
            return
        # The client closed the channel and asyncssh reports it (connection_lost) only on
        # the next loop turn: a write in between raises BrokenPipeError. That is this
        # participant leaving, not a failure of the session's output.
        with contextlib.suppress(OSError, asyncssh.Error):
            if stderr and self._term is None:
                chan.write_stderr(data)
            else:
                chan.write(data)

    def pause_input(self, paused: bool) -> None:
        # SSH flow control: the client's window stays shut while the agent is behind.
        if self._chan is not None and not self._closed:
            if paused:
                self._chan.pause_reading()
            else:
                self._chan.resume_reading()

    def buffered(self) -> int:
        chan = self._chan
        return 0 if chan is None or self._closed else chan.get_write_buffer_size()

    def _stderr(self, message: str) -> None:
        chan = self._chan
        if chan is None or self._closed or self._exited:
            return
        with contextlib.suppress(OSError, asyncssh.Error):
            chan.write_stderr(_line(message))

    def show_state(self, state: str, reason: str, session_id: str) -> None:
        if state == "waiting_consent":
            self._stderr(f"{reason}; session {session_id} starts when they approve it")

    def show_participants(self, people: list[dict[str, str]]) -> None:
        # Compared by name: a hand-over changes roles, not who is present.
        now = {p["name"]: p["role"] for p in people}
        for name in sorted(now.keys() - self._people.keys()):
            if now[name] != "owner":
                self._stderr(f"{name} joined this session ({now[name]})")
        for name in sorted(self._people.keys() - now.keys()):
            if self._people[name] != "owner":
                self._stderr(f"{name} left this session")
        for name in sorted(now.keys() & self._people.keys()):
            if now[name] != self._people[name]:
                self._stderr(f"{name} is now {now[name]}")
        self._people = now

    def show_notice(self, message: str) -> None:
        self._stderr(message)

    def drop(self, message: str) -> None:
        self._exit_with(message)

    def finish(self, outcome: Outcome) -> None:
        chan = self._chan
        if chan is None or self._closed or self._exited:
            return
        self._exited = True
        try:
            if outcome.code == "exit" and outcome.exit_status is not None:
                chan.exit(outcome.exit_status)
            elif outcome.code == "exit" and outcome.exit_signal is not None:
                chan.exit_with_signal(outcome.exit_signal, False, outcome.message[:200])
            else:
                chan.write_stderr(b"\r\n" + _line(outcome.message))
                chan.exit(BROKER_EXIT)
        except (OSError, asyncssh.Error):
            pass

    def _exit_with(self, message: str) -> None:
        chan = self._chan
        if chan is None or self._closed or self._exited:
            return
        self._exited = True
        with contextlib.suppress(OSError, asyncssh.Error):
            chan.write_stderr(_line(message))
            chan.exit(BROKER_EXIT)
