"""Operating the cluster's nodes: draining one before it is stopped (docs/cluster.md)."""

from __future__ import annotations

from pydantic import BaseModel

from broker.api.routing import ApiContext, ApiRouter
from broker.audit import audit_target
from broker.cluster.app_keys import CLUSTER, SINGLE
from broker.cluster.bus import BusUnavailable, NoResponder
from broker.cluster.node_actions import start_drain
from broker.config import valid_node_name
from broker.errors import BrokerError, InputError, NotFoundError, UnavailableError

router = ApiRouter(tag="cluster")


class DrainOut(BaseModel):
    node: str
    draining: bool
    started: bool  # False: it was draining already


@router.route(
    "POST",
    "/nodes/{name}/drain",
    summary="Drain a node: no new sessions or agents, its agents move to the other nodes, "
    "its live sessions end at their own pace; admins",
    scope="admin",
    response=DrainOut,
)
async def drain_node(ctx: ApiContext) -> DrainOut:
    name = ctx.path("name")
    by, source = ctx.principal.name, ctx.source
    try:
        started = await _drain(ctx, name)
    except BrokerError as exc:
        await ctx.services.audit.record(
            actor=by,
            action="node.drain",
            target=audit_target(name),
            outcome="denied",
            source=source,
            details={"code": exc.code},
        )
        raise
    await ctx.services.audit.record(
        actor=by, action="node.drain", target=name, source=source, details={"started": started}
    )
    return DrainOut(node=name, draining=True, started=started)


async def _drain(ctx: ApiContext, name: str) -> bool:
    if not valid_node_name(name):
        raise InputError(
            "a node name is 1 to 32 lower-case letters, digits and dashes "
            "(`secondline cluster status` lists the nodes)",
            code="bad_node_name",
        )
    app = ctx.request.app
    node = app.get(CLUSTER)
    here = node.name if node is not None else SINGLE
    if name == here:
        return start_drain(app, by=ctx.principal.name)
    if node is None or not ctx.services.config.clustered:
        raise NotFoundError(
            f"this broker is a single node named {here!r}; drain it by that name",
            code="node_not_found",
        )
    try:
        return await node.drain_on(name, by=ctx.principal.name, source=ctx.source)
    except NoResponder:
        raise NotFoundError(
            f"no node named {name!r} answers in this cluster; `secondline cluster status` "
            "lists the nodes",
            code="node_not_found",
        ) from None
    except TimeoutError:
        raise UnavailableError(
            f"node {name} did not answer in time; try again", code="node_unreachable"
        ) from None
    except BusUnavailable:
        raise UnavailableError(
            "this node has lost the cluster bus (NATS); try again shortly, or on another node",
            code="bus_unavailable",
        ) from None
