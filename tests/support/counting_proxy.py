"""A loopback HTTP reverse proxy that forwards every request to an upstream and records
each one: its method, path and query, and the size of its answer. The proof of which
requests a connector made of a ticket system, and how much it downloaded.

Runs on the test's event loop (aiohttp both ways); the broker under test is another process.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Final

import aiohttp
from aiohttp import web

# Headers of one hop, not of the message: aiohttp sets its own on each side (and the
# client hands the body on already decoded).
HOP: Final = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "content-encoding", "keep-alive"}
)
BODY_MAX: Final = 128 << 20


@dataclass(frozen=True)
class Seen:
    method: str
    path: str  # with the query
    status: int
    sent: int  # bytes of the request body
    received: int  # bytes of the answer's body


class CountingProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.seen: list[Seen] = []
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def received(self) -> int:
        return sum(s.received for s in self.seen)

    async def __aenter__(self) -> CountingProxy:
        self._client = aiohttp.ClientSession(auto_decompress=True)
        app = web.Application(client_max_size=BODY_MAX)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        # A socket bound here, so the port is known before the site serves it.
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.port = int(self._socket.getsockname()[1])
        await web.SockSite(self._runner, self._socket).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._client is not None:
            await self._client.close()
        if self._socket is not None:
            self._socket.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._client is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        try:
            async with self._client.request(
                request.method, self.upstream + request.path_qs, data=body, headers=headers
            ) as resp:
                data = await resp.read()
                status = resp.status
                answer = {k: v for k, v in resp.headers.items() if k.lower() not in HOP}
        except aiohttp.ClientError:
            self.seen.append(Seen(request.method, request.path_qs, 502, len(body), 0))
            return web.Response(status=502)
        self.seen.append(Seen(request.method, request.path_qs, status, len(body), len(data)))
        return web.Response(body=data, status=status, headers=answer)
