"""One live session: the PTY channel to the agent, fanned out to the participants'
terminals and to the recorder.

Decisions: :class:`~broker.sessions.hub_core.HubCore`; the agent's channel is sorted by
:class:`~broker.sessions.hub_agent.AgentStream`; this module feeds them and performs what
they return. The channel itself (opened, held, its output taking its turn) is
:class:`~broker.sessions.hub_channel.HubChannel`; the recorder's flushes to disk are
:class:`~broker.sessions.hub_flush.RecordingFlush`. The hot path is synchronous: an agent
chunk goes through the mark parser, the recorder's buffer, each terminal's write buffer; no
queue, no task per chunk. Disk writes (at most once a second or per MiB) and the seal run
on a writer thread, so a slow disk slows only its own session (through the core's bound).

A session ends exactly once (:meth:`LiveSession.end`); :meth:`LiveSession.run` then waits
briefly for the agent channel to close, records what is left, seals the transcript and tells
every terminal the outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Final

import asyncssh

from agent.protocol import ConsentAnswer
from broker.log_context import context_logger
from broker.sessions.facts import MemberEvent, Outcome, SessionFacts, Terminal
from broker.sessions.hub_agent import AgentStream
from broker.sessions.hub_channel import HubChannel
from broker.sessions.hub_core import (
    Action,
    Disconnect,
    EndSession,
    Flush,
    HubCore,
    HubLimits,
    Marker,
    Member,
    Notify,
    ParticipantsChanged,
    PauseAgent,
    ResumeAgent,
    Role,
    end_message,
    roles_of,
)
from broker.sessions.hub_files import FileRecording
from broker.sessions.hub_flush import RecordingFlush
from broker.sessions.input_ledger import InputKind
from broker.sessions.output_turns import OutputTurns
from broker.sessions.screen_state import ScreenTail
from broker.sessions.sftp_tracker import Direction, FileLimits
from broker.transcript import (
    END_DISK_FULL,
    END_ENDED,
    END_KILLED,
    Mark,
    RecorderDiskFull,
    RecorderError,
    Seal,
    TranscriptRecorder,
)

log = logging.getLogger(__name__)

# How long an ending session waits for the agent to close its channel (and send what it
# still had) before the transcript is sealed anyway: a kill ends within two seconds.
CLOSE_GRACE: Final = 1.0
SIGNALS: Final = frozenset({"INT", "TERM", "HUP", "QUIT", "KILL", "TSTP", "CONT", "WINCH"})
MAX_TERMINAL_SIZE: Final = 1000
# About what one resize costs the transcript (an "r" event line): counted so that a storm
# of them is flushed to disk like output, not kept in memory until the next output.
RESIZE_EVENT_BYTES: Final = 32

END_SHUTDOWN: Final = "broker shut down"
END_OUTPUT_FAILED: Final = "broker error"


class LiveSession:
    """The hub of one session. Create it, :meth:`open_channel`, attach terminals, run."""

    def __init__(
        self,
        facts: SessionFacts,
        recorder: TranscriptRecorder,
        limits: HubLimits,
        *,
        on_member: MemberEvent,
        started_at: float,
        file_limits: FileLimits | None = None,
        turns: OutputTurns | None = None,
    ) -> None:
        self.facts = facts
        self.channel = HubChannel(self, turns or OutputTurns.for_loop())
        self._ending_flush = False
        self.recorder = recorder
        self.core = HubCore(limits, time.monotonic())
        self.agent = AgentStream(facts.session_id, pty=facts.term is not None)
        self.screen = ScreenTail(facts.cols, facts.rows)  # a joiner's first frame
        # SFTP: the bytes are file contents, relayed; recorded as file events.
        self.files: FileRecording | None = None
        if facts.kind == "sftp":
            self.files = FileRecording(file_limits or FileLimits(), recorder.paths.cast)
        self.started_at = started_at
        self._on_member = on_member
        self._terminals: dict[int, Terminal] = {}
        self._end_requested = asyncio.Event()
        self.flush = RecordingFlush(self)
        self.log = context_logger(
            __name__, session=facts.session_id, agent=facts.agent_id, staff=facts.owner
        )
        self._end: tuple[str, str, str, str | None] | None = None  # reason, code, message, by
        self.outcome: Outcome | None = None
        self.done = asyncio.Event()
        self.consent: ConsentAnswer | None = None  # set by the manager for attended agents

    @property
    def session_id(self) -> str:
        return self.facts.session_id

    @property
    def running(self) -> bool:
        """Until :meth:`end` is called: only it takes the core out of "running"."""
        return self.core.phase == "running"

    @property
    def size(self) -> tuple[int, int]:
        return self.facts.cols, self.facts.rows

    @property
    def channel_opened(self) -> bool:
        return self.channel.opened

    @property
    def _chan(self) -> asyncssh.SSHClientChannel[bytes] | None:
        return self.channel.chan

    @property
    def _agent_held(self) -> set[str]:
        """Why the agent channel is not read (:attr:`HubChannel.held`)."""
        return self.channel.held

    # -- the agent side --------------------------------------------------------------------

    def pause_input(self, paused: bool) -> None:
        """The agent's channel is full (or drained): hold what participants send."""
        for terminal in self._terminals.values():
            terminal.pause_input(paused)

    # Lane (broker.sessions.output_turns): what the turns call.

    def deliver(self, data: bytes, stderr: bool) -> None:
        self.agent_output(data, stderr)

    def hold(self, held: bool) -> None:
        self.channel.hold_for("turns", held)

    def failed(self, exc: Exception, lost: int) -> None:
        """Handling the agent's output raised (a bug: what the hub expects, it catches), so
        ``lost`` bytes were not surely recorded nor shown: going on would show a screen the
        transcript does not hold. The session ends, saying why; the transcript is marked."""
        self.log.error(
            "session %s: output failed, %d bytes lost", self.session_id, lost, exc_info=exc
        )
        self.end(END_OUTPUT_FAILED, code="output_failed", message=end_message("output_failed"))
        self.marker(f"output lost: {lost} bytes of the agent's output could not be handled")

    def agent_output(self, data: bytes, stderr: bool) -> None:
        """A chunk from the agent, its turn come: parse, record, fan out. The hot path."""
        if not self.running:
            return
        if self.files is not None and not stderr:
            # SFTP answers: file events recorded, the bytes passed on (not recorded).
            if self._file_events("from_agent", data):
                self._fan_out(data, False, 0)
            return
        forward, marks, typed = self.agent.output(data, stderr)
        if typed:
            self._record_input(typed)
        self._emit(forward, marks, stderr)

    def _file_events(self, direction: Direction, data: bytes) -> bool:
        """Mark what the SFTP recording saw; False: the session ended, data not relayed."""
        assert self.files is not None
        labels, refused = self.files.feed(direction, data)
        for label in labels:
            self.marker(label)
        if refused is not None:
            self.log.warning("session %s: %s", self.session_id, refused.message)
            self.marker(f"files refused: {refused.message}")
            self.end("ended", code=refused.code, message=refused.message)
        return self.running

    def _record_input(self, pieces: list[tuple[InputKind, bytes, bool]]) -> None:
        now = time.time()
        recorded = 0
        try:
            for kind, data, echoed in pieces:
                if kind == "typed":
                    self.recorder.input(data, now, echoed=echoed)
                else:
                    self.recorder.answer_back(data, now, echoed=echoed)
                recorded += len(data) if echoed else 0
        except RecorderError as exc:
            self.recorder_failed(exc)
            return
        if recorded and self.core.phase == "running":
            self.apply(self.core.recorded(recorded, time.monotonic()))

    def _emit(self, forward: bytes, marks: Sequence[Mark], stderr: bool) -> None:
        if not forward and not marks:
            return
        try:
            self.recorder.output(forward, time.time(), marks)
        except RecorderError as exc:
            self.recorder_failed(exc)
            return  # nobody sees what was not recorded
        if not forward:
            return
        self.screen.feed(forward)
        self._fan_out(forward, stderr, len(forward))

    def _fan_out(self, data: bytes, stderr: bool, recorded: int) -> None:
        actions: list[Action] = []
        for pid, terminal in self._terminals.items():
            terminal.write_output(data, stderr)
            actions += self.core.buffered(pid, terminal.buffered())
        actions += self.core.output(recorded, time.monotonic())
        if actions:
            self.apply(actions)

    # -- terminals -------------------------------------------------------------------------

    def attach(
        self, terminal: Terminal, name: str, role: Role, via: str, *, announce: bool = True
    ) -> Member:
        """Add a terminal; raises HubClosed or HubFull. The owner is attached before the
        channel opens (to see its first bytes) and told "running" once it is open."""
        member, actions = self.core.join(name, role, via, time.monotonic())
        self._terminals[member.pid] = terminal
        if announce:
            terminal.show_state("running", "", self.session_id)
            # Whoever comes in mid-session sees the screen as it is now, then the live stream.
            frame = self.screen.render()
            if frame:
                terminal.write_output(frame, False)
        self.apply(actions)
        self._on_member(member, "joined", "")
        return member

    def detach(self, pid: int, reason: str) -> None:
        """A terminal went away (closed, or cut off)."""
        member = self.core.member(pid)
        if member is None:
            return
        self._terminals.pop(pid, None)
        self.apply(self.core.leave(pid, reason, time.monotonic()))
        self._on_member(member, "left", reason)

    def drop(self, pid: int, message: str) -> None:
        """Cut one participant off with a message (the session goes on)."""
        terminal = self._terminals.get(pid)
        if terminal is not None:
            terminal.drop(message)
        self.detach(pid, message[:60])

    def drained(self, pid: int) -> None:
        """A terminal sent some of its buffer; the agent may go on."""
        terminal = self._terminals.get(pid)
        if terminal is not None:
            self.apply(self.core.buffered(pid, terminal.buffered()))

    def input(self, pid: int, data: bytes) -> None:
        """Staff typed; only the owner's and joiners' input reaches the shell. Answers of an
        SSH client's terminal to a query the output just asked, at the head of its input,
        are replies (broker.sessions.answer_back)."""
        if self.agent.answers.open and self.facts.term is not None:
            replies, data = self.agent.answers.split(data)
            if replies:
                self._send_input(pid, "reply", replies)
        self._send_input(pid, "typed", data)

    def answer_back(self, pid: int, data: bytes) -> None:
        """The staff terminal answered a query of the session (cursor position, device
        attributes...): it goes to the shell like input, and is recorded as a reply. Only
        the owner's terminal answers (its size is the PTY's); every viewer's terminal
        answers the same query, and the others' replies are dropped without a word."""
        member = self.core.member(pid)
        if member is not None and member.role == "owner":
            self.agent.answers.split(data)  # the queries it answers are answered
            self._send_input(pid, "reply", data)

    def _send_input(self, pid: int, kind: InputKind, data: bytes) -> None:
        allowed, actions = self.core.input(pid, time.monotonic())
        if actions:
            self.apply(actions)
        if not allowed or not data or self._chan is None:
            return
        if self.files is not None:
            if not self._file_events("to_agent", data):
                return
        elif self.facts.term is None:
            self._record_input([(kind, data, False)])
        else:
            self._record_input(self.agent.ledger.sent(kind, data))
        if self.core.phase == "running":
            self._chan.write(data)

    def input_eof(self, pid: int) -> None:
        """The owner closed its input (``ssh host cmd < file``)."""
        member = self.core.member(pid)
        if member is not None and member.role == "owner" and self._chan is not None:
            with contextlib.suppress(OSError, asyncssh.Error):
                self._chan.write_eof()

    def resize(self, pid: int, cols: int, rows: int) -> None:
        """The owner's terminal changed size."""
        if not self.core.may_resize(pid) or self.facts.term is None or self._chan is None:
            return
        cols, rows = max(1, min(cols, MAX_TERMINAL_SIZE)), max(1, min(rows, MAX_TERMINAL_SIZE))
        try:
            self.recorder.resize(cols, rows, time.time())
        except RecorderError as exc:
            self.recorder_failed(exc)
            return
        self.screen.resize(cols, rows)
        self._chan.change_terminal_size(cols, rows)
        self.apply(self.core.recorded(RESIZE_EVENT_BYTES, time.monotonic()))

    def send_signal(self, pid: int, name: str) -> None:
        """Forward a signal the owner's SSH client sent."""
        if self.core.may_resize(pid) and name in SIGNALS and self._chan is not None:
            self._chan.send_signal(name)

    def end_by_owner(self, pid: int) -> None:
        """ "End session" from whoever holds control; anyone else's request is ignored (a
        joiner leaves by closing)."""
        member = self.core.member(pid)
        if member is None or member.role != "owner":
            return
        self.end(
            END_ENDED,
            code="ended_by_owner",
            message=f"the session was ended by {member.name}",
            by=member.name,
        )

    def invite(self, by: str, name: str) -> None:
        """The owner ``by`` invites ``name`` to join; raises HubClosed or HubRefused."""
        self.apply(self.core.invite(by, name))

    def hand_over(self, by: str, to: str) -> None:
        """The owner ``by`` hands control to the joiner ``to``; raises HubClosed or
        HubRefused."""
        self.apply(self.core.hand_over(by, to))

    def marker(self, label: str) -> None:
        """Put a marker in the transcript (consent, participants)."""
        if self.core.phase == "ended":
            return
        try:
            self.recorder.marker(label, time.time())
        except RecorderError as exc:
            self.recorder_failed(exc)

    def notice(self, message: str) -> None:
        """Tell everyone in the session what happened outside it (the ticket closed in its
        external system), and put it in the transcript."""
        if self.core.phase == "ended":
            return
        for terminal in list(self._terminals.values()):
            terminal.show_notice(message)
        self.marker(message)

    # -- actions ---------------------------------------------------------------------------

    def apply(self, actions: list[Action]) -> None:
        """Perform what the core decided, in order."""
        for action in actions:
            if isinstance(action, Disconnect):
                terminal = self._terminals.get(action.pid)
                if terminal is not None:
                    terminal.drop(action.message)
                self.detach(action.pid, "could not keep up")
            elif isinstance(action, PauseAgent):
                self.channel.hold_for("core", True)
            elif isinstance(action, ResumeAgent):
                self.channel.hold_for("core", False)
            elif isinstance(action, Flush):
                self.flush.start()
            elif isinstance(action, Notify):
                terminal = self._terminals.get(action.pid)
                if terminal is not None:
                    terminal.show_notice(action.message)
            elif isinstance(action, Marker):
                self.marker(action.label)
            elif isinstance(action, ParticipantsChanged):
                people = roles_of(self.core.members)
                for terminal in self._terminals.values():
                    terminal.show_participants(people)
            elif isinstance(action, EndSession):
                self.end(action.reason, code=action.code, message=end_message(action.code))

    def tick(self) -> None:
        """Called once a second by the session manager."""
        self.flush.restart_lost()
        self.apply(self.core.tick(time.monotonic()))

    def recorder_failed(self, exc: RecorderError) -> None:
        """The recorder could not write: the session ends (nothing runs unrecorded)."""
        log.error("session %s: recording failed: %s", self.session_id, exc.code)
        if isinstance(exc, RecorderDiskFull):
            self.end(END_DISK_FULL, code="disk_full", message=end_message("disk_full"))
        else:
            self.end("write error", code="recorder_failed", message=end_message("recorder_failed"))

    # -- ending ----------------------------------------------------------------------------

    def end(self, reason: str, *, code: str, message: str, by: str | None = None) -> None:
        """End the session (once): close the agent channel; :meth:`run` seals and reports."""
        if self._end is not None:
            return
        if not self._ending_flush:
            # What came from the agent before the end is recorded and shown, as it was
            # before it had to wait for its turn. (An end from inside this, a recorder
            # failure, goes ahead and the rest is dropped: nobody sees what is not recorded.)
            self._ending_flush = True
            self.channel.deliver_waiting()
            if self._end is not None:
                return
        self._end = (reason, code, message, by)
        self.core.end()
        self.channel.close()
        self._end_requested.set()

    def kill(self, by: str, reason: str = "") -> None:
        """End the session for ``by`` (an admin or the owner); the reason, when given, is
        marked in the transcript and told to every participant with the end."""
        why = f": {reason}" if reason else ""
        self.marker(f"ended by {by}{why}")
        self.end(END_KILLED, code="killed", message=f"the session was ended by {by}{why}", by=by)

    async def run(self) -> Outcome:
        """Wait for the end, then seal the transcript and tell every terminal."""
        await self._end_requested.wait()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_GRACE):
                await self.channel.closed.wait()
        assert self._end is not None
        reason, code, message, by = self._end
        tail = self.agent.parser.close()
        if tail and code not in ("disk_full", "recorder_failed"):
            with contextlib.suppress(RecorderError):
                self.recorder.output(tail, time.time(), [])
            for terminal in self._terminals.values():
                terminal.write_output(tail, False)
        for label in self.files.close() if self.files is not None else ():
            self.marker(label)  # files still open: moved in part, not kept
        if code not in ("disk_full", "recorder_failed"):
            # Never reported: the terminal may not have echoed it, so it stays hidden.
            self._record_input(self.agent.ledger.close())
        await self.flush.finished()
        seal: Seal | None
        try:
            seal = await self.flush.seal(reason)
        except RecorderError as exc:
            log.error("session %s: sealing failed: %s", self.session_id, exc.code)
            seal = None
        if seal is not None and not seal.complete and code not in ("disk_full", "recorder_failed"):
            # The recorder found a write failure only while sealing.
            code, message = "disk_full", end_message("disk_full")
        outcome = Outcome(
            reason=seal.end_reason if seal is not None else reason,
            code=code,
            message=message,
            exit_status=self.agent.exit_status,
            exit_signal=self.agent.exit_signal,
            ended_by=by,
            started_at=self.started_at,
            ended_at=time.time(),
            seal=seal,
            commands=self.recorder.commands(),
        )
        self.core.ended()
        self.outcome = outcome
        for pid, terminal in list(self._terminals.items()):
            terminal.finish(outcome)
            member = self.core.member(pid)
            if member is not None:
                self._on_member(member, "left", "session ended")
        self._terminals.clear()
        self.done.set()
        return outcome


KILL_REASON_MAX: Final = 200  # characters of a kill's reason: one line on a terminal
