"""The connectors feature: the connector store, the sync task, the ticket system the
sessions write to (``TICKETS``) set to one that also writes to the external systems, the
inbound webhook endpoint, and the hooks that queue webhook events and tell live sessions
when their ticket is gone over there (on every node of a cluster: ``notices``)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from broker.cluster.app_keys import CLUSTER
from broker.connectors.keys import CONNECTOR_SYNC, CONNECTOR_SYSTEMS, CONNECTORS
from broker.connectors.mirror import Mirror
from broker.connectors.notices import GoneNotices
from broker.connectors.outbound import change_hook
from broker.connectors.sealing import CredentialSealer
from broker.connectors.store import ConnectorStore
from broker.connectors.sync import ConnectorSync, Systems
from broker.connectors.tickets import ConnectedTickets
from broker.connectors.webhook_events import session_started_hook
from broker.connectors.webhook_inbound import INBOUND_PATH, receive
from broker.services import SERVICES
from broker.sessions.hooks import SESSION_START_HOOKS
from broker.sessions.runtime import SESSIONS
from broker.tickets import TICKET_STORE, TICKETS

log = logging.getLogger(__name__)


def tell_sessions(app: web.Application, ticket_id: int, message: str) -> None:
    """Tell the live sessions of this broker node on the ticket (a ``mirror.GoneHook``)."""
    runtime = app.get(SESSIONS)
    if runtime is None:
        return
    for live in list(runtime.manager.live.values()):
        if live.facts.ticket_id == ticket_id:
            log.info("session %s: told that %s", live.session_id, message)
            live.notice(message)


async def _connectors_ctx(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    store = app[TICKET_STORE]
    connectors = ConnectorStore(
        services.db, services.audit, services.clock, CredentialSealer(services.keys.audit_key)
    )
    sealed = await connectors.seal_plain()
    if sealed:
        log.info("%d connector credentials stored in plain text are encrypted now", sealed)
    systems = Systems()
    # The cluster feature starts first: its node's bus reaches every node (in-process alone).
    node = app[CLUSTER]
    notices = GoneNotices(
        node.bus,
        node.subjects.tickets,
        node.name,
        lambda ticket, text: tell_sessions(app, ticket, text),
    )
    await notices.start()
    mirror = Mirror(services, store, on_gone=notices.gone)
    sync = ConnectorSync(services, connectors, mirror, systems)
    app[CONNECTORS] = connectors
    app[CONNECTOR_SYSTEMS] = systems
    app[CONNECTOR_SYNC] = sync
    app[TICKETS] = ConnectedTickets(services, store, connectors, systems, wake=sync.wake)
    # The sessions feature starts after this one and takes its hooks from here.
    app[SESSION_START_HOOKS] = [*app.get(SESSION_START_HOOKS, []), session_started_hook]
    store.change_hooks.append(change_hook(services.clock))
    sync.start()
    try:
        yield
    finally:
        await sync.close()
        await notices.stop()
        await systems.close()


def setup(app: web.Application) -> None:
    """After the tickets feature: it needs the built-in store."""
    app.router.add_post(INBOUND_PATH, receive)
    app.cleanup_ctx.append(_connectors_ctx)
