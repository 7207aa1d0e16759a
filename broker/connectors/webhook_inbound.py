"""``POST /webhooks/{connector}``: a ticket system tells Secondline about a ticket.

The request is authenticated by its signature alone (``webhook_signing``: the connector's
shared secret, a 300 s replay window, 60 s of clock skew tolerated) and is at most
:data:`BODY_MAX` bytes. Its event id is remembered for a week, so the same event again is
refused (409 ``duplicate_event``, which a sender treats as delivered) and changes nothing.
Every refusal answers JSON ``{"error": {"code", "message"}}`` saying what to fix, is
logged, and is audited: one that proves no knowledge of the secret (unknown connector, no
or a wrong signature, too large) in the per-source summary of anonymous refusals, one from
a sender that signed correctly (a malformed event, a replay) as its own event.

An accepted event creates or updates the mirrored ticket through the same
:class:`~broker.connectors.mirror.Mirror` a polled system uses, so the cleaning of outside
text, escalations by a change of queue, and the closing of deleted and merged tickets are
the same. The body (docs/connectors.md)::

    {"id": "evt-1", "type": "ticket.updated",
     "ticket": {"id": "4711", "title": "...", "queue": "Level 1", "status": "open",
                "requester": "eve@example.com", "owner": null, "customer": "acme",
                "url": "https://desk.example.com/t/4711", "changed_by": "lena"}}

Types: ``ticket.created`` and ``ticket.updated`` (the same: create or update),
``ticket.deleted`` (only ``ticket.id``), ``ticket.merged`` (``ticket.id`` and
``ticket.merged_into``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Final, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from broker.connectors.errors import ConnectorNotFound
from broker.connectors.keys import CONNECTOR_SYNC, CONNECTORS
from broker.connectors.mirror import ticket_of_external
from broker.connectors.remote import RemoteTicket
from broker.connectors.store import ConnectorRecord
from broker.connectors.webhook_events import WEBHOOK_KIND
from broker.connectors.webhook_signing import HEADER, SignatureError, verify
from broker.db.models_connectors import WebhookReceipt
from broker.errors import error_response
from broker.services import SERVICES, Services

log = logging.getLogger(__name__)

INBOUND_PATH: Final = "/webhooks/{name}"
BODY_MAX: Final = 64 * 1024
KEEP: Final = dt.timedelta(days=7)
ACTION: Final = "webhook.refused"
NUMBER: Final = r"^[1-9][0-9]{0,17}$"
Status = Literal["new", "open", "pending", "resolved", "closed"]


class TicketIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=NUMBER)
    title: str | None = Field(default=None, max_length=2000)
    queue: str | None = Field(default=None, max_length=200)
    status: Status | None = None
    owner: str | None = Field(default=None, max_length=200)
    requester: str = Field(default="", max_length=500)
    customer: str | None = Field(default=None, max_length=63)
    url: str = Field(default="", max_length=500)
    changed_by: str | None = Field(default=None, max_length=200)
    merged_into: str | None = Field(default=None, pattern=NUMBER)


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$")
    type: Literal["ticket.created", "ticket.updated", "ticket.deleted", "ticket.merged"]
    created: str | None = Field(default=None, max_length=64)
    ticket: TicketIn


class Refusal(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def parse_event(body: bytes) -> EventIn:
    """The event, or a Refusal (400) naming what is wrong with it."""
    try:
        event = EventIn.model_validate(json.loads(body))
    except (ValueError, UnicodeDecodeError) as exc:
        detail = (
            "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()[:5]
            )
            if isinstance(exc, ValidationError)
            else "the body is not JSON"
        )
        raise Refusal(400, "invalid_event", f"the event is malformed: {detail}") from None
    ticket = event.ticket
    if event.type in ("ticket.created", "ticket.updated"):
        missing = [n for n in ("title", "queue", "status") if getattr(ticket, n) is None]
        if missing:
            raise Refusal(
                400,
                "invalid_event",
                f"a {event.type} event needs ticket.{', ticket.'.join(missing)}",
            )
    if event.type == "ticket.merged" and ticket.merged_into is None:
        raise Refusal(400, "invalid_event", "a ticket.merged event needs ticket.merged_into")
    return event


def remote_of(event: EventIn, record: ConnectorRecord) -> RemoteTicket | None:
    """The ticket as the mirror takes it (None: deleted over there)."""
    ticket = event.ticket
    if event.type == "ticket.deleted":
        return None
    if event.type == "ticket.merged":
        # Only the merge matters to the mirror: it closes the ticket and keeps the target.
        return RemoteTicket(
            external_id=ticket.id,
            title="",
            place="",
            status="closed",
            state="merged",
            owner=None,
            requester="",
            url="",
            merged_into=ticket.merged_into,
        )
    status = ticket.status or "open"  # parse_event made sure it is there
    return RemoteTicket(
        external_id=ticket.id,
        title=ticket.title or "",
        place=ticket.queue or "",
        status=status,
        state=status,
        owner=ticket.owner,
        requester=ticket.requester,
        url=ticket.url,
        custom_fields={record.customer_field: ticket.customer or ""},
        changed_by=ticket.changed_by,
    )


def check_new(event: EventIn, record: ConnectorRecord) -> None:
    """A ticket we do not mirror yet must land somewhere: a mapped queue, a customer."""
    ticket = event.ticket
    if event.type not in ("ticket.created", "ticket.updated") or ticket.status in (
        "resolved",
        "closed",
    ):
        return
    if record.levels.level_of(ticket.queue or "") is None:
        raise Refusal(
            422,
            "queue_not_mapped",
            f"queue {(ticket.queue or '')[:60]!a} is none of the connector's levels "
            f"({record.levels.as_text()}); send one of them, or change the connector's --levels",
        )
    if record.customer is None and not ticket.customer:
        raise Refusal(
            422,
            "customer_missing",
            "this connector serves all customers: send ticket.customer with the name of "
            "a customer of Secondline",
        )


async def receive(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    name = request.match_info["name"][:40]
    source = request.remote or ""
    try:
        record, body = await _authenticated(request, services, name)
    except Refusal as refusal:
        log.warning("webhook %s: refused a request from %s: %s", name, source, refusal.message)
        await services.anonymous.refused(
            source=source, action=ACTION, target=name, reason=refusal.code
        )
        return error_response(refusal.status, refusal.code, refusal.message)
    # Signed with the secret: what is wrong from here on is the sender's own mistake, and
    # is audited as its own event.
    event_id = None
    try:
        event = parse_event(body)
        event_id = event.id
        return await _apply(request, services, record, event)
    except Refusal as refusal:
        log.warning("webhook %s: refused event %s: %s", name, event_id, refusal.message)
        await services.audit.record(
            actor=f"connector:{record.name}",
            action=ACTION,
            target=record.name,
            outcome="denied",
            source=source,
            details={"code": refusal.code, "event": event_id, "message": refusal.message[:300]},
        )
        return error_response(refusal.status, refusal.code, refusal.message)


async def _authenticated(
    request: web.Request, services: Services, name: str
) -> tuple[ConnectorRecord, bytes]:
    try:
        record: ConnectorRecord | None = await request.app[CONNECTORS].get(name)
    except ConnectorNotFound:
        record = None
    if record is None or record.kind != WEBHOOK_KIND:
        raise Refusal(
            404, "connector_not_found", f"there is no webhook connector {name!r} on this broker"
        )
    if (request.content_length or 0) > BODY_MAX:
        raise Refusal(413, "too_large", f"the event is larger than {BODY_MAX} bytes")
    body = b""
    async for chunk in request.content.iter_any():
        body += chunk
        if len(body) > BODY_MAX:
            raise Refusal(413, "too_large", f"the event is larger than {BODY_MAX} bytes")
    try:
        verify(record.credential, request.headers.get(HEADER, ""), body, _now(services))
    except SignatureError as exc:
        raise Refusal(401, exc.code, exc.message) from None
    return record, body


def _now(services: Services) -> float:
    return services.clock().timestamp()


async def _apply(
    request: web.Request, services: Services, record: ConnectorRecord, event: EventIn
) -> web.Response:
    known = await ticket_of_external(services, record.prefix, event.ticket.id)
    if known is None:
        check_new(event, record)
    now = services.clock()
    try:
        async with services.db() as db, db.begin():
            await db.execute(
                delete(WebhookReceipt).where(
                    WebhookReceipt.connector_id == record.id,
                    WebhookReceipt.received_at < now - KEEP,
                )
            )
            db.add(WebhookReceipt(connector_id=record.id, event_id=event.id, received_at=now))
    except IntegrityError:
        raise Refusal(
            409,
            "duplicate_event",
            f"event {event.id} was received already; nothing was changed (a sender retrying "
            "after a lost answer can take this as delivered)",
        ) from None
    mirror = request.app[CONNECTOR_SYNC].mirror
    try:
        line = await mirror.apply(record, event.ticket.id, remote_of(event, record))
    except BaseException:
        # Not applied: the sender's retry of this event must not be taken for a replay.
        async with services.db() as db, db.begin():
            await db.execute(
                delete(WebhookReceipt).where(
                    WebhookReceipt.connector_id == record.id,
                    WebhookReceipt.event_id == event.id,
                )
            )
        raise
    if line:
        log.info("connector %s: %s", record.name, line)
    ticket_id = await ticket_of_external(services, record.prefix, event.ticket.id)
    return web.json_response(
        {
            "event": event.id,
            "external": f"{record.prefix}-{event.ticket.id}",
            "ticket": None if ticket_id is None else f"T-{ticket_id}",
            "result": line or "no change",
        }
    )
