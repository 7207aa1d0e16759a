"""A loopback TCP proxy whose network can be cut and restored, for fault tests.

The test puts it between two real peers (an agent and the broker): the agent dials the
proxy, the proxy dials the upstream address and copies bytes both ways.

:meth:`BlackholeProxy.cut` behaves as a network that silently drops everything: the proxy
stops *reading* both sides of every connection, and closes nothing. What the peers send
waits in the kernel's socket buffers (then in the senders' own buffers once the receive
window is full), exactly as unacknowledged packets do; neither side sees a FIN or a RST,
so only its own timers (keepalives, pings) can tell it that the peer is gone. New
connections are accepted by the kernel (as a SYN would be retried) but not connected
upstream until the network is back. :meth:`BlackholeProxy.restore` lets everything
through again, held bytes first and in order; a peer that gave up in between meets the
other side's held bytes and a closed socket, as after a real outage.

While cut, the proxy notes which direction had bytes waiting (:meth:`wait_held`), so a
test can wait for the proof that traffic was really blackholed instead of sleeping.

The proxy runs its own event loop in a thread of its own: a network does not pause while
the test blocks its loop (the `secondline` CLI runs as a blocking subprocess), and a
forwarding that did would be a cut of its own. :meth:`cut` and :meth:`restore` take effect
before they return.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Final, Literal, TypeVar

#: "up": from the dialling side (the agent) to the upstream (the broker); "down": back.
Direction = Literal["up", "down"]

CHUNK: Final = 256 * 1024
ERRORS: Final = (OSError,)
#: How long starting, stopping or switching the proxy may take (a failure bound).
CONTROL_TIMEOUT: Final = 30.0

_T = TypeVar("_T")


class BlackholeProxy:
    """``127.0.0.1:<port>`` → ``upstream``, with a switch that cuts the network.

    Use it as ``async with BlackholeProxy(host, port) as proxy:``; :attr:`port` is the
    listening port."""

    def __init__(self, upstream_host: str, upstream_port: int, *, host: str = "127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        self.host = host
        self.port = 0
        #: Connections accepted so far (including those waiting for a restore).
        self.accepted = 0
        #: Per direction: how often a read found bytes waiting at the cut, since the last cut.
        self.held: dict[Direction, int] = {"up": 0, "down": 0}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="blackhole-proxy", daemon=True
        )
        # The proxy loop's own objects, made on that loop by _start().
        self._open: asyncio.Event | None = None
        self._changed: asyncio.Event | None = None
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._sockets: set[socket.socket] = set()

    # -- life cycle (called from the test's loop) -------------------------------------------

    async def start(self) -> None:
        """Listen on a free loopback port and start accepting."""
        self._thread.start()
        await self._on_proxy_loop(self._start())

    async def close(self) -> None:
        """Stop listening, drop every connection, stop the proxy's thread."""
        if self._thread.is_alive():
            await self._on_proxy_loop(self._close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            await asyncio.to_thread(self._thread.join, CONTROL_TIMEOUT)
        if not self._loop.is_running():
            self._loop.close()

    async def __aenter__(self) -> BlackholeProxy:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- the switch (called from the test's loop) -------------------------------------------

    @property
    def is_cut(self) -> bool:
        return self._open is not None and not self._open.is_set()

    def cut(self) -> None:
        """From now on nothing passes in either direction, and nothing is closed."""
        self._now(self._switch(up=False))

    def restore(self) -> None:
        """Let everything through again, what was held first."""
        self._now(self._switch(up=True))

    async def wait_held(self, direction: Direction) -> None:
        """Return once bytes travelling ``direction`` were stopped by the current cut."""
        await self._on_proxy_loop(self._until(lambda: self.held[direction] > 0))

    async def wait_accepted(self, count: int) -> None:
        """Return once ``count`` connections were accepted in all."""
        await self._on_proxy_loop(self._until(lambda: self.accepted >= count))

    async def _on_proxy_loop(self, work: Coroutine[object, object, _T]) -> _T:
        """Run ``work`` on the proxy's loop; cancelling the caller cancels it."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(work, self._loop))

    def _now(self, work: Coroutine[object, object, None]) -> None:
        """Run ``work`` on the proxy's loop and wait for it (it does not wait for I/O)."""
        asyncio.run_coroutine_threadsafe(work, self._loop).result(CONTROL_TIMEOUT)

    # -- on the proxy's loop -----------------------------------------------------------------

    async def _start(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self._changed = asyncio.Event()
        listener = socket.create_server((self.host, 0), backlog=64)
        listener.setblocking(False)
        self._listener = listener
        self.port = int(listener.getsockname()[1])
        self._accepting = asyncio.get_running_loop().create_task(self._accept_loop(listener))

    async def _close(self) -> None:
        tasks = [t for t in (self._accepting, *self._connections) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for sock in list(self._sockets):
            _close(sock)
        self._sockets.clear()
        if self._listener is not None:
            self._listener.close()

    async def _switch(self, *, up: bool) -> None:
        assert self._open is not None
        if up:
            self._open.set()
        else:
            self.held = {"up": 0, "down": 0}
            self._open.clear()
        self._notify()

    async def _until(self, predicate: Callable[[], bool]) -> None:
        while True:
            changed = self._changed
            assert changed is not None
            if predicate():
                return
            await changed.wait()

    def _notify(self) -> None:
        # A fresh event per change: every waiter sees each change, none clears another's.
        if self._changed is not None:
            self._changed.set()
        self._changed = asyncio.Event()

    # -- forwarding ------------------------------------------------------------------------

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            client, _ = await loop.sock_accept(listener)
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sockets.add(client)
            self.accepted += 1
            self._notify()
            task = loop.create_task(self._serve(client))
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)

    async def _serve(self, client: socket.socket) -> None:
        """Connect upstream (once the network is up) and copy both ways until both end."""
        loop = asyncio.get_running_loop()
        upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        upstream.setblocking(False)
        self._sockets.add(upstream)
        assert self._open is not None
        try:
            await self._open.wait()  # a connection attempted during a cut waits for the restore
            await loop.sock_connect(upstream, self.upstream)
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pumps = [
                loop.create_task(self._pump(client, upstream, "up")),
                loop.create_task(self._pump(upstream, client, "down")),
            ]
            try:
                # One side failing (reset, broken pipe) ends the connection for both.
                for finished in asyncio.as_completed(pumps):
                    if not await finished:
                        break
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        except ERRORS:
            pass  # the upstream refused, or a peer went away: drop the connection
        finally:
            for sock in (client, upstream):
                self._sockets.discard(sock)
                _close(sock)

    async def _pump(self, src: socket.socket, dst: socket.socket, direction: Direction) -> bool:
        """Copy ``src`` to ``dst`` until EOF (True) or an error (False). While the network
        is cut, bytes that arrive on ``src`` are left unread."""
        loop = asyncio.get_running_loop()
        assert self._open is not None
        try:
            while True:
                await _readable(src)
                if not self._open.is_set():
                    self.held[direction] += 1
                    self._notify()
                    await self._open.wait()
                # No await between the check above and the read: a cut() cannot slip in.
                data = await loop.sock_recv(src, CHUNK)
                if not data:
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)
                    return True
                await loop.sock_sendall(dst, data)
        except ERRORS:
            return False


async def _readable(sock: socket.socket) -> None:
    """Wait until ``sock`` has bytes (or EOF) to read, without reading them."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    fd = sock.fileno()
    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()
