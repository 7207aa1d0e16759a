"""What the browser terminal keeps in the app (``app[TERMINALS]``): the one-time terminal
tickets that ``POST /api/v1/sessions/terminal-tickets`` mints and the WebSocket redeems, and
the open terminal sockets, closed with ``GOING_AWAY`` on shutdown."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from aiohttp import web

from broker.web.terminal_tickets import TerminalTickets


@dataclass
class Terminals:
    tickets: TerminalTickets = field(default_factory=TerminalTickets)
    sockets: set[web.WebSocketResponse] = field(default_factory=set)


TERMINALS: Final = web.AppKey("terminals", Terminals)
