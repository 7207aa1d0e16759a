"""An agent tunnel's WebSocket on the raw connection, once the upgrade is done.

After the upgrade the tunnel's socket is taken off aiohttp's request machinery
(:mod:`broker.agents.ws_takeover`) and given to :class:`TunnelWebSocket`, an asyncio
protocol over the ``websockets`` library's sans-I/O core (``websockets.protocol.Protocol``,
server side, already open). aiohttp would keep, for the tunnel's whole life, the parsed
upgrade request, its request loop and handler tasks and their coroutine frames, a reader,
a writer and their queues: several kilobytes of every idle agent (PERFORMANCE.md: a broker
holds thousands). Here an idle tunnel is this object, the sans-I/O state (about 1 KB) and
the one future the tunnel's reader waits on.

What the agent may send is what RFC 6455 allows a client, and all of it is checked by
the sans-I/O core: masked frames, no reserved bits (no extension is negotiated), control
frames of at most 125 bytes and never fragmented, continuation frames only inside a
fragmented message, valid close codes and UTF-8 reasons, and no message over
``max_size`` (refused from its header, before its payload is buffered). Pings are
answered. A violation fails the WebSocket with the RFC's close code (1002, 1007, 1009)
and :attr:`TunnelWebSocket.problem` says what the agent did wrong (for the audit record);
a text message is refused with 1003, as only binary messages carry the tunnel.

It is the :class:`agent.tunnel.MessageStream` the shared tunnel adapter runs SSH over:
``recv`` hands over one binary message at a time and stops reading the socket while one
waits (backpressure); ``send`` writes one frame and waits while the socket's buffer is
over its high-water mark. Its ``close()`` does not close the WebSocket: the endpoint does,
with :meth:`TunnelWebSocket.finish`, once it has recorded why the tunnel ended (a close
frame may leave before that, the connection is closed only then), so whoever watches
the connection close can rely on the audit record being there.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from typing import Final

from aiohttp import WSCloseCode
from websockets.exceptions import PayloadTooBig
from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, Side, State

from agent.errors import TunnelProtocolError

#: How long a close frame gets to leave at broker shutdown before the socket is dropped.
SHUTDOWN_CLOSE_S: Final = 0.2
#: A message up to this size leaves with its frame header in one write (one TLS record);
#: a larger one is written as header and payload, without a copy of the payload.
JOIN_BELOW: Final = 16 * 1024
#: RFC 6455's binary frame, final, unmasked (a server never masks).
_FIN_BINARY: Final = 0x80 | Opcode.BINARY.value


def binary_frame_header(size: int) -> bytes:
    """The header of one final, unmasked binary frame of ``size`` payload bytes."""
    if size < 126:
        return struct.pack("!BB", _FIN_BINARY, size)
    if size < 1 << 16:
        return struct.pack("!BBH", _FIN_BINARY, 126, size)
    return struct.pack("!BBQ", _FIN_BINARY, 127, size)


class TunnelWebSocket(asyncio.Protocol):
    """An accepted agent WebSocket: binary messages in and out of one raw transport."""

    __slots__ = (
        "_close_reply_s",
        "_drain",
        "_ended",
        "_eof_due",
        "_finishing",
        "_fragments",
        "_inbox",
        "_lost",
        "_reading",
        "_text",
        "_transport",
        "_waiter",
        "_write_paused",
        "_ws",
        "close_code",
        "problem",
    )

    def __init__(self, *, max_size: int, close_reply_s: float) -> None:
        self._ws = Protocol(Side.SERVER, state=State.OPEN, max_size=max_size)
        self._close_reply_s = close_reply_s
        self._transport: asyncio.Transport | None = None
        #: Messages received and not yet taken by recv (reading pauses while any waits).
        self._inbox: list[bytes] = []
        #: The parts of a fragmented binary message so far.
        self._fragments: list[bytes] | None = None
        self._reading = True
        #: Set once no more messages will come (close frame, failure, connection lost).
        self._ended = False
        self._text = False
        self._lost = False
        #: The sans-I/O core wants the connection closed (close handshake done, or the
        #: WebSocket failed): finish() does it, once the endpoint has recorded why.
        self._eof_due = False
        self._finishing = False
        self._write_paused = False
        #: What recv waits on while the inbox is empty.
        self._waiter: asyncio.Future[None] | None = None
        #: What send and finish wait on: resume_writing, or the connection lost.
        self._drain: asyncio.Future[None] | None = None
        self.problem = ""
        self.close_code: int = WSCloseCode.OK

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._ws.receive_data(data)
        self._take_events()

    def eof_received(self) -> bool | None:
        self._ws.receive_eof()
        self._take_events()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._ws.receive_eof()
        self._ws.data_to_send()  # nowhere to send it now
        self._end()
        _wake(self._drain)
        self._drain = None

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        _wake(self._drain)
        self._drain = None

    # -- agent.tunnel.MessageStream ----------------------------------------------------

    async def recv(self) -> bytes | None:
        """The next binary message, or None once the WebSocket is closed."""
        while not self._inbox:
            if self._ended:
                if self._text:
                    raise TunnelProtocolError(self.problem)
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        message = self._inbox.pop(0)
        if not self._inbox:
            self._resume_reading()
        return message

    async def send(self, data: bytes) -> None:
        """Send one binary message; waits while the socket's write buffer is full."""
        transport = self._transport
        if transport is None or self._lost or self._ws.state is not State.OPEN:
            raise ConnectionResetError("the tunnel's WebSocket is closed")
        header = binary_frame_header(len(data))
        if len(data) < JOIN_BELOW:
            transport.write(header + data)
        else:
            transport.writelines((header, data))
        while self._write_paused and not self._lost:
            await self._wait_drain()
        if self._lost:
            raise ConnectionResetError("the tunnel's WebSocket is closed")

    async def close(self) -> None:
        """The SSH connection is done with the stream; the endpoint will finish it."""

    # -- the endpoint's side ------------------------------------------------------------

    async def finish(self) -> None:
        """Close the WebSocket with :attr:`close_code` and wait (bounded) for the agent's
        close frame; then the connection is closed (idempotent)."""
        transport = self._transport
        if transport is None or self._lost or self._finishing:
            return
        self._finishing = True
        if self._ws.state is State.OPEN:
            self._ws.send_close(self.close_code)
            self._flush()
        if self._eof_due:
            transport.close()
        else:
            # Read on to see the agent's answer; what arrives before it is dropped.
            self._inbox.clear()
            self._resume_reading()
        wait = SHUTDOWN_CLOSE_S if self.close_code == WSCloseCode.GOING_AWAY else None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait or self._close_reply_s):
                while not self._lost:
                    await self._wait_drain()
        if not self._lost:
            transport.abort()

    def abort(self) -> None:
        """Drop the connection at once (shutdown, past its grace)."""
        if self._transport is not None and not self._lost:
            self._transport.abort()

    # -- internals ----------------------------------------------------------------------

    def _take_events(self) -> None:
        ws = self._ws
        for frame in ws.events_received():
            if self._ended or not isinstance(frame, Frame):
                break  # nothing after a close frame or a refused message is handed on
            opcode = frame.opcode
            if opcode is Opcode.BINARY:
                if frame.fin:
                    self._inbox.append(bytes(frame.data))
                else:
                    self._fragments = [bytes(frame.data)]
            elif opcode is Opcode.CONT and self._fragments is not None:
                self._fragments.append(bytes(frame.data))
                if frame.fin:
                    self._inbox.append(b"".join(self._fragments))
                    self._fragments = None
            elif opcode is Opcode.TEXT or opcode is Opcode.CONT:
                # A text message (or its continuation): not the tunnel's.
                if not self._text:
                    self._text = True
                    self.problem = "the agent sent a text message on the SSH tunnel"
                    self.close_code = WSCloseCode.UNSUPPORTED_DATA
                    self._end()
            elif opcode is Opcode.CLOSE:
                self._end()
            # Pings were answered by the sans-I/O core (queued below); pongs mean nothing.
        if ws.parser_exc is not None and not self.problem:
            if isinstance(ws.parser_exc, EOFError):
                pass  # the agent's end went away without a close frame: no protocol breach
            elif isinstance(ws.parser_exc, PayloadTooBig):
                self.problem = "the agent sent a WebSocket message larger than the limit"
            else:
                self.problem = f"the agent broke the WebSocket protocol ({ws.parser_exc})"
            self._end()
        self._flush()
        if self._inbox:
            self._wake_reader()
            if self._reading and self._transport is not None and not self._ended:
                # One message waits: read no more until the tunnel took it.
                self._reading = False
                self._transport.pause_reading()

    def _flush(self) -> None:
        transport = self._transport
        for data in self._ws.data_to_send():
            if transport is None or self._lost:
                return
            if data:
                transport.write(data)
            elif self._finishing:
                # The sans-I/O core says the server closes the connection now (the close
                # handshake is done).
                transport.close()
            else:
                # Not yet: whoever sees the connection close must find the record of why
                # it ended (the endpoint calls finish() once it is written).
                self._eof_due = True

    def _end(self) -> None:
        self._ended = True
        self._fragments = None
        self._wake_reader()

    def _wake_reader(self) -> None:
        _wake(self._waiter)

    def _resume_reading(self) -> None:
        if not self._reading and self._transport is not None and not self._lost:
            self._reading = True
            self._transport.resume_reading()

    async def _wait_drain(self) -> None:
        if self._drain is None:
            self._drain = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._drain)


def _wake(waiter: asyncio.Future[None] | None) -> None:
    """Resolve ``waiter`` unless there is none or it is done."""
    if waiter is not None and not waiter.done():
        waiter.set_result(None)
