"""What the stand-ins of ticket systems share (tests/support/zammad_standin.py,
znuny_standin.py): an aiohttp server on a loopback port of the test's event loop, which
:meth:`StandIn.stop` takes away and :meth:`StandIn.start` brings back on the same port (an
outage), a log of every request it answered, and rate limiting on demand (``429`` with
``Retry-After``, as a system or the proxy in front of it answers).

The broker under test is another process and reaches the stand-in over HTTP only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Seen:
    """One request the stand-in answered: method, path, query string and status."""

    method: str
    path: str
    query: str
    status: int


class StandIn:
    """The server; subclasses add their routes in :meth:`routes`."""

    def __init__(self) -> None:
        self.port = 0
        self.seen: list[Seen] = []
        #: The next this many requests are answered 429 with ``Retry-After: retry_after``.
        self.rate_limited = 0
        self.retry_after = "1"
        #: Set by each request answered after a 429, the proof that the client waited.
        self.after_429 = asyncio.Event()
        self._limited_once = False
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.rate_limited > 0:
            self.rate_limited -= 1
            self._limited_once = True
            self.seen.append(Seen(request.method, request.path, request.query_string, 429))
            return web.json_response(
                {"error": "Too Many Requests"},
                status=429,
                headers={"Retry-After": self.retry_after},
            )
        response = await handler(request)
        self.seen.append(Seen(request.method, request.path, request.query_string, response.status))
        if self._limited_once:
            self.after_429.set()
        return response

    async def start(self) -> None:
        """Serve (again) on the port; the first start picks a free one."""
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024**2)
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        if self.port == 0:
            server = site._server
            assert isinstance(server, asyncio.Server)
            self.port = int(server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop serving: from now on connections to the port are refused."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> StandIn:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
