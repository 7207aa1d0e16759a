"""The REST models of ``/api/v1/tickets`` and their conversion from the store's records."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from broker.rules import REASON_MAX_LEN, allowed_actions
from broker.tickets import text
from broker.tickets.files import download_url
from broker.tickets.records import AttachmentRecord, TicketDetail, TicketSummary


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


AgentRef = Annotated[str, Field(min_length=1, max_length=63)]


class TicketCreate(Strict):
    title: str = Field(max_length=text.TITLE_MAX)
    customer: str = Field(max_length=63)
    description: str = Field(default="", max_length=text.DESCRIPTION_MAX)
    requester: str = Field(default="", max_length=text.REQUESTER_MAX)
    level: int = Field(default=1, ge=1, le=3, strict=True)
    agents: list[AgentRef] = Field(default_factory=list, max_length=50)


class LevelChangeIn(Strict):
    to: int = Field(ge=1, le=3, strict=True)
    reason: str = Field(default="", max_length=REASON_MAX_LEN)


class AssignIn(Strict):
    user: str = Field(min_length=1, max_length=64)


class LinkIn(Strict):
    agent: AgentRef


class NoteIn(Strict):
    text: str = Field(max_length=text.NOTE_MAX)
    internal: bool = True


class ResolveIn(Strict):
    solution: str = Field(max_length=text.SOLUTION_MAX)


class TicketOut(BaseModel):
    id: str
    number: int
    title: str
    customer: str
    requester: str
    level: int
    status: str
    assignee: str | None
    created_by: str | None
    agents: list[str]
    created_at: dt.datetime
    updated_at: dt.datetime


class NoteOut(BaseModel):
    id: int
    author: str
    text: str
    internal: bool
    created_at: dt.datetime
    attachments: list[str]


class LevelChangeOut(BaseModel):
    kind: str
    from_level: int
    to_level: int
    reason: str
    actor: str
    at: dt.datetime


class LinkedAgentOut(BaseModel):
    id: str
    name: str
    online: bool
    revoked: bool
    linked_by: str
    linked_at: dt.datetime


class AttachmentOut(BaseModel):
    name: str
    url: str  # where to download it (GET, same credentials)
    content_type: str
    size: int
    sha256: str
    created_by: str
    created_at: dt.datetime
    note_id: int | None


class ExternalOut(BaseModel):
    ref: str
    url: str


class TicketDetailOut(TicketOut):
    # The original in an external ticket system (RT-1234 and a link), for mirrored tickets.
    external: ExternalOut | None = None
    description: str
    solution: str | None
    resolved_at: dt.datetime | None
    closed_at: dt.datetime | None
    origin_agent: str | None
    allowed_actions: list[str]
    linked_agents: list[LinkedAgentOut]
    notes: list[NoteOut]
    history: list[LevelChangeOut]
    attachments: list[AttachmentOut]
    sessions: list[dict[str, object]]


class SessionCheckOut(BaseModel):
    ticket: str
    agent: str
    agent_name: str
    allowed: bool
    code: str | None
    reason: str | None
    assign_to_caller: bool
    needs_consent: bool


def ticket_out(summary: TicketSummary) -> TicketOut:
    info = summary.info
    return TicketOut(
        id=info.ref,
        number=info.id,
        title=info.title,
        customer=info.customer,
        requester=summary.requester,
        level=info.level,
        status=info.status,
        assignee=info.assignee,
        created_by=info.created_by,
        agents=list(summary.agent_names),
        created_at=summary.created_at,
        updated_at=summary.updated_at,
    )


def attachment_out(record: AttachmentRecord, ticket_ref: str) -> AttachmentOut:
    return AttachmentOut(
        name=record.name,
        url=download_url(ticket_ref, record.name),
        content_type=record.content_type,
        size=record.size,
        sha256=record.sha256,
        created_by=record.created_by,
        created_at=record.created_at,
        note_id=record.note_id,
    )


def detail_out(detail: TicketDetail, sessions: list[dict[str, object]]) -> TicketDetailOut:
    base = ticket_out(detail.summary)
    return TicketDetailOut(
        **base.model_dump(),
        description=detail.description,
        solution=detail.solution,
        resolved_at=detail.resolved_at,
        closed_at=detail.closed_at,
        origin_agent=detail.origin_agent_id,
        allowed_actions=list(allowed_actions(detail.summary.info.status)),
        linked_agents=[
            LinkedAgentOut(
                id=a.id,
                name=a.name,
                online=a.online,
                revoked=a.revoked,
                linked_by=a.linked_by,
                linked_at=a.linked_at,
            )
            for a in detail.agents
        ],
        notes=[
            NoteOut(
                id=n.id,
                author=n.author,
                text=n.text,
                internal=n.internal,
                created_at=n.created_at,
                attachments=list(n.attachments),
            )
            for n in detail.notes
        ],
        history=[
            LevelChangeOut(
                kind=h.kind,
                from_level=h.from_level,
                to_level=h.to_level,
                reason=h.reason,
                actor=h.actor,
                at=h.at,
            )
            for h in detail.history
        ],
        attachments=[attachment_out(a, base.id) for a in detail.attachments],
        sessions=sessions,
        external=None
        if detail.external is None
        else ExternalOut(ref=detail.external.ref, url=detail.external.url),
    )
