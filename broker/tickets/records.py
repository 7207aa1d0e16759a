"""What the ticket store takes and hands out: frozen values, never database rows."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from broker.ports import TicketInfo
from broker.rules import AgentView, LevelChangeKind


@dataclass(frozen=True)
class NewTicket:
    """A ticket to create; texts are checked by ``broker.tickets.text`` before they get here."""

    title: str
    customer: str
    description: str = ""
    requester: str = ""
    level: int = 1
    agents: tuple[AgentView, ...] = ()
    created_by: str | None = None
    origin_agent_id: str | None = None  # set when an end user asked through their agent


@dataclass(frozen=True)
class TicketFilter:
    """A list query; None means "any". ``customers`` None means every customer."""

    level: int | None = None
    status: str | None = None
    assignee: str | None = None
    customer: str | None = None
    customers: frozenset[str] | None = None
    limit: int = 200


@dataclass(frozen=True)
class TicketSummary:
    """One line of a ticket list."""

    info: TicketInfo
    requester: str
    agent_names: tuple[str, ...]
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True)
class NoteRecord:
    id: int
    author: str
    text: str
    internal: bool
    created_at: dt.datetime
    attachments: tuple[str, ...] = ()


@dataclass(frozen=True)
class LevelChangeRecord:
    kind: LevelChangeKind
    from_level: int
    to_level: int
    reason: str
    actor: str
    at: dt.datetime


@dataclass(frozen=True)
class LinkedAgent:
    id: str
    name: str
    online: bool
    revoked: bool
    linked_by: str
    linked_at: dt.datetime


@dataclass(frozen=True)
class AttachmentRecord:
    name: str
    content_type: str
    size: int
    sha256: str
    created_by: str
    created_at: dt.datetime
    note_id: int | None


@dataclass(frozen=True)
class Assigned:
    """A ticket given to a staff member (what ``TicketStore.change_hooks`` are told)."""

    assignee: str


@dataclass(frozen=True)
class StatusChanged:
    """A status action applied (what ``TicketStore.change_hooks`` are told)."""

    action: str
    status: str
    solution: str | None


@dataclass(frozen=True)
class MachineLinked:
    """An agent (a customer's machine) linked to the ticket (what ``TicketStore.change_hooks``
    are told)."""

    agent_id: str
    agent_name: str


@dataclass(frozen=True)
class ExternalRef:
    """The original of a ticket mirrored from an external system (broker.connectors)."""

    ref: str  # the number staff know there, with the connector's prefix: RT-1234
    url: str  # a link to it in that system's own UI ("" when there is none)


@dataclass(frozen=True)
class TicketDetail:
    """Everything ``ticket show`` prints, but the sessions (see ``sessions_hook``)."""

    summary: TicketSummary
    description: str
    solution: str | None
    resolved_at: dt.datetime | None
    closed_at: dt.datetime | None
    origin_agent_id: str | None
    agents: tuple[LinkedAgent, ...] = ()
    notes: tuple[NoteRecord, ...] = ()
    history: tuple[LevelChangeRecord, ...] = ()
    attachments: tuple[AttachmentRecord, ...] = field(default_factory=tuple)
    external: ExternalRef | None = None
