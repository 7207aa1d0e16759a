"""``/api/v1/tickets``: the built-in ticket store over REST.

Every decision is a ``broker.rules.permissions.may_*`` over the caller, the ticket and the
agent as ``broker.tickets.access`` reads them; a refusal is audited and answered 403 with the
rule's code and reason, or 404 when the ticket belongs to a customer the caller does not
serve. Changes need a token with the ``write`` scope (staff) or the ``admin`` scope: admins
reach the rules, which let them create, assign and link but refuse them the work itself
(``admin_not_worker``), so the answer says why rather than naming a scope they cannot hold.
Attachments are uploaded as ``multipart/form-data`` (one ``file`` part) and downloaded from
``/files/tickets/{id}/attachments/{name}`` (``broker.web.ticket_downloads``), because the API's
routes answer JSON only. docs/tickets.md describes it all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

from aiohttp import BodyPartReader, hdrs

from broker.api.routing import ApiContext, ApiRouter, QueryParam
from broker.errors import ForbiddenError
from broker.rules import (
    STATUSES,
    InvalidName,
    LevelChangeRefused,
    Refused,
    StaffView,
    escalate,
    hand_back,
    may_assign,
    may_create_ticket,
    may_edit_ticket,
    may_escalate,
    may_hand_back,
    may_link_agent,
    may_open_session,
    may_resolve,
    parse_customer_name,
    parse_user_name,
)
from broker.tickets import (
    TICKET_STORE,
    NewTicket,
    TicketFilter,
    TicketInputError,
    TicketNotFound,
    TicketRefused,
)
from broker.tickets.access import Desk
from broker.tickets.schemas import (
    AssignIn,
    AttachmentOut,
    LevelChangeIn,
    LinkIn,
    NoteIn,
    NoteOut,
    ResolveIn,
    SessionCheckOut,
    TicketCreate,
    TicketDetailOut,
    TicketOut,
    attachment_out,
    detail_out,
    ticket_out,
)
from broker.tickets.sessions_hook import sessions_of

router = ApiRouter(tag="tickets")

_CHUNK = 64 * 1024


def _desk(ctx: ApiContext) -> Desk:
    return Desk(ctx.request.app[TICKET_STORE], ctx.services, ctx.principal, ctx.source)


async def _writer(desk: Desk, ctx: ApiContext) -> None:
    """Admit tokens with ``write`` (staff) or ``admin`` (admins manage tickets too)."""
    if desk.principal.scopes & {"write", "admin"}:
        return
    await ctx.services.audit.record(
        actor=desk.actor,
        action="api.scope_refused",
        target=f"{ctx.request.method} {ctx.request.path}",
        outcome="denied",
        source=ctx.source,
        details={"needed": "write or admin"},
    )
    raise ForbiddenError(
        "this needs the 'write' scope (or 'admin'), which your token does not carry; "
        "ask an admin for a token with it",
        code="scope_missing",
    )


async def _out(desk: Desk, number: int) -> TicketOut:
    summary = await desk.store.summary(number)
    if summary is None:  # tickets are never deleted; only a broken database gets here
        raise TicketNotFound(number)
    return ticket_out(summary)


@router.route(
    "POST",
    "/tickets",
    summary="Create a ticket (status new) for a customer, with agents linked",
    scope="read",
    body=TicketCreate,
    response=TicketOut,
    status=201,
)
async def create_ticket(ctx: ApiContext) -> TicketOut:
    desk = _desk(ctx)
    await _writer(desk, ctx)
    body = ctx.payload(TicketCreate)
    try:
        customer = parse_customer_name(body.customer)
    except InvalidName as exc:
        raise TicketInputError(exc.message, code=exc.code) from None
    staff = desk.staff
    target = f"customer:{customer}"
    await desk.allow(may_create_ticket(staff, customer, level=body.level), "ticket.create", target)
    agents = [await desk.agent(ref, customer) for ref in body.agents]

    try:
        info = await desk.store.create(
            NewTicket(
                title=body.title,
                customer=customer,
                description=body.description,
                requester=body.requester,
                level=body.level,
                agents=tuple(agents),
                created_by=staff.name,
            ),
            actor=desk.actor,
            source=ctx.source,
            vet_link=lambda view, agent: may_link_agent(staff, view, agent),
        )
    except TicketRefused as exc:
        raise await desk.refuse(exc.refused, "ticket.create", target) from None
    return await _out(desk, info.id)


@router.route(
    "GET",
    "/tickets",
    summary="List tickets of the customers the caller serves, newest first",
    response=TicketOut,
    many=True,
    query=(
        QueryParam("level", "integer", "1, 2 or 3"),
        QueryParam("status", "string", "new, open, pending, resolved or closed"),
        QueryParam("assignee", "string", "a staff user name"),
        QueryParam("customer", "string", "a customer name"),
        QueryParam("limit", "integer", "at most this many (1-1000, default 200)"),
    ),
)
async def list_tickets(ctx: ApiContext) -> list[TicketOut]:
    desk = _desk(ctx)
    status = ctx.query("status")
    if status is not None and status not in STATUSES:
        raise TicketInputError(
            f"status must be one of {', '.join(STATUSES)}", code="bad_status", status=400
        )
    assignee = ctx.query("assignee")
    customer = ctx.query("customer")
    try:
        assignee = None if assignee is None else parse_user_name(assignee)
        customer = None if customer is None else parse_customer_name(customer)
    except InvalidName as exc:
        raise TicketInputError(exc.message, code=exc.code) from None
    flt = TicketFilter(
        level=ctx.query_int("level", low=1, high=3),
        status=status,
        assignee=assignee,
        customer=customer,
        customers=desk.staff.customers,
        limit=ctx.query_int("limit", low=1, high=1000) or 200,
    )
    return [ticket_out(s) for s in await desk.store.list_tickets(flt)]


@router.route(
    "GET",
    "/tickets/{id}",
    summary="Show a ticket: notes, escalation history, linked agents, attachments, sessions",
    response=TicketDetailOut,
)
async def show_ticket(ctx: ApiContext) -> TicketDetailOut:
    desk = _desk(ctx)
    info = await desk.ticket(ctx.path("id"), "ticket.view")
    detail = await desk.store.detail(info.id)
    if detail is None:
        raise TicketNotFound(info.id)
    sessions = await sessions_of(ctx.request.app, ctx.services.db, info.id)
    return detail_out(detail, sessions)


def _level_refused(exc: LevelChangeRefused) -> TicketInputError:
    return TicketInputError(exc.message, code=exc.code, status=422)


@router.route(
    "POST",
    "/tickets/{id}/escalate",
    summary="Escalate to a higher level, with a reason; the assignee is cleared",
    scope="read",
    body=LevelChangeIn,
    response=TicketOut,
)
async def escalate_ticket(ctx: ApiContext) -> TicketOut:
    desk = _desk(ctx)
    await _writer(desk, ctx)
    body = ctx.payload(LevelChangeIn)
    info = await desk.ticket(ctx.path("id"), "ticket.escalate")
    await desk.allow(may_escalate(desk.staff, info.view(), body.to), "ticket.escalate", info.ref)
    try:
        change = escalate(info.level, body.to, body.reason, ticket=info.id)
    except LevelChangeRefused as exc:
        raise _level_refused(exc) from None
    await desk.store.change_level(info, change, actor=desk.actor, source=ctx.source)
    return await _out(desk, info.id)


@router.route(
    "POST",
    "/tickets/{id}/hand-back",
    summary="Hand back to a lower level, with a reason; the assignee is cleared",
    scope="read",
    body=LevelChangeIn,
    response=TicketOut,
)
async def hand_back_ticket(ctx: ApiContext) -> TicketOut:
    desk = _desk(ctx)
    await _writer(desk, ctx)
    body = ctx.payload(LevelChangeIn)
    info = await desk.ticket(ctx.path("id"), "ticket.hand_back")
    await desk.allow(may_hand_back(desk.staff, info.view(), body.to), "ticket.hand_back", info.ref)
    try:
        change = hand_back(info.level, body.to, body.reason, ticket=info.id)
    except LevelChangeRefused as exc:
        raise _level_refused(exc) from None
    await desk.store.change_level(info, change, actor=desk.actor, source=ctx.source)
    return await _out(desk, info.id)


async def _assign(ctx: ApiContext, desk: Desk, assignee: StaffView, action: str) -> TicketOut:
    info = await desk.ticket(ctx.path("id"), action)
    await desk.allow(may_assign(desk.staff, info.view(), assignee), action, info.ref)
    await desk.store.set_assignee(
        info, assignee.name, actor=desk.actor, source=ctx.source, action=action
    )
    return await _out(desk, info.id)


@router.route(
    "POST",
    "/tickets/{id}/assign",
    summary="Assign the ticket to a staff member",
    scope="read",
    body=AssignIn,
    response=TicketOut,
)
async def assign_ticket(ctx: ApiContext) -> TicketOut:
    desk = _desk(ctx)
    await _writer(desk, ctx)
    assignee = await desk.colleague(ctx.payload(AssignIn).user)
    return await _assign(ctx, desk, assignee, "ticket.assign")


@router.route(
    "POST",
    "/tickets/{id}/take",
    summary="Assign the ticket to yourself; of two people taking it at once, one wins",
    scope="read",
    response=TicketOut,
)
async def take_ticket(ctx: ApiContext) -> TicketOut:
    desk = _desk(ctx)
    await _writer(desk, ctx)
    return await _assign(ctx, desk, desk.staff, "ticket.take")


@router.route(
    "POST",
    "/tickets/{id}/link",
    summary="Link an agent (by name or id) of the ticket's customer",
    scope="read",
    body=LinkIn,
    response=TicketOut,
)
async def link_agent(ctx: ApiContext) -> TicketOut:
    desk = _desk(ctx)
    await _writer(desk, ctx)
    info = await desk.ticket(ctx.path("id"), "ticket.link")
    agent = await desk.agent(ctx.payload(LinkIn).agent, info.customer)
    await desk.allow(may_link_agent(desk.staff, info.view(), agent), "ticket.link", info.ref)
    await desk.store.link_agent(info, agent, actor=desk.actor, source=ctx.source)
    return await _out(desk, info.id)


@router.route(
    "POST",
    "/tickets/{id}/notes",
    summary="Add a note (internal unless internal is false)",
    scope="read",
    body=NoteIn,
    response=NoteOut,
    status=201,
)
async def add_note(ctx: ApiContext) -> NoteOut:
    desk = _desk(ctx)
    await _writer(desk, ctx)
    body = ctx.payload(NoteIn)
    info = await desk.ticket(ctx.path("id"), "ticket.note")
    await desk.allow(may_edit_ticket(desk.staff, info.view()), "ticket.note", info.ref)
    note = await desk.store.write_note(
        info.id,
        author=desk.actor,
        text_=body.text,
        internal=body.internal,
        seen=info,
        source=ctx.source,
    )
    assert note is not None  # only a note with an idempotency key can be a repeat
    return NoteOut(
        id=note.id,
        author=note.author,
        text=note.text,
        internal=note.internal,
        created_at=note.created_at,
        attachments=list(note.attachments),
    )


async def _chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(_CHUNK):
        yield chunk


@router.route(
    "POST",
    "/tickets/{id}/attachments",
    summary=(
        "Attach a file: multipart/form-data with one part named 'file' (its filename is the "
        "name); download it from /files/tickets/{id}/attachments/{name}"
    ),
    scope="read",
    response=AttachmentOut,
    status=201,
)
async def add_attachment(ctx: ApiContext) -> AttachmentOut:
    desk = _desk(ctx)
    await _writer(desk, ctx)
    info = await desk.ticket(ctx.path("id"), "ticket.attach")
    await desk.allow(may_edit_ticket(desk.staff, info.view()), "ticket.attach", info.ref)
    if ctx.request.content_type != "multipart/form-data":
        raise TicketInputError(
            "send the file as multipart/form-data with one part named 'file'",
            code="multipart_required",
            status=415,
        )
    reader = await ctx.request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader) or part.name != "file":
            continue
        record = await desk.store.attach(
            info,
            name=part.filename or "",
            content_type=part.headers.get(hdrs.CONTENT_TYPE),
            chunks=_chunks(part),
            actor=desk.actor,
            source=ctx.source,
        )
        return attachment_out(record, info.ref)
    raise TicketInputError("the upload has no part named 'file'", code="file_missing")


async def _status_action(ctx: ApiContext, action: str, *, solution: str | None = None) -> TicketOut:
    desk = _desk(ctx)
    await _writer(desk, ctx)
    audit_action = f"ticket.{action}"
    info = await desk.ticket(ctx.path("id"), audit_action)
    staff, view = desk.staff, info.view()
    assign_to = None
    if action == "resolve":
        allowed = await desk.allow(may_resolve(staff, view), audit_action, info.ref)
        assign_to = staff.name if allowed.assign_to_caller else None
    elif action in ("close", "reopen"):
        # The rules have no row of their own for these: whoever may work the ticket may
        # close or reopen it. may_edit_ticket also demands an open ticket, which these
        # actions never have, so it is asked about the ticket as if open; the status table
        # (in the store) then decides whether the ticket's real status allows the action.
        as_if_open = dataclasses.replace(view, status="open")
        await desk.allow(may_edit_ticket(staff, as_if_open), audit_action, info.ref)
    else:
        await desk.allow(may_edit_ticket(staff, view), audit_action, info.ref)
    await desk.store.apply_action(
        info, action, actor=desk.actor, source=ctx.source, solution=solution, assign_to=assign_to
    )
    return await _out(desk, info.id)


@router.route(
    "POST",
    "/tickets/{id}/open",
    summary="Start work: new to open",
    scope="read",
    response=TicketOut,
)
async def open_ticket(ctx: ApiContext) -> TicketOut:
    return await _status_action(ctx, "open")


@router.route(
    "POST",
    "/tickets/{id}/pending",
    summary="Wait for the customer or a third party: to pending",
    scope="read",
    response=TicketOut,
)
async def pend_ticket(ctx: ApiContext) -> TicketOut:
    return await _status_action(ctx, "set_pending")


@router.route(
    "POST",
    "/tickets/{id}/resume",
    summary="Resume a pending ticket",
    scope="read",
    response=TicketOut,
)
async def resume_ticket(ctx: ApiContext) -> TicketOut:
    return await _status_action(ctx, "resume")


@router.route(
    "POST",
    "/tickets/{id}/resolve",
    summary="Resolve with a solution (an unassigned ticket is assigned to the resolver)",
    scope="read",
    body=ResolveIn,
    response=TicketOut,
)
async def resolve_ticket(ctx: ApiContext) -> TicketOut:
    return await _status_action(ctx, "resolve", solution=ctx.payload(ResolveIn).solution)


@router.route(
    "POST",
    "/tickets/{id}/close",
    summary="Close a resolved ticket",
    scope="read",
    response=TicketOut,
)
async def close_ticket(ctx: ApiContext) -> TicketOut:
    return await _status_action(ctx, "close")


@router.route(
    "POST",
    "/tickets/{id}/reopen",
    summary="Reopen a resolved or closed ticket (it comes back open)",
    scope="read",
    response=TicketOut,
)
async def reopen_ticket(ctx: ApiContext) -> TicketOut:
    return await _status_action(ctx, "reopen")


@router.route(
    "GET",
    "/tickets/{id}/session-check",
    summary="Whether the caller may open a shell on an agent of the ticket, and if not, why",
    response=SessionCheckOut,
    query=(QueryParam("agent", "string", "agent name or id; optional with one linked agent"),),
)
async def session_check(ctx: ApiContext) -> SessionCheckOut:
    desk = _desk(ctx)
    info = await desk.ticket(ctx.path("id"), "ticket.session_check")
    agent = await desk.linked_agent(ctx.query("agent"), info)
    decision = may_open_session(desk.staff, info.view(), agent, ctx.services.clock())
    if isinstance(decision, Refused):
        return SessionCheckOut(
            ticket=info.ref,
            agent=agent.id,
            agent_name=agent.name,
            allowed=False,
            code=decision.code,
            reason=decision.reason,
            assign_to_caller=False,
            needs_consent=False,
        )
    return SessionCheckOut(
        ticket=info.ref,
        agent=agent.id,
        agent_name=agent.name,
        allowed=True,
        code=None,
        reason=None,
        assign_to_caller=decision.assign_to_caller,
        needs_consent=decision.needs_consent,
    )
