"""The sessions feature of the broker app: the session manager, the outbox worker that
writes each session to its ticket, start-up recovery and the SIGTERM drain. The ways into a
session are features of their own: ``broker.ssh_gateway`` and ``broker.web``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from broker.services import SERVICES
from broker.sessions.hooks import SESSION_START_HOOKS, SessionStartHook
from broker.sessions.manager import SessionManager
from broker.sessions.runtime import (
    SESSION_ROUTER,
    SESSIONS,
    SessionsRuntime,
    agent_tunnels,
    ticket_system,
)
from broker.tickets.outbox import OutboxWorker

log = logging.getLogger(__name__)


def setup(app: web.Application) -> None:
    """Add the session machinery and its shutdown drain."""
    app.cleanup_ctx.append(_sessions_ctx)
    # First of all shutdown handlers: sessions end (and say why) before the agent tunnels
    # they run over are closed.
    app.on_shutdown.insert(0, _drain)


async def _sessions_ctx(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    manager = SessionManager(
        services,
        tickets=lambda: ticket_system(app),
        tunnels=lambda: agent_tunnels(app),
        node=services.config.node or None,  # a cluster node's name (docs/cluster.md)
        router=lambda: app.get(SESSION_ROUTER),
    )
    hooks: list[SessionStartHook] = app.get(SESSION_START_HOOKS) or []
    manager.start_hooks = list(hooks)
    outbox = OutboxWorker(services, lambda: ticket_system(app))
    manager.finisher.wake = outbox.wake
    recovered = await manager.finisher.recover_interrupted()
    if recovered:
        log.warning("%d sessions were interrupted by the last broker stop; sealed", recovered)
    await manager.start()
    outbox.start()
    app[SESSIONS] = SessionsRuntime(manager=manager, outbox=outbox)
    try:
        yield
    finally:
        await _drain(app)


async def _drain(app: web.Application) -> None:
    """Tell every participant, end and seal every session, send the last notes."""
    runtime = app.get(SESSIONS)
    if runtime is None:
        return
    await runtime.manager.drain()
    # One last round, so notes of the sessions just ended leave before the process does.
    await runtime.outbox.close()
