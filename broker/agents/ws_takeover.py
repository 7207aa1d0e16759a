"""Accept a WebSocket upgrade and take its connection off aiohttp's request machinery.

aiohttp keeps an upgraded connection inside the request that upgraded it: its request
loop task, the handler's task and coroutine frames, the parsed request (headers, raw
headers, URL), the response with its WebSocket reader, writer and queues, all for the
connection's life. An agent tunnel lives for days and a broker holds thousands
(PERFORMANCE.md: ≤ 50 KB per idle agent), so once the endpoint has admitted an agent,
:func:`take_over` answers the upgrade itself and hands the transport to the tunnel's own
protocol (:class:`broker.agents.tunnel_websocket.TunnelWebSocket`); the handler then
returns, and aiohttp's objects for that connection are gone.

aiohttp has no supported way to give up a connection. What this relies on, each checked
against the installed aiohttp by tests/unit/test_library_guards.py: the request's
``protocol`` is the connection's ``RequestHandler``, whose ``transport`` attribute is the
one it closes (``force_close``) and writes through; bytes that arrived after the upgrade
request wait in its ``_message_tail``; and its ``connection_lost`` lets go of the
connection (the server's bookkeeping, keep-alive timer, parser) without closing a
transport it no longer holds. The response the handler then returns is never written:
writing finds no transport, which aiohttp treats as a client that went away.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import socket
from typing import Final

from aiohttp import hdrs, web
from aiohttp.web_protocol import RequestHandler

#: RFC 6455's GUID, appended to the client's key for Sec-WebSocket-Accept.
_WS_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class TakeoverError(Exception):
    """The connection cannot be taken over: aiohttp is not the one this was written
    against."""


def accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for the client's Sec-WebSocket-Key (RFC 6455, 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode() + _WS_GUID).digest()).decode()  # noqa: S324 - the RFC's


def is_upgrade(request: web.Request) -> bool:
    """Whether ``request`` is a WebSocket upgrade aiohttp itself would accept (method,
    Upgrade and Connection headers, version, a 16-byte key)."""
    return web.WebSocketResponse().can_prepare(request).ok


def take_over(request: web.Request, protocol: asyncio.Protocol) -> asyncio.Transport | None:
    """Answer the upgrade ``request`` (checked with :func:`is_upgrade`) with 101 and make
    ``protocol`` the connection's; aiohttp lets go of it. None when the client went away
    already. Nothing is awaited."""
    handler = request.protocol
    transport = request.transport
    if not isinstance(handler, RequestHandler) or not isinstance(transport, asyncio.Transport):
        raise TakeoverError("the connection is not an aiohttp server connection")
    if transport.is_closing():
        return None
    key = request.headers[hdrs.SEC_WEBSOCKET_KEY]
    # What the client sent after its upgrade request (nothing, from a client that waits
    # for the 101 as RFC 6455 says, but nothing is lost either way).
    tail: bytes = handler._message_tail
    handler._message_tail = b""
    # With no transport to hold, aiohttp's connection_lost closes nothing: it drops the
    # connection from the server's bookkeeping, cancels its keep-alive timer and ends its
    # request loop once the handler returns.
    handler.transport = None
    handler.connection_lost(None)
    transport.set_protocol(protocol)
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        # Keystrokes are tiny messages: do not let Nagle hold them back.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    transport.write(_switching_protocols(key))
    protocol.connection_made(transport)
    if not transport.is_reading():
        transport.resume_reading()
    if tail:
        protocol.data_received(tail)
    return transport


def _switching_protocols(key: str) -> bytes:
    return (
        "HTTP/1.1 101 Switching Protocols\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_key(key)}\r\n"
        "\r\n"
    ).encode()
