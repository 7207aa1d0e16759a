"""Interfaces between the broker's parts, so each can be built and tested on its own:
the ticket system (built-in store or an external connector) and the agent tunnels."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import asyncssh

from broker.rules.views import TicketView


@dataclass(frozen=True)
class TicketInfo:
    """What the session machinery needs to know about a ticket."""

    id: int
    title: str
    status: str
    level: int
    customer: str
    assignee: str | None
    agent_ids: frozenset[str]
    created_by: str | None

    @property
    def ref(self) -> str:
        return f"T-{self.id}"

    def view(self) -> TicketView:
        return TicketView(
            id=self.id,
            status=self.status,
            level=self.level,
            customer=self.customer,
            assignee=self.assignee,
            agent_ids=self.agent_ids,
            created_by=self.created_by,
        )


@dataclass(frozen=True)
class NoteAttachment:
    name: str  # sanitised by the ticket system before it touches a file system
    content_type: str
    data: bytes


class TicketSystem(Protocol):
    """A ticket system Secondline writes to: the built-in store, or a connector to
    Request Tracker, Zammad, Jira Service Management or a signed webhook."""

    async def get(self, ticket_id: int) -> TicketInfo | None:
        """The ticket, or None when it does not exist."""

    async def assign(self, ticket_id: int, assignee: str, *, actor: str) -> None:
        """Assign the ticket (a session on an unassigned ticket assigns it to its opener)."""

    async def change_status(self, ticket_id: int, action: str, *, actor: str) -> None:
        """Apply a status action of broker.rules.ticket_states (e.g. "open")."""

    async def add_note(
        self,
        ticket_id: int,
        *,
        author: str,
        text: str,
        internal: bool,
        attachments: Sequence[NoteAttachment] = (),
        idempotency_key: str | None = None,
        now: dt.datetime | None = None,
    ) -> None:
        """Add a note; a second call with the same idempotency key adds nothing."""


class AgentTunnels(Protocol):
    """The live SSH connections to agents held by this broker node."""

    def connection(self, agent_id: str) -> asyncssh.SSHClientConnection | None:
        """The agent's live SSH connection, or None when it is not connected here."""
