"""Enrollment tokens and enrolled agents: create, list, show, revoke.

Every call is limited to the caller's customers: a token or agent of another customer is
answered as not existing. Tokens and revocation need the ``admin`` scope; reading agents
needs ``read``.
"""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field

from broker.agents import agent_store, tokens
from broker.agents.agent_store import AgentRecord
from broker.agents.feature import AGENT_REGISTRY
from broker.api.cluster_control import tell_nodes
from broker.api.routing import ApiContext, ApiRouter, QueryParam
from broker.errors import InputError
from broker.rules import InvalidName, parse_customer_name
from broker.sessions.runtime import SESSIONS

router = ApiRouter(tag="agents")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EnrollTokenCreate(Strict):
    customer: str | None = Field(default=None, max_length=63)
    labels: dict[str, str] = Field(default_factory=dict, max_length=tokens.LABELS_MAX)
    consent: str = Field(default="attended", max_length=16)
    ttl_seconds: int = Field(default=tokens.DEFAULT_TTL_SECONDS)
    uses: int = Field(default=1)


class EnrollTokenOut(BaseModel):
    id: str
    customer: str
    labels: dict[str, str]
    consent: str
    status: str
    uses_left: int
    max_uses: int
    created_by: str
    created_at: dt.datetime
    expires_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None


class NewEnrollTokenOut(EnrollTokenOut):
    token: str


class AgentOut(BaseModel):
    id: str
    name: str
    customer: str
    status: str  # online | offline | revoked
    online: bool
    last_seen: dt.datetime | None
    connected_at: dt.datetime | None
    consent: str
    labels: dict[str, str]
    facts: dict[str, object]
    facts_at: dt.datetime | None
    key_fingerprint: str
    enrolled_at: dt.datetime
    enrolled_with: str
    revoked_at: dt.datetime | None
    revoked_by: str | None


