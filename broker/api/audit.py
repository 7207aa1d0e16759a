"""Reading and verifying the audit log."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel

from broker.api.routing import ApiContext, ApiRouter, QueryParam

router = ApiRouter(tag="audit")


class AuditOut(BaseModel):
    seq: int
    at: dt.datetime
    actor: str
    action: str
    target: str
    outcome: str
    source: str
    details: dict[str, object]
    hash: str


class VerifyOut(BaseModel):
    ok: bool
    records: int
    first_bad_seq: int | None
    message: str


@router.route(
    "GET",
    "/audit",
    summary="Newest audit events first",
    scope="admin",
    response=AuditOut,
    many=True,
    query=(
        QueryParam("limit", "integer", "at most this many (1-1000, default 100)"),
        QueryParam("before", "integer", "only events numbered below this"),
        QueryParam("action", "string", "only this action, e.g. login.failed"),
    ),
)
async def list_audit(ctx: ApiContext) -> list[AuditOut]:
    limit = ctx.query_int("limit", low=1, high=1000) or 100
    before = ctx.query_int("before", low=1, high=2**62)
    action = ctx.query("action")
    # Anonymous refusals counted so far are written first: a read never lacks one.
    await ctx.services.anonymous.flush()
    records = await ctx.services.audit.list(limit=limit, before=before, action=action)
    return [
        AuditOut(
            seq=r.seq,
            at=r.at,
            actor=r.actor,
            action=r.action,
            target=r.target,
            outcome=r.outcome,
            source=r.source,
            details=dict(r.details),
            hash=r.hash,
        )
        for r in records
    ]


@router.route(
    "GET", "/audit/verify", summary="Verify the audit chain", scope="admin", response=VerifyOut
)
async def verify_audit(ctx: ApiContext) -> VerifyOut:
    report = await ctx.services.audit.verify()
    return VerifyOut(
        ok=report.ok,
        records=report.records,
        first_bad_seq=report.first_bad_seq,
        message=report.message,
    )
