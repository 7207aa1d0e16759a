"""The typed application keys of the ticket store."""

from __future__ import annotations

from typing import Final

from aiohttp import web

from broker.ports import TicketSystem
from broker.tickets.store import TicketStore

# What the session machinery writes to: the built-in store unless a connector set its own.
TICKETS: Final[web.AppKey[TicketSystem]] = web.AppKey("tickets")
# The built-in store itself, for the REST API and the help requests.
TICKET_STORE: Final = web.AppKey("ticket_store", TicketStore)
