"""The sessions feature of the broker app: the SSH gateway, the session manager, the
outbox worker, the console terminal WebSocket, start-up recovery and the SIGTERM drain."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import WSCloseCode, web

from broker.api.routing import SERVICES
from broker.sessions.downloads import DOWNLOAD_PATH, download_transcript
from broker.sessions.gateway import Gateway
from broker.sessions.manager import SessionManager
from broker.sessions.outbox import OutboxWorker
from broker.sessions.runtime import SESSIONS, SessionsRuntime, agent_tunnels, ticket_system
from broker.sessions.terminal_ws import PATH, terminal_socket

log = logging.getLogger(__name__)


def setup(app: web.Application) -> None:
    """Add the terminal WebSocket route, the session machinery and its shutdown drain."""
    app.router.add_get(PATH, terminal_socket)
    app.router.add_get(DOWNLOAD_PATH, download_transcript)
    app.cleanup_ctx.append(_sessions_ctx)
    # First of all shutdown handlers: sessions end (and say why) before the agent tunnels
    # they run over are closed.
    app.on_shutdown.insert(0, _drain)


async def _sessions_ctx(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    manager = SessionManager(
        services, tickets=lambda: ticket_system(app), tunnels=lambda: agent_tunnels(app)
    )
    outbox = OutboxWorker(services, lambda: ticket_system(app))
    manager.finisher.wake = outbox.wake
    recovered = await manager.finisher.recover_interrupted()
    if recovered:
        log.warning("%d sessions were interrupted by the last broker stop; sealed", recovered)
    gateway = Gateway(manager)
    await gateway.start(services.config.listen_host, services.config.ssh_port)
    manager.start()
    outbox.start()
    app[SESSIONS] = SessionsRuntime(manager=manager, gateway=gateway, outbox=outbox)
    try:
        yield
    finally:
        await _drain(app)
        await gateway.stop()


async def _drain(app: web.Application) -> None:
    """Tell every participant, end and seal every session, close the browser terminals."""
    runtime = app.get(SESSIONS)
    if runtime is None:
        return
    await runtime.manager.drain()
    # One last round, so notes of the sessions just ended leave before the process does.
    await runtime.outbox.close()
    for ws in list(runtime.sockets):
        with contextlib.suppress(Exception):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"the broker is shutting down")
