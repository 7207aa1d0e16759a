"""The ticket feature: the store on the app (``TICKETS``, ``TICKET_STORE``), the end user's
help request route. The REST routes are in ``broker.api.tickets``, attachment downloads in
``broker.web.ticket_downloads``."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from broker.services import SERVICES
from broker.tickets.help_request import HELP_PATH, handle_help
from broker.tickets.keys import TICKET_STORE, TICKETS
from broker.tickets.store import TicketStore


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    store = TicketStore.from_services(app[SERVICES])
    app[TICKET_STORE] = store
    if TICKETS not in app:  # a connector feature may have put an external system there
        app[TICKETS] = store
    yield


async def _help(request: web.Request) -> web.Response:
    return await handle_help(request, request.app[TICKET_STORE])


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(_store_ctx)
    app.router.add_post(HELP_PATH, _help)
