"""An accepted aiohttp WebSocket as the :class:`agent.tunnel.MessageStream` the shared
tunnel adapter runs SSH over. Only binary messages carry the tunnel; anything else ends it,
and :attr:`AiohttpStream.problem` says what the peer did wrong (for the audit record).

The adapter's ``close()`` does not close the WebSocket itself: the endpoint does, with
:meth:`AiohttpStream.finish`, once it has recorded why the tunnel ended, so whoever
watches the socket close can rely on the audit record being there."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.http_websocket import WebSocketError

from agent.errors import TunnelProtocolError

#: How long closing waits for an ongoing receive to end.
FINISH_WAIT_S: Final = 1.0
#: How long a close frame gets to leave at broker shutdown.
SHUTDOWN_CLOSE_S: Final = 0.2


class AiohttpStream:
    """Binary messages in and out of one accepted WebSocket."""

    __slots__ = ("_idle", "_receiving", "_ws", "close_code", "problem")

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self._ws = ws
        self.problem = ""
        self.close_code = WSCloseCode.OK
        self._receiving = False
        self._idle: asyncio.Event | None = None

    async def send(self, data: bytes) -> None:
        """Send one binary message; waits while aiohttp's write buffer is full."""
        await self._ws.send_bytes(data)

    async def recv(self) -> bytes | None:
        """The next binary message, or None once the WebSocket is closed."""
        self._receiving = True
        try:
            msg = await self._ws.receive()
        finally:
            self._receiving = False
            if self._idle is not None:
                self._idle.set()
        if msg.type is WSMsgType.BINARY:
            data: bytes = msg.data
            return data
        if msg.type is WSMsgType.TEXT:
            self.problem = "the agent sent a text message on the SSH tunnel"
            self.close_code = WSCloseCode.UNSUPPORTED_DATA
            raise TunnelProtocolError(self.problem)
        if msg.type is WSMsgType.ERROR:
            error = msg.data
            if isinstance(error, WebSocketError) and error.code == WSCloseCode.MESSAGE_TOO_BIG:
                self.problem = "the agent sent a WebSocket message larger than the limit"
            else:
                self.problem = f"the agent's WebSocket failed ({type(error).__name__})"
        return None

    async def close(self) -> None:
        """The SSH connection is done with the stream; the endpoint will finish it."""

    async def finish(self) -> None:
        """Close the WebSocket with :attr:`close_code` (idempotent)."""
        if self._receiving:
            # The adapter's reader is being cancelled; aiohttp's close handshake would
            # otherwise hand the peer's close frame to that dying receive().
            self._idle = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FINISH_WAIT_S):
                    await self._idle.wait()
        if self.close_code != WSCloseCode.GOING_AWAY:
            await self._ws.close(code=self.close_code)
            return
        # At shutdown aiohttp no longer reads from its connections (pre_shutdown marks
        # them closing), so the peer's answer to our close frame would never be seen:
        # send the frame, then drop the connection.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SHUTDOWN_CLOSE_S):
                await self._ws.close(code=self.close_code)
