"""The SSH gateway feature: the listener on ``config.ssh_port``, started after the session
machinery it hands sessions to (``app[SESSIONS]``) and stopped before it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Final

from aiohttp import web

from broker.services import SERVICES
from broker.sessions.runtime import SESSIONS
from broker.ssh_gateway.gateway import Gateway

GATEWAY: Final = web.AppKey("ssh_gateway", Gateway)


def setup(app: web.Application) -> None:
    """Add the gateway; its setup must come after the sessions feature's (it needs the manager)."""
    app.cleanup_ctx.append(_gateway_ctx)


async def _gateway_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[SERVICES].config
    gateway = Gateway(app[SESSIONS].manager)
    await gateway.start(config.listen_host, config.ssh_port)
    app[GATEWAY] = gateway
    try:
        yield
    finally:
        # The sessions' drain (an on_shutdown handler) has already told every participant
        # and ended every session; what is left here is closing the listener.
        await gateway.stop()
