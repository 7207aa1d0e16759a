"""The SSH-over-WebSocket tunnel adapter, shared by the agent and the broker.

asyncssh accepts a *tunnel* object whose ``create_connection(protocol_factory, host,
port)`` returns a transport and a protocol; :class:`WebSocketTunnel` provides one over any
:class:`MessageStream` (a WebSocket reduced to ``send``/``recv``/``close`` of binary
messages), so both of these work over an accepted or dialled WebSocket::

    conn = await asyncssh.connect(host, tunnel=WebSocketTunnel(stream), ...)          # broker
    conn = await asyncssh.connect_reverse(tunnel=WebSocketTunnel(stream), ...)        # agent

How bytes move:

* Writes are coalesced: everything the SSH connection writes during one event-loop turn
  is gathered and sent as one binary message (at most :data:`MAX_TUNNEL_MESSAGE` bytes)
  by a single writer task; there is no per-write queue or task, and a lone write is sent
  without a copy. The writer task exists only while bytes wait: an idle tunnel (a broker
  holds thousands) keeps no task and no coroutine frame for its sending side.
* Backpressure both ways: the writer awaits ``stream.send`` (which waits for the socket),
  and while more than the high-water mark is buffered the protocol's ``pause_writing``
  is called (``resume_writing`` below the low-water mark). ``pause_reading`` stops
  calling ``stream.recv``, so the WebSocket library stops reading the socket.
* Turns (the agent's side): given a :class:`agent.send_turns.SendTurns`, the transport
  tells it the queue's level after every write and every message sent, and hands it to
  the channels as the extra info ``send_turns``; they stop reading their processes while
  the queue is full and take turns when it drains, because asyncssh itself ignores
  ``pause_writing``.
* ``recv`` returning ``None`` (the WebSocket closed) or raising ends the connection:
  the protocol's ``connection_lost`` is called exactly once.

:class:`WebsocketsStream` adapts a ``websockets`` connection (client or server side)
and turns Nagle off on its socket. The broker adapts aiohttp's ``WebSocketResponse``
the same way (``send_bytes``, ``receive`` returning ``None`` on close, ``close``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Callable, Iterable, Mapping
from typing import Final, Protocol

from websockets.asyncio.connection import Connection
from websockets.exceptions import ConnectionClosed

from agent.errors import TunnelProtocolError
from agent.protocol import MAX_TUNNEL_MESSAGE
from agent.send_turns import SendTurns

logger = logging.getLogger(__name__)

#: Above this many buffered bytes the protocol is asked to pause writing.
WRITE_HIGH_WATER: Final = 4 * MAX_TUNNEL_MESSAGE
WRITE_LOW_WATER: Final = MAX_TUNNEL_MESSAGE
CLOSE_TIMEOUT: Final = 5.0
#: The rate a tunnel socket's kernel buffers are sized for (PERFORMANCE.md's throughput
#: target), and their bounds: the floor covers a LAN, the cap a 40 ms link.
TUNNEL_RATE: Final = 100_000_000
TUNNEL_BUFFER_MIN: Final = 128 * 1024
TUNNEL_BUFFER_MAX: Final = 4 * 1024 * 1024
#: The extra info (``get_extra_info``) of a tunnel's SSH connection that holds the
#: bandwidth-delay product its socket buffer was sized to (the broker sizes its session
#: channels' windows from it: broker.sessions.hub_agent.channel_window).
BDP_INFO: Final = "tunnel_bdp"
#: Where ``struct tcp_info`` (linux/tcp.h) holds ``tcpi_rtt``, in microseconds: eight
#: one-byte fields, then fifteen 32-bit ones before it.
_TCPI_RTT_OFFSET: Final = 68


class MessageStream(Protocol):
    """What a WebSocket looks like to the tunnel: binary messages in and out."""

    async def send(self, data: bytes) -> None:
        """Send one binary message; return when the stream accepted it (backpressure)."""

    async def recv(self) -> bytes | None:
        """Receive one binary message; ``None`` once the stream is closed."""

    async def close(self) -> None:
        """Close the stream (idempotent)."""


class TunnelTransport(asyncio.Transport):
    """An asyncio transport whose bytes travel as messages of a :class:`MessageStream`."""

    # Slots: a broker holds thousands of idle tunnels, and an instance dict of this many
    # attributes is several hundred bytes more than the slots.
    __slots__ = (
        "_closed",
        "_closed_waiter",
        "_closing",
        "_high",
        "_loop",
        "_low",
        "_paused",
        "_pending",
        "_pending_size",
        "_protocol",
        "_protocol_paused",
        "_reader",
        "_resumed",
        "_sending",
        "_shutdown_task",
        "_stream",
        "_turns",
        "_writer",
    )

    def __init__(
        self,
        stream: MessageStream,
        protocol: asyncio.BaseProtocol,
        loop: asyncio.AbstractEventLoop,
        extra: Mapping[str, object] | None = None,
        turns: SendTurns | None = None,
    ) -> None:
        super().__init__({**(extra or {}), "send_turns": turns})
        self._stream = stream
        #: Told the queue's level after every change (the agent's channels take turns).
        self._turns = turns
        self._sending = 0  # bytes of the message being sent: still queued
        self._protocol = protocol
        self._loop = loop
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._high = WRITE_HIGH_WATER
        self._low = WRITE_LOW_WATER
        self._protocol_paused = False
        self._closing = False
        # Waiting is made on demand, not kept as asyncio Events (a broker holds thousands
        # of idle tunnels, and an Event is a few hundred bytes): the futures below exist
        # only while someone waits on them.
        self._paused = False
        #: What the reader waits on while paused (pause_reading) with a message in hand.
        self._resumed: asyncio.Future[None] | None = None
        self._closed = False
        #: What wait_closed() callers wait on until the protocol was told.
        self._closed_waiter: asyncio.Future[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        #: Sends what is buffered; None while nothing is (started by write and close).
        self._writer: asyncio.Task[None] | None = None
        self._shutdown_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Tell the protocol it is connected and start moving bytes."""
        self._protocol.connection_made(self)
        self._reader = self._loop.create_task(self._read_loop())

    # -- asyncio.WriteTransport -------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer ``data``; the writer task sends it from the next loop turn on."""
        if self._closing or not data:
            return
        chunk = data if isinstance(data, bytes) else bytes(data)
        self._pending.append(chunk)
        self._pending_size += len(chunk)
        self._start_writer()
        if self._turns is not None:
            self._turns.level(self._pending_size + self._sending)
        if not self._protocol_paused and self._pending_size > self._high:
            self._protocol_paused = True
            self._call_protocol("pause_writing")

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        """Buffer several chunks (they still leave as one message)."""
        for data in list_of_data:
            self.write(data)

    def can_write_eof(self) -> bool:
        """A WebSocket cannot half-close."""
        return False

    def get_write_buffer_size(self) -> int:
        """Bytes buffered and not yet handed to the stream."""
        return self._pending_size

    def get_write_buffer_limits(self) -> tuple[int, int]:
        """(low, high) water marks."""
        return self._low, self._high

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """Set the water marks (defaults: 1 MiB and 256 KiB)."""
        self._high = WRITE_HIGH_WATER if high is None else high
        self._low = min(self._high, WRITE_LOW_WATER if low is None else low)

    def abort(self) -> None:
        """Close at once, dropping what is buffered."""
        self._closing = True
        self._pending.clear()
        self._pending_size = 0
        self._start_shutdown(None)

    # -- asyncio.ReadTransport --------------------------------------------------------

    def pause_reading(self) -> None:
        """Stop receiving messages until :meth:`resume_reading`."""
        self._paused = True

    def resume_reading(self) -> None:
        """Receive messages again."""
        self._paused = False
        _wake(self._resumed)
        self._resumed = None

    def is_reading(self) -> bool:
        """True unless paused or closing."""
        return not self._paused and not self._closing

    # -- asyncio.BaseTransport --------------------------------------------------------

    def close(self) -> None:
        """Send what is buffered, then close the stream."""
        if self._closing:
            return
        self._closing = True
        if self._reader is not None:
            self._reader.cancel()
        # The writer sends what is buffered first and then shuts down; without one, now.
        if self._writer is None:
            self._start_shutdown(None)

    def is_closing(self) -> bool:
        """True once close or abort was called, or the stream ended."""
        return self._closing

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        """Replace the protocol."""
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        """The protocol."""
        return self._protocol

    async def wait_closed(self) -> None:
        """Wait until the stream is closed and the protocol was told."""
        if self._closed:
            return
        if self._closed_waiter is None:
            self._closed_waiter = self._loop.create_future()
        # Shielded: one cancelled caller must not cancel the others' wait.
        await asyncio.shield(self._closed_waiter)

    # -- internals --------------------------------------------------------------------

    def _start_writer(self) -> None:
        # Its first step runs after the current loop turn's callbacks: the writes they
        # make leave together, as they did when an idle writer was woken.
        if self._writer is None:
            self._writer = self._loop.create_task(self._write_loop())

    async def _while_paused(self) -> None:
        """Return once reading is not paused (at once when it is not)."""
        while self._paused:
            if self._resumed is None:
                self._resumed = self._loop.create_future()
            await self._resumed

    def _take(self) -> bytes:
        """Remove and return up to one message's worth of buffered bytes."""
        pending = self._pending
        first = pending[0]
        if len(pending) == 1 and len(first) <= MAX_TUNNEL_MESSAGE:
            pending.clear()
            self._pending_size = 0
            return first
        parts: list[bytes] = []
        size = 0
        index = 0
        while index < len(pending) and size < MAX_TUNNEL_MESSAGE:
            piece = pending[index]
            room = MAX_TUNNEL_MESSAGE - size
            if len(piece) > room:
                parts.append(piece[:room])
                pending[index] = piece[room:]
                size += room
                break
            parts.append(piece)
            size += len(piece)
            index += 1
        del pending[:index]
        self._pending_size -= size
        return b"".join(parts)

    async def _write_loop(self) -> None:
        try:
            while self._pending:
                message = self._take()
                self._sending = len(message)
                await self._stream.send(message)
                self._sending = 0
                if self._turns is not None:
                    self._turns.level(self._pending_size)
                if self._protocol_paused and self._pending_size <= self._low:
                    self._protocol_paused = False
                    self._call_protocol("resume_writing")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a task boundary: the stream failed under us
            logger.debug("tunnel send failed: %r", exc)
            # self._writer stays set: no other writer starts on the failed stream.
            self._start_shutdown(exc)
            return
        # Nothing buffered: the task ends (write starts the next one) with nothing awaited
        # between the check above and here, so no write can be left without a writer.
        self._writer = None
        if self._closing:
            self._start_shutdown(None)

    async def _read_loop(self) -> None:
        error: Exception | None = None
        try:
            while True:
                if self._paused:
                    await self._while_paused()
                data = await self._stream.recv()
                if data is None:
                    break
                # Paused while recv was pending: hold this one message until resumed.
                if self._paused:
                    await self._while_paused()
                self._protocol.data_received(data)  # type: ignore[attr-defined]
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a task boundary: the stream or the protocol failed
            logger.debug("tunnel receive failed: %r", exc)
            error = exc
        self._closing = True
        self._start_shutdown(error)

    def _start_shutdown(self, exc: Exception | None) -> None:
        if self._shutdown_task is None:
            self._shutdown_task = self._loop.create_task(self._shutdown(exc))

    async def _shutdown(self, exc: Exception | None) -> None:
        current = asyncio.current_task()
        for task in (self._reader, self._writer):
            if task is not None and task is not current:
                task.cancel()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self._stream.close()
        except asyncio.CancelledError:
            raise
        except Exception as close_exc:  # a task boundary: closing a dead stream may fail
            logger.debug("closing the tunnel stream failed: %r", close_exc)
        self._pending.clear()
        self._pending_size = 0
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._closed = True
            _wake(self._closed_waiter)

    def _call_protocol(self, name: str) -> None:
        method: Callable[[], None] | None = getattr(self._protocol, name, None)
        if method is None:
            return
        try:
            method()
        except Exception:  # asyncio's own transports log protocol callback failures too
            logger.exception("protocol %s() failed", name)


