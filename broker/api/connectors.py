"""Ticket-system connectors: add, list, test, remove (admins only). The credential goes in
with ``add`` and never comes out."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from broker.api.routing import ApiContext, ApiRouter
from broker.connectors.errors import ExternalError
from broker.connectors.keys import CONNECTOR_SYNC, CONNECTOR_SYSTEMS, CONNECTORS
from broker.connectors.remote import Health
from broker.connectors.store import ConnectorRecord, ConnectorStore, NewConnector
from broker.errors import UnavailableError

router = ApiRouter(tag="connectors")


class ConnectorIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=32)
    kind: str = Field(max_length=16)
    url: str = Field(max_length=500)
    credential: str = Field(max_length=4096, repr=False)
    customer: str | None = Field(default=None, max_length=63)
    prefix: str | None = Field(default=None, max_length=10)
    levels: str | None = Field(default=None, max_length=700)


class ConnectorOut(BaseModel):
    name: str
    kind: str
    url: str
    prefix: str
    customer: str | None
    levels: str
    customer_field: str | None
    healthy: bool
    health: str
    checked_at: str | None


class CheckOut(BaseModel):
    check: str
    ok: bool


class ConnectorTestOut(BaseModel):
    name: str
    ok: bool
    levels: str
    checks: list[CheckOut]


def _store(ctx: ApiContext) -> ConnectorStore:
    store = ctx.request.app.get(CONNECTORS)
    if store is None:
        raise UnavailableError("the connectors are not running on this broker")
    return store


def _out(record: ConnectorRecord) -> ConnectorOut:
    return ConnectorOut.model_validate(record.public())


@router.route(
    "POST",
    "/connectors",
    summary="Add a ticket-system connector",
    scope="admin",
    body=ConnectorIn,
    response=ConnectorOut,
    status=201,
)
async def add_connector(ctx: ApiContext) -> ConnectorOut:
    body = ctx.payload(ConnectorIn)
    record = await _store(ctx).add(
        NewConnector(
            name=body.name,
            kind=body.kind,
            url=body.url,
            credential=body.credential,
            customer=body.customer,
            prefix=body.prefix,
            levels=body.levels,
        ),
        actor=ctx.principal.name,
        source=ctx.source,
    )
    sync = ctx.request.app.get(CONNECTOR_SYNC)
    if sync is not None:
        sync.wake()
    return _out(record)


@router.route(
    "GET", "/connectors", summary="List the connectors", scope="admin", response=ConnectorOut,
    many=True,
)  # fmt: skip
async def list_connectors(ctx: ApiContext) -> list[ConnectorOut]:
    return [_out(r) for r in await _store(ctx).all()]


@router.route(
    "POST",
    "/connectors/{name}/test",
    summary="Check a connector: read its system, name every right or place that is missing",
    scope="admin",
    response=ConnectorTestOut,
)
async def test_connector(ctx: ApiContext) -> ConnectorTestOut:
    store = _store(ctx)
    record = await store.get(ctx.path("name"))
    systems = ctx.request.app[CONNECTOR_SYSTEMS]
    try:
        health = await systems.get(record).check()
    except ExternalError as exc:
        health = Health([(exc.message, False)])
    await store.set_health(record, health.ok, health.summary())
    await ctx.services.audit.record(
        actor=ctx.principal.name,
        action="connector.test",
        target=record.name,
        outcome="ok" if health.ok else "failed",
        source=ctx.source,
        details={"summary": health.summary()[:500]},
    )
    return ConnectorTestOut(
        name=record.name,
        ok=health.ok,
        levels=record.levels.as_text(),
        checks=[CheckOut(check=c, ok=ok) for c, ok in health.checks],
    )


@router.route(
    "DELETE",
    "/connectors/{name}",
    summary="Remove a connector (its mirrored tickets stay, in the built-in store)",
    scope="admin",
    status=204,
)
async def remove_connector(ctx: ApiContext) -> None:
    await _store(ctx).remove(ctx.path("name"), actor=ctx.principal.name, source=ctx.source)
