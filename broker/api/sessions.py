"""``/api/v1/sessions`` and ``/api/v1/transcripts``: remote sessions over REST.

Every read checks the caller's rights on the session's ticket (``broker.sessions.reads``):
a session id grants nothing by itself, and a session the caller may not read is answered
like one that does not exist (404). Kills are for admins and the session's owner; invitations
and handing control over are for whoever controls the live session now. The
transcript comes as JSON here (content, seal and chain file, what offline verification
needs); raw downloads for the console are under ``/files/sessions/{id}/...``.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from broker.api.cluster_control import kill_elsewhere, steer_elsewhere
from broker.api.routing import ApiContext, ApiRouter, QueryParam
from broker.db.models_sessions import RemoteSession
from broker.errors import ForbiddenError, InputError
from broker.keys import public_pem
from broker.rules import InvalidName, parse_agent_ref, parse_ticket_ref, parse_user_name
from broker.secret_scrubber import scrub_secrets
from broker.sessions import store
from broker.sessions.errors import SessionConflict, SessionNotFound
from broker.sessions.hub import KILL_REASON_MAX
from broker.sessions.hub_core import HubClosed, HubRefused, roles_of
from broker.sessions.reads import readable_session, transcript, transcript_format
from broker.sessions.runtime import SESSIONS
from broker.transcript import TranscriptNotFound, public_key_fingerprint
from broker.web.terminals import TERMINALS

router = ApiRouter(tag="sessions")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SessionOut(BaseModel):
    id: str
    ticket: str
    agent_id: str
    agent_name: str
    owner: str
    kind: str
    command: str | None
    via: str
    state: str
    live_here: bool
    consent: str | None
    consent_by: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    ended_at: dt.datetime | None
    end_reason: str | None
    ended_by: str | None
    exit_status: int | None
    exit_signal: str | None
    transcript_digest: str | None
    transcript_complete: bool | None


class ParticipantOut(BaseModel):
    name: str
    role: str
    via: str
    joined_at: dt.datetime
    left_at: dt.datetime | None
    left_reason: str | None


class CommandOut(BaseModel):
    command: str
    start: float | None
    duration: float | None
    exit_status: int | None


class SessionDetailOut(SessionOut):
    participants: list[ParticipantOut]
    commands: list[CommandOut]
    live_participants: list[dict[str, str]]


class TerminalTicketIn(Strict):
    ticket_id: str = Field(max_length=12)
    agent: str | None = Field(default=None, max_length=63)
    mode: Literal["open", "join", "observe"]
    session: str | None = Field(default=None, max_length=24)
    cols: int = Field(default=80, ge=1, le=1000)
    rows: int = Field(default=24, ge=1, le=1000)


class TerminalTicketOut(BaseModel):
    ticket: str
    expires_at: dt.datetime


class TranscriptOut(BaseModel):
    session: str
    format: str
    name: str
    content: str
    seal: dict[str, object] | None
    chain: str | None


class PublicKeyOut(BaseModel):
    pem: str
    fingerprint: str


def _out(row: RemoteSession, ctx: ApiContext) -> SessionOut:
    runtime = ctx.request.app.get(SESSIONS)
    return SessionOut(
        id=row.id,
        ticket=f"T-{row.ticket_id}",
        agent_id=row.agent_id,
        agent_name=row.agent_name,
        owner=row.owner,
        kind=row.kind,
        command=None if row.command is None else scrub_secrets(row.command),
        via=row.via,
        state=row.state,
        live_here=runtime is not None and row.id in runtime.manager.live,
        consent=row.consent,
        consent_by=row.consent_by,
        created_at=row.created_at,
        started_at=row.started_at,
        ended_at=row.ended_at,
        end_reason=row.end_reason,
        ended_by=row.ended_by,
        exit_status=row.exit_status,
        exit_signal=row.exit_signal,
        transcript_digest=row.transcript_digest,
        transcript_complete=row.transcript_complete,
    )


@router.route(
    "GET",
    "/sessions",
    summary="List sessions of tickets you may read, newest first",
    response=SessionOut,
    many=True,
    query=(
        QueryParam("live", "integer", "1: only sessions that have not ended"),
        QueryParam("ticket", "string", "only the sessions of this ticket (T-1042)"),
        QueryParam("limit", "integer", "at most this many (1-500, default 100)"),
    ),
)
async def list_sessions(ctx: ApiContext) -> list[SessionOut]:
    live = ctx.query_int("live", low=0, high=1) == 1
    limit = ctx.query_int("limit", low=1, high=500) or 100
    ticket_ref = ctx.query("ticket")
    ticket_id: int | None = None
    if ticket_ref is not None:
        try:
            ticket_id = parse_ticket_ref(ticket_ref)
        except InvalidName as exc:
            raise InputError(exc.message, code="invalid_name") from None
    async with ctx.services.db() as db:
        rows = await store.list_sessions(
            db, live=live, ticket_id=ticket_id, customers=ctx.principal.customers, limit=limit
        )
    return [_out(row, ctx) for row in rows]


@router.route(
    "GET",
    "/sessions/{id}",
    summary="Show a session: participants, commands, transcript digest",
    response=SessionDetailOut,
)
async def show_session(ctx: ApiContext) -> SessionDetailOut:
    row = await readable_session(
        ctx.request.app,
        ctx.services,
        ctx.principal,
        ctx.path("id"),
        action="session.read",
        source=ctx.source,
    )
    async with ctx.services.db() as db:
        people = await store.participants(db, row.id)
    runtime = ctx.request.app.get(SESSIONS)
    live = runtime.manager.get(row.id) if runtime is not None else None
    base = _out(row, ctx).model_dump()
    return SessionDetailOut(
        **base,
        participants=[
            ParticipantOut(
                name=p.name,
                role=p.role,
                via=p.via,
                joined_at=p.joined_at,
                left_at=p.left_at,
                left_reason=p.left_reason,
            )
            for p in people
        ],
        commands=[
            CommandOut(
                # Rows written before the scrubber may still hold secrets.
                command=scrub_secrets(str(c.get("command", ""))),
                start=_number(c.get("start")),
                duration=_number(c.get("duration")),
                exit_status=_integer(c.get("exit_status")),
            )
            for c in (row.commands or [])
        ],
        live_participants=(
            [{"name": m.name, "role": m.role} for m in live.core.members] if live else []
        ),
    )


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _integer(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@router.route(
    "POST",
    "/sessions/{id}/kill",
    summary="End a live session now (its transcript is still sealed); admins and the owner",
    scope=None,
    response=SessionOut,
    query=(
        QueryParam(
            "reason",
            description="why (up to 200 characters): told to the participants, put in the "
            "transcript, the ticket's note and the audit record",
        ),
    ),
)
async def kill_session(ctx: ApiContext) -> SessionOut:
    principal = ctx.principal
    reason = kill_reason(ctx.query("reason"))
    row = await readable_session(
        ctx.request.app,
        ctx.services,
        principal,
        ctx.path("id"),
        action="session.kill",
        source=ctx.source,
    )
    is_admin = principal.role == "admin" and "admin" in principal.scopes
    is_owner = principal.name == row.owner and "session" in principal.scopes
    if not (is_admin or is_owner):
        await ctx.services.audit.record(
            actor=principal.name,
            action="session.kill",
            target=row.id,
            outcome="denied",
            source=ctx.source,
            details={"reason": "not_owner_or_admin"},
        )
        raise ForbiddenError(
            f"only an admin or the session's owner ({row.owner}) may end session {row.id}",
            code="kill_refused",
        )
    runtime = ctx.request.app.get(SESSIONS)
    if row.state not in store.LIVE_STATES:
        raise SessionConflict(f"session {row.id} has ended already ({row.state})")
    killed = runtime is not None and await runtime.manager.kill(
        row.id, principal.name, source=ctx.source, reason=reason
    )
    if not killed:
        killed = await kill_elsewhere(
            ctx.request.app, row, by=principal.name, source=ctx.source, reason=reason
        )
    if not killed:
        raise SessionConflict(
            f"session {row.id} is not running on this broker node; try again in a moment"
        )
    async with ctx.services.db() as db:
        fresh = await store.get_session(db, row.id)
    return _out(fresh or row, ctx)


def kill_reason(raw: str | None) -> str:
    """The reason given for a kill: one line of at most 200 visible characters."""
    if raw is None:
        return ""
    if len(raw) > KILL_REASON_MAX or any(not c.isprintable() for c in raw):
        raise InputError(
            f"--reason must be one line of at most {KILL_REASON_MAX} characters",
            code="invalid_reason",
        )
    return raw.strip()


class InviteIn(Strict):
    user: str = Field(min_length=1, max_length=64)


class ControlIn(Strict):
    to: str = Field(min_length=1, max_length=64)


class LiveControlOut(BaseModel):
    id: str
    participants: list[dict[str, str]]
    invited: list[str]


async def _steer(ctx: ApiContext, action: str, name: str) -> LiveControlOut:
    """Invite ``name`` to, or hand control of, the live session at ``{id}``; audited."""
    principal = ctx.principal
    try:
        name = parse_user_name(name)
    except InvalidName as exc:
        raise InputError(exc.message, code="invalid_name", status=422) from None
    row = await readable_session(
        ctx.request.app, ctx.services, principal, ctx.path("id"), action=action, source=ctx.source
    )
    runtime = ctx.request.app.get(SESSIONS)
    live = runtime.manager.get(row.id) if runtime is not None else None
    target = {"user": name} if action == "session.invite" else {"to": name}
    elsewhere = None
    if live is None:
        # In a cluster the hub may run on another node: it decides there, audited here.
        app = ctx.request.app
        elsewhere = await steer_elsewhere(app, row, action, by=principal.name, name=name)
    if elsewhere is not None and elsewhere.code == "not_live":
        elsewhere, live = None, None
    if elsewhere is None and (live is None or not live.running):
        raise SessionConflict(f"session {row.id} is not live on this broker node")
    try:
        if elsewhere is not None:
            if elsewhere.code == "ending":
                raise HubClosed(elsewhere.message)
            if elsewhere.code:
                raise HubRefused(elsewhere.code, elsewhere.message)
        elif live is not None and action == "session.invite":
            live.invite(principal.name, name)
        elif live is not None:
            live.hand_over(principal.name, name)
    except (HubRefused, HubClosed) as exc:
        code = exc.code if isinstance(exc, HubRefused) else "ending"
        await ctx.services.audit.record(
            actor=principal.name,
            action=action,
            target=row.id,
            outcome="denied",
            source=ctx.source,
            details={**target, "reason": code},
        )
        if code == "not_owner":
            raise ForbiddenError(str(exc), code=f"{action.split('.')[1]}_refused") from None
        raise SessionConflict(str(exc)) from None
    await ctx.services.audit.record(
        actor=principal.name, action=action, target=row.id, source=ctx.source, details=target
    )
    if elsewhere is not None:
        people = [{"name": n, "role": r} for n, r in elsewhere.participants]
        return LiveControlOut(id=row.id, participants=people, invited=list(elsewhere.invited))
    assert live is not None
    return LiveControlOut(
        id=row.id, participants=roles_of(live.core.members), invited=sorted(live.core.invited)
    )


@router.route(
    "POST",
    "/sessions/{id}/invite",
    summary="Invite a staff member to join a live session; its owner only",
    scope="session",
    body=InviteIn,
    response=LiveControlOut,
)
async def invite_to_session(ctx: ApiContext) -> LiveControlOut:
    return await _steer(ctx, "session.invite", ctx.payload(InviteIn).user)


@router.route(
    "POST",
    "/sessions/{id}/control",
    summary="Hand control of a live session to a present joiner; its owner only",
    scope="session",
    body=ControlIn,
    response=LiveControlOut,
)
async def hand_over_control(ctx: ApiContext) -> LiveControlOut:
    return await _steer(ctx, "session.control", ctx.payload(ControlIn).to)


@router.route(
    "POST",
    "/sessions/terminal-tickets",
    summary="Mint a one-time ticket (60 s) for the console terminal WebSocket",
    scope="session",
    body=TerminalTicketIn,
    response=TerminalTicketOut,
    status=201,
)
async def terminal_ticket(ctx: ApiContext) -> TerminalTicketOut:
    body = ctx.payload(TerminalTicketIn)
    try:
        ticket_id = parse_ticket_ref(body.ticket_id)
        agent = parse_agent_ref(body.agent) if body.agent is not None else None
    except InvalidName as exc:
        raise InputError(exc.message, code="invalid_name", status=422) from None
    if body.mode == "open" and body.session is not None:
        raise InputError("mode open starts a new session: leave session out", status=422)
    if body.mode != "open":
        if body.session is None:
            raise InputError(f"mode {body.mode} needs the session to attach to", status=422)
        # The session must belong to that ticket and be readable; the rules judge at attach.
        row = await readable_session(
            ctx.request.app,
            ctx.services,
            ctx.principal,
            body.session,
            action="session.terminal_ticket",
            source=ctx.source,
        )
        if row.ticket_id != ticket_id:
            raise SessionNotFound(f"ticket T-{ticket_id} has no session {body.session}")
    token = "tt_" + secrets.token_urlsafe(32)
    try:
        grant = ctx.request.app[TERMINALS].tickets.mint(
            token,
            user_id=ctx.principal.user_id,
            staff=ctx.principal.name,
            mode=body.mode,
            ticket_id=ticket_id,
            agent=agent,
            session=body.session,
            cols=body.cols,
            rows=body.rows,
            now=time.time(),
        )
    except OverflowError as exc:
        await ctx.services.audit.record(
            actor=ctx.principal.name,
            action="session.terminal_ticket",
            target=f"T-{ticket_id}",
            outcome="denied",
            source=ctx.source,
            details={"code": "too_many_tickets", "mode": body.mode},
        )
        raise InputError(str(exc), code="too_many_tickets", status=429) from None
    return TerminalTicketOut(
        ticket=token, expires_at=dt.datetime.fromtimestamp(grant.expires_at, dt.UTC)
    )


@router.route(
    "GET",
    "/sessions/{id}/transcript",
    summary="A session's transcript (cast, txt or json bundle) with its seal and chain",
    response=TranscriptOut,
    query=(QueryParam("format", "string", "cast (default), txt or json"),),
)
async def get_transcript(ctx: ApiContext) -> TranscriptOut:
    fmt = transcript_format(ctx.query("format") or "cast")
    row = await readable_session(
        ctx.request.app,
        ctx.services,
        ctx.principal,
        ctx.path("id"),
        action="transcript.read",
        source=ctx.source,
    )
    try:
        files = await transcript(ctx.services, row.id, fmt)
    except TranscriptNotFound as exc:
        raise SessionNotFound(exc.message) from None
    await ctx.services.audit.record(
        actor=ctx.principal.name,
        action="transcript.read",
        target=row.id,
        source=ctx.source,
        details={"format": fmt},
    )
    return TranscriptOut(
        session=row.id,
        format=fmt,
        name=files.name,
        content=files.content.decode("utf-8", "replace"),
        seal=files.seal,
        chain=files.chain,
    )


@router.route(
    "GET",
    "/transcripts/public-key",
    summary="The public key transcripts are signed with (PEM), for offline verification",
    scope=None,
    public=True,
    response=PublicKeyOut,
)
async def transcript_public_key(ctx: ApiContext) -> PublicKeyOut:
    key = ctx.services.keys.transcript_key
    return PublicKeyOut(
        pem=public_pem(key).decode("ascii"),
        fingerprint=public_key_fingerprint(key.public_key()),
    )