def _wake(waiter: asyncio.Future[None] | None) -> None:
    """Resolve ``waiter`` unless there is none or it is done (its waiter was cancelled)."""
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class WebSocketTunnel:
    """An asyncssh tunnel over one :class:`MessageStream` (one SSH connection per tunnel)."""

    __slots__ = ("_extra", "_stream", "_transport", "_turns")

    def __init__(
        self,
        stream: MessageStream,
        *,
        extra_info: Mapping[str, object] | None = None,
        turns: SendTurns | None = None,
    ) -> None:
        self._stream = stream
        self._extra = dict(extra_info or {})
        self._turns = turns
        self._transport: TunnelTransport | None = None

    async def create_connection(
        self,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        host: str,
        port: int,
    ) -> tuple[TunnelTransport, asyncio.BaseProtocol]:
        """Start ``protocol_factory()`` over the stream; ``host``/``port`` are only labels."""
        if self._transport is not None:
            raise RuntimeError("a WebSocketTunnel carries a single connection")
        protocol = protocol_factory()
        extra = {"peername": (host, port), **self._extra}
        self._transport = TunnelTransport(
            self._stream, protocol, asyncio.get_running_loop(), extra, self._turns
        )
        self._transport.start()
        return self._transport, protocol

    def close(self) -> None:
        """Close the connection's transport, if one was created."""
        if self._transport is not None:
            self._transport.close()

    async def wait_closed(self) -> None:
        """Wait until the transport is closed."""
        if self._transport is not None:
            await self._transport.wait_closed()


