"""What a live session is about, how it ended, and what a participant's terminal is to
the hub (pure declarations, shared by the hub, the gateway, the console and the finisher)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from broker.sessions.hub_core import Member
from broker.transcript import Command, Seal

# sftp: the agent's SFTP subsystem, relayed and recorded as file events (sftp_tracker).
Kind = Literal["shell", "exec", "sftp"]


@dataclass(frozen=True, kw_only=True)
class SessionFacts:
    """What a live session is about; fixed when it starts."""

    session_id: str
    ticket_id: int
    ticket_title: str
    customer: str
    agent_id: str
    agent_name: str
    owner: str
    owner_level: int
    kind: Kind
    command: str | None
    via: str
    source: str
    term: str | None
    cols: int
    rows: int

    @property
    def ticket_ref(self) -> str:
        return f"T-{self.ticket_id}"


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """How a session ended, for the terminals, the database, the audit log and the note."""

    reason: str  # the transcript's end reason
    code: str  # exit, agent_disconnected, killed, idle, max_length, disk_full, ...
    message: str  # a sentence for the people in the session
    exit_status: int | None
    exit_signal: str | None
    ended_by: str | None
    started_at: float  # wall clock seconds
    ended_at: float
    seal: Seal | None
    commands: tuple[Command, ...]


class Terminal(Protocol):
    """A participant's terminal: an SSH channel or a browser WebSocket."""

    def write_output(self, data: bytes, stderr: bool) -> None:
        """Queue terminal bytes; never blocks (the hub watches :meth:`buffered`)."""

    def buffered(self) -> int:
        """Bytes queued and not yet sent."""

    def show_state(self, state: str, reason: str, session_id: str) -> None:
        """waiting_consent, running or ended, with a sentence."""

    def show_participants(self, people: list[dict[str, str]]) -> None:
        """Who is in the session now."""

    def show_notice(self, message: str) -> None:
        """A message beside the terminal output."""

    def drop(self, message: str) -> None:
        """The hub cut this terminal off (it could not keep up)."""

    def pause_input(self, paused: bool) -> None:
        """Stop (or go on) reading what this participant sends: the agent is behind."""

    def finish(self, outcome: Outcome) -> None:
        """The session ended."""


MemberEvent = Callable[[Member, Literal["joined", "left"], str], None]
