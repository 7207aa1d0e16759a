"""A loopback HTTP/1.1 proxy that loses an answer: it forwards every request to the
upstream and every answer back, except that once armed, the first request that contains
:attr:`CuttingProxy.match` (in its request line, headers or body) is forwarded whole, the
upstream's answer is awaited (the proof that the upstream processed it) and then both
connections are closed without a byte of that answer reaching the client. That is a
network cut after the request was sent: the client cannot know whether it arrived.

Runs on the test's event loop; the broker under test is another process.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

CHUNK: Final = 65536


class CuttingProxy:
    def __init__(self, upstream_host: str, upstream_port: int, match: bytes) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.match = match
        self.armed = False
        self.port = 0
        #: Set once an answer was swallowed.
        self.cut = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        up_writer: asyncio.StreamWriter | None = None
        # Every path out (also a cancel at close while dialling upstream) closes both sides,
        # so no socket outlives the test's event loop.
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            except OSError:
                return
            await self._pump(reader, writer, up_reader, up_writer)
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    w.transport.abort()
            self._tasks.discard(task)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        cutting = asyncio.Event()

        async def upward() -> None:
            tail = b""  # the end of the last chunk: a match may straddle two chunks
            while data := await reader.read(CHUNK):
                if self.armed and self.match in tail + data:
                    self.armed = False
                    cutting.set()
                tail = data[-len(self.match) :]
                up_writer.write(data)
                await up_writer.drain()
            up_writer.write_eof()

        async def downward() -> None:
            while data := await up_reader.read(CHUNK):
                if cutting.is_set():
                    # The upstream answered the cut request: it was processed. Drop it all.
                    self.cut.set()
                    return
                writer.write(data)
                await writer.drain()

        up = asyncio.ensure_future(upward())
        down = asyncio.ensure_future(downward())
        try:
            await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
            if cutting.is_set():
                await down
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for side in (up, down):
                side.cancel()
                with contextlib.suppress(BaseException):
                    await side
