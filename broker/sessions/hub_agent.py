"""The agent's side of a live session: the SSH channel to the agent, and what its stream
carries besides the screen.

On a PTY channel the agent's stderr is its own: out-of-band reports of the input the shell
took (``agent.input_reports``, turned into recorded input by the ledger). Its stdout is the
screen, with the marks of the shell integration in it and the queries a terminal answers
(``answer_back``). When the channel closes, its exit status or signal says how the session
ended. :class:`AgentStream` sorts all that and never performs I/O; the hub
(:class:`~broker.sessions.hub.LiveSession`) records and fans out what it returns.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

import asyncssh

from agent.input_reports import InputReportReader
from agent.tunnel import BDP_INFO
from broker.rules.outside_text import clean_line
from broker.sessions.answer_back import AnswerBack
from broker.sessions.input_ledger import InputKind, InputLedger
from broker.transcript import END_AGENT_DISCONNECTED, END_ENDED, Mark, MarkParser

if TYPE_CHECKING:
    from broker.sessions.hub_channel import HubChannel

log = logging.getLogger(__name__)

END_BY_END_USER: Final = "ended by the end user"

# Input as recorded: (typed or reply, the bytes, whether the terminal echoed them).
InputPieces = list[tuple[InputKind, bytes, bool]]


#: What the broker lets the agent send ahead on a session's channel: the tunnel's
#: bandwidth-delay product (``channel_window``), within these bounds. It is what a held
#: session (a staff client that stopped reading, a full recorder, its turn not come,
#: broker.sessions.output_turns) keeps in the broker, so asyncssh's 2 MiB default would
#: be 100 MB for 50 held sessions. A file session's is ``sftp_window_bytes``.
AGENT_WINDOW_MIN: Final = 128 << 10
AGENT_WINDOW_MAX: Final = 2 << 20
AGENT_WRITE_HIGH: Final = 1 << 20
AGENT_WRITE_LOW: Final = 256 << 10


def channel_window(bdp: int | None) -> int:
    """A session channel's window for a tunnel whose bandwidth-delay product is ``bdp``
    bytes (None: not measured, so the floor, which covers a LAN)."""
    return max(AGENT_WINDOW_MIN, min(AGENT_WINDOW_MAX, bdp or 0))


def window_of(conn: asyncssh.SSHClientConnection) -> int:
    """The session channels' window on ``conn``: from what its tunnel measured."""
    bdp = conn.get_extra_info(BDP_INFO)
    return channel_window(bdp if isinstance(bdp, int) else None)


class AgentChannel(asyncssh.SSHClientSession[bytes]):
    """The broker's side of the agent's PTY channel: hands everything to the hub's end
    (:class:`~broker.sessions.hub_channel.HubChannel`)."""

    def __init__(self, hub: HubChannel) -> None:
        self._hub = hub

    def connection_made(self, chan: asyncssh.SSHClientChannel[bytes]) -> None:
        # Past AGENT_WRITE_HIGH bytes not yet taken by the agent, participants' input waits
        # in their own clients (pause_writing below), not in the broker's memory: an upload
        # runs at the pace of the agent's side.
        chan.set_write_buffer_limits(high=AGENT_WRITE_HIGH, low=AGENT_WRITE_LOW)
        self._hub.channel_made(chan)

    def pause_writing(self) -> None:
        self._hub.pause_input(True)

    def resume_writing(self) -> None:
        self._hub.pause_input(False)

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self._hub.agent_data(data, datatype == asyncssh.EXTENDED_DATA_STDERR)

    def exit_status_received(self, status: int) -> None:
        self._hub.agent_exit(status, None, "")

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        self._hub.agent_exit(None, signal, msg)

    def connection_lost(self, exc: Exception | None) -> None:
        self._hub.agent_closed(exc)


class AgentStream:
    """What one session's agent channel says, sorted for the hub."""

    def __init__(self, session_id: str, *, pty: bool) -> None:
        self.session_id = session_id
        self.pty = pty
        self.parser = MarkParser()
        # Input is recorded from the agent's out-of-band reports only (see
        # broker.sessions.input_ledger); a command without a PTY has no terminal to echo, so
        # none of its input is recorded.
        self.ledger = InputLedger()
        self.reports = InputReportReader()
        self.answers = AnswerBack()
        self.exit_status: int | None = None
        self.exit_signal: str | None = None
        self.exit_message = ""

    def output(self, data: bytes, stderr: bool) -> tuple[bytes, list[Mark], InputPieces]:
        """A chunk from the agent: (screen bytes to record and show, marks, input to record)."""
        typed: InputPieces = []
        if stderr and self.pty:
            # A PTY channel's stderr is the agent's own: input reports, or its error text.
            reports, data = self.reports.feed(data)
            for report in reports:
                typed += self.ledger.reported(report.count, report.echo)
            if self.ledger.excess:
                log.warning(
                    "session %s: the agent reported %d bytes of input never sent",
                    self.session_id,
                    self.ledger.excess,
                )
                self.ledger.excess = 0
            if not data:
                return b"", [], typed
        forward, marks = self.parser.feed(data)
        if self.pty:
            self.answers.asked(forward)
        return forward, marks, typed

    def exited(self, status: int | None, signal: str | None, message: str) -> None:
        # The agent's words: cleaned where they enter, like all outside text.
        self.exit_status = status
        self.exit_signal = None if signal is None else clean_line(signal, 32)
        self.exit_message = clean_line(message, 200)

    def end_of_channel(self, exc: Exception | None) -> tuple[str, str, str]:
        """How the channel's close ends the session: (reason, code, message)."""
        if self.exit_status is not None:
            return END_ENDED, "exit", "the session ended"
        if self.exit_signal is not None:
            if self.exit_message == "ended by the end user on the machine":
                return END_BY_END_USER, "end_user", self.exit_message
            return END_ENDED, "exit", f"the shell ended with signal {self.exit_signal[:20]}"
        log.info("session %s: the agent channel closed (%s)", self.session_id, exc)
        return (
            END_AGENT_DISCONNECTED,
            "agent_disconnected",
            "the agent disconnected, so the session ended",
        )