def _token_out(found: tokens.TokenRow, now: dt.datetime) -> EnrollTokenOut:
    row = found.row
    return EnrollTokenOut(
        id=row.id,
        customer=found.customer,
        labels=dict(row.labels),
        consent=row.consent,
        status=tokens.token_status(row, now),
        uses_left=row.uses_left,
        max_uses=row.max_uses,
        created_by=row.created_by,
        created_at=row.created_at,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


def _agent_out(ctx: ApiContext, rec: AgentRecord) -> AgentOut:
    registry = ctx.request.app.get(AGENT_REGISTRY)
    # The registry knows this node's tunnels at once; the table tells about other nodes.
    online = not rec.revoked and (
        rec.online or (registry is not None and registry.is_online(rec.id))
    )
    status = "revoked" if rec.revoked else "online" if online else "offline"
    return AgentOut(
        id=rec.id,
        name=rec.name,
        customer=rec.customer,
        status=status,
        online=online,
        last_seen=rec.last_seen,
        connected_at=rec.connected_at if online else None,
        consent=rec.consent,
        labels=dict(rec.labels),
        facts=dict(rec.facts),
        facts_at=rec.facts_at,
        key_fingerprint=rec.key_fingerprint,
        enrolled_at=rec.enrolled_at,
        enrolled_with=rec.enrolled_with,
        revoked_at=rec.revoked_at,
        revoked_by=rec.revoked_by,
    )


def _customer_for_token(ctx: ApiContext, given: str | None) -> str:
    allowed = ctx.principal.customers
    if given is not None:
        return given
    if allowed is not None and len(allowed) == 1:
        return next(iter(allowed))
    raise InputError(
        'say which customer the token is for (--customer C / "customer")',
        code="customer_missing",
        status=422,
    )


@router.route(
    "POST",
    "/enrollment-tokens",
    summary="Mint an enrollment token (its text is shown once)",
    scope="admin",
    body=EnrollTokenCreate,
    response=NewEnrollTokenOut,
    status=201,
)
async def create_token(ctx: ApiContext) -> NewEnrollTokenOut:
    body = ctx.payload(EnrollTokenCreate)
    s = ctx.services
    spec = tokens.token_spec(
        customer=_customer_for_token(ctx, body.customer),
        labels=body.labels,
        consent=body.consent,
        ttl_seconds=body.ttl_seconds,
        uses=body.uses,
    )
    now = s.clock()
    async with s.db() as db, db.begin():
        new = await tokens.create_token(
            db,
            spec,
            fingerprint=s.keys.tls_fingerprint,
            created_by=ctx.principal.name,
            customers=ctx.principal.customers,
            now=now,
        )
    await s.audit.record(
        actor=ctx.principal.name,
        action="enrollment_token.create",
        target=new.row.id,
        source=ctx.source,
        details={
            "customer": new.customer,
            "consent": spec.consent,
            "uses": spec.uses,
            "expires_at": new.row.expires_at.isoformat(),
            "labels": dict(spec.labels),
        },
    )
    out = _token_out(tokens.TokenRow(new.row, new.customer), now)
    return NewEnrollTokenOut(**out.model_dump(), token=new.text)


@router.route(
    "GET",
    "/enrollment-tokens",
    summary="List enrollment tokens, newest first",
    scope="admin",
    response=EnrollTokenOut,
    many=True,
)
async def list_tokens(ctx: ApiContext) -> list[EnrollTokenOut]:
    now = ctx.services.clock()
    async with ctx.services.db() as db:
        rows = await tokens.list_tokens(db, ctx.principal.customers)
    return [_token_out(r, now) for r in rows]


@router.route(
    "DELETE",
    "/enrollment-tokens/{id}",
    summary="Revoke an enrollment token",
    scope="admin",
    response=EnrollTokenOut,
)
async def revoke_token(ctx: ApiContext) -> EnrollTokenOut:
    s = ctx.services
    now = s.clock()
    async with s.db() as db, db.begin():
        found = await tokens.revoke_token(db, ctx.path("id"), ctx.principal.customers, now)
    await s.audit.record(
        actor=ctx.principal.name,
        action="enrollment_token.revoke",
        target=found.row.id,
        source=ctx.source,
        details={"customer": found.customer},
    )
    return _token_out(found, now)


def _query_customer(ctx: ApiContext) -> str | None:
    raw = ctx.query("customer")
    if raw is None:
        return None
    try:
        return parse_customer_name(raw)
    except InvalidName as exc:
        raise InputError(str(exc), code="invalid_name") from None


_CUSTOMER_QUERY = QueryParam("customer", description="only this customer's agents")


@router.route(
    "GET",
    "/agents",
    summary="List agents with their state, facts and labels",
    response=AgentOut,
    many=True,
    query=(
        _CUSTOMER_QUERY,
        QueryParam("status", description="online, offline or revoked"),
    ),
)
async def list_agents(ctx: ApiContext) -> list[AgentOut]:
    status = ctx.query("status")
    if status not in (None, "online", "offline", "revoked"):
        raise InputError("status is online, offline or revoked")
    async with ctx.services.db() as db:
        records = await agent_store.list_agents(
            db, customers=ctx.principal.customers, customer=_query_customer(ctx)
        )
    out = [_agent_out(ctx, r) for r in records]
    return [a for a in out if status is None or a.status == status]


@router.route(
    "GET",
    "/agents/{ref}",
    summary="Show one agent (by id, or by name)",
    response=AgentOut,
    query=(_CUSTOMER_QUERY,),
)
async def show_agent(ctx: ApiContext) -> AgentOut:
    async with ctx.services.db() as db:
        rec = await agent_store.find_agent(
            db,
            ctx.path("ref"),
            customer=_query_customer(ctx),
            customers=ctx.principal.customers,
        )
    return _agent_out(ctx, rec)


@router.route(
    "POST",
    "/agents/{ref}/revoke",
    summary="Revoke an agent: its tunnel closes and it cannot connect again",
    scope="admin",
    response=AgentOut,
    query=(_CUSTOMER_QUERY,),
)
async def revoke_agent(ctx: ApiContext) -> AgentOut:
    s = ctx.services
    async with s.db() as db, db.begin():
        rec = await agent_store.find_agent(
            db,
            ctx.path("ref"),
            customer=_query_customer(ctx),
            customers=ctx.principal.customers,
        )
        changed = await agent_store.revoke_agent(db, rec.id, by=ctx.principal.name, now=s.clock())
    sessions = ctx.request.app.get(SESSIONS)
    if sessions is not None:
        # Ended as "revoked" first: the tunnel closing would end them as "agent disconnected".
        sessions.manager.end_agent_sessions(rec.id)
    registry = ctx.request.app.get(AGENT_REGISTRY)
    closed = registry.revoke(rec.id) if registry is not None else False
    await tell_nodes(
        ctx.request.app, "agent.revoke", rec.id, by=ctx.principal.name, source=ctx.source
    )
    if changed:
        await s.audit.record(
            actor=ctx.principal.name,
            action="agent.revoke",
            target=rec.id,
            source=ctx.source,
            details={"name": rec.name, "customer": rec.customer, "tunnel_closed": closed},
        )
    async with s.db() as db:
        after = await agent_store.get_agent(db, rec.id)
    assert after is not None
    return _agent_out(ctx, after)