def buffer_for(rtt_us: int) -> int:
    """A tunnel socket's kernel buffer when its round trip is ``rtt_us`` microseconds:
    the bandwidth-delay product at :data:`TUNNEL_RATE`, within the floor and the cap."""
    wanted = TUNNEL_RATE * rtt_us // 1_000_000
    return max(TUNNEL_BUFFER_MIN, min(TUNNEL_BUFFER_MAX, wanted))


def size_tunnel_buffer(sock: socket.socket, option: int) -> int | None:
    """Size the socket's send (``SO_SNDBUF``, the agent) or receive (``SO_RCVBUF``, the
    broker) buffer from the round trip the kernel measured during the TLS and WebSocket
    handshakes; None where the kernel does not say (not Linux).

    Left to itself Linux grows both to megabytes when the broker reads slower than the
    agent sends, and everything in them is ahead of a keystroke's echo: 3-4 MB waited in
    the agent's send buffer with 50 sessions streaming, then, with that one bounded, as
    much in the broker's receive buffer, half a second at the broker's pace. Sized to what
    the link needs to run at TUNNEL_RATE, the rest waits in the agent, where the channels
    take turns (agent.send_turns)."""
    tcp_info = getattr(socket, "TCP_INFO", None)
    if tcp_info is None:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, tcp_info, 104)
        (rtt_us,) = struct.unpack_from("I", info, _TCPI_RTT_OFFSET)
        size = buffer_for(rtt_us)
        sock.setsockopt(socket.SOL_SOCKET, option, size)
    except (OSError, struct.error):
        return None
    return size


class WebsocketsStream:
    """:class:`MessageStream` over a ``websockets`` asyncio connection (either side)."""

    def __init__(self, websocket: Connection) -> None:
        self._ws = websocket
        sock = websocket.transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Keystrokes are tiny messages: do not let Nagle hold them back.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            size_tunnel_buffer(sock, socket.SO_SNDBUF)

    async def send(self, data: bytes) -> None:
        """Send one binary message (waits while the socket's buffer is full)."""
        await self._ws.send(data)

    async def recv(self) -> bytes | None:
        """Next binary message, or ``None`` once the WebSocket is closed."""
        try:
            message = await self._ws.recv()
        except ConnectionClosed:
            return None
        if isinstance(message, str):
            raise TunnelProtocolError("a text message arrived on the SSH tunnel")
        return message

    async def close(self) -> None:
        """Close the WebSocket (normal closure)."""
        await self._ws.close()
