"""What the console keeps on the aiohttp application."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from aiohttp import web

from broker.console.api_calls import ApiCalls
from broker.console.live import LiveConnections
from broker.console.render import Renderer


@dataclass(frozen=True)
class ConsoleState:
    renderer: Renderer
    api: ApiCalls
    live: LiveConnections


CONSOLE: Final = web.AppKey("console", ConsoleState)
