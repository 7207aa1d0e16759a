"""The connectors feature: the connector store, the sync task, and the ticket system the
sessions write to (``TICKETS``) set to one that also writes to the external systems."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from broker.connectors.keys import CONNECTOR_SYNC, CONNECTOR_SYSTEMS, CONNECTORS
from broker.connectors.mirror import Mirror
from broker.connectors.outbound import change_hook
from broker.connectors.sealing import CredentialSealer
from broker.connectors.store import ConnectorStore
from broker.connectors.sync import ConnectorSync, Systems
from broker.connectors.tickets import ConnectedTickets
from broker.services import SERVICES
from broker.tickets import TICKET_STORE, TICKETS

log = logging.getLogger(__name__)


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
    sync = ConnectorSync(services, connectors, Mirror(services, store), systems)
    app[CONNECTORS] = connectors
    app[CONNECTOR_SYSTEMS] = systems
    app[CONNECTOR_SYNC] = sync
    app[TICKETS] = ConnectedTickets(services, store, connectors, systems)
    store.change_hooks.append(change_hook(services.clock))
    sync.start()
    try:
        yield
    finally:
        await sync.close()
        await systems.close()


def setup(app: web.Application) -> None:
    """After the tickets feature: it needs the built-in store."""
    app.cleanup_ctx.append(_connectors_ctx)
