"""What the stand-ins of ticket systems share (tests/support/zammad_standin.py,
znuny_standin.py): an aiohttp server on a loopback port, which :meth:`StandIn.stop` takes
away and :meth:`StandIn.start` brings back on the same port (an outage), a log of every
request it answered, and rate limiting on demand (``429`` with ``Retry-After``, as a system
or the proxy in front of it answers).

The server runs on an event loop of its own, in a thread: a test that waits for a blocking
CLI call (``connector test`` asks the system while the test waits) must not stop the
system from answering. What the test does in the system (creating a ticket, moving it) and
what the server does with a request hold :attr:`StandIn.lock`, so neither sees the other
half done. The broker under test is another process and reaches the stand-in over HTTP
only.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Concatenate, ParamSpec, TypeVar

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S", bound="StandIn")


def locked(method: Callable[Concatenate[S, P], R]) -> Callable[Concatenate[S, P], R]:
    """A test-side method of a stand-in, run holding its lock."""

    def run(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with self.lock:
            return method(self, *args, **kwargs)

    run.__doc__ = method.__doc__
    return run


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
        self.after_429 = threading.Event()
        self.lock = threading.RLock()
        self._limited_once = False
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

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
        with self.lock:
            response = await handler(request)
        self.seen.append(Seen(request.method, request.path, request.query_string, response.status))
        if self._limited_once:
            self.after_429.set()
        return response

    async def _in_thread(self, work: Awaitable[None]) -> None:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(
                target=self._loop.run_forever, name=type(self).__name__, daemon=True
            )
            self._thread.start()
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(work, self._loop))  # type: ignore[arg-type]

    async def _start(self) -> None:
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

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def start(self) -> None:
        """Serve (again) on the port; the first start picks a free one."""
        await self._in_thread(self._start())

    async def stop(self) -> None:
        """Stop serving: from now on connections to the port are refused."""
        if self._loop is not None:
            await self._in_thread(self._stop())

    async def close(self) -> None:
        """Stop serving and end the server's thread."""
        await self.stop()
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            await asyncio.to_thread(self._thread.join)
            self._loop.close()
            self._loop = self._thread = None

    async def __aenter__(self) -> StandIn:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
