"""A loopback HTTP CONNECT proxy that sends an agent's first connection to a node of its
choosing and every later one where the agent asked (the load balancer): the stand-in for
a load balancer's one pick of a full node, which HAProxy's leastconn makes only in races
the tests cannot provoke on demand. The agent's TLS runs end to end inside (every node
presents the cluster's one certificate), so the agent cannot tell, as with HAProxy.

Runs on the test's event loop; ``connects`` records each CONNECT: (asked, used)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Final

HEAD_MAX: Final = 8192
CHUNK: Final = 65536


@dataclass
class SteeringProxy:
    """``first``: ``host:port`` the first CONNECT goes to instead of the one asked for."""

    first: str
    port: int = 0
    connects: list[tuple[str, str]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    _server: asyncio.Server | None = None
    _pipes: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> SteeringProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def wait_for_connects(self, count: int) -> None:
        while len(self.connects) < count:
            self.changed.clear()
            await self.changed.wait()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            words = head[:HEAD_MAX].split(b"\r\n", 1)[0].decode("ascii").split()
            if len(words) != 3 or words[0] != "CONNECT":
                writer.write(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
                return
            asked = words[1]
            used = self.first if not self.connects else asked
            self.connects.append((asked, used))
            self.changed.set()
            host, _, port = used.rpartition(":")
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()
            self._pipes.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            writer.close()
