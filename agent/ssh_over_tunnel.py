"""An SSH connection opened over a tunnel on options already made, as asyncssh's own connect
does once it has made them (``asyncssh.connection._connect``).

Both ends of an agent's tunnel open their connection so: the broker's client on one
options object shared by every tunnel (:mod:`broker.agents.tunnel_ssh`), the agent's server
on options prepared in the event loop (:mod:`agent.reverse_ssh`). It lives in ``agent/``,
beside the tunnel adapter, because the agent never imports the broker and the broker
imports what the two share from here. What it repeats of asyncssh is pinned by
``tests/unit/test_library_guards.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

import asyncssh
from asyncssh.connection import SSHConnection

from agent.tunnel import WebSocketTunnel

_Options = TypeVar(
    "_Options", asyncssh.SSHClientConnectionOptions, asyncssh.SSHServerConnectionOptions
)
_Conn = TypeVar("_Conn", bound=SSHConnection)


async def open_over_tunnel(
    tunnel: WebSocketTunnel,
    peer: str,
    options: _Options,
    make: Callable[[asyncio.AbstractEventLoop, _Options], _Conn],
    *,
    made: Callable[[_Conn], None] | None = None,
    connect_timeout: float | None = None,
) -> _Conn:
    """The connection ``make`` builds on ``options`` (one made with ``wait="auth"``), over
    ``tunnel`` to ``peer``, once authentication is done. ``made`` is handed it as soon as
    its transport is made, before anything is awaited (the peer's first bytes come later).
    ``connect_timeout`` bounds the opening, not the abort after a failure. Raises what
    asyncssh's connect raises; a connection that fails or is cancelled is aborted."""
    loop = asyncio.get_running_loop()
    # The connection takes the waiter it reports to from the options as it is made, so set
    # and take happen with nothing awaited in between; every connection has its own.
    waiter: asyncio.Future[None] = loop.create_future()
    options.waiter = waiter
    conn = make(loop, options)
    connected = False
    try:
        async with asyncio.timeout(connect_timeout):
            await tunnel.create_connection(lambda: conn, peer, 0)
            connected = True
            if made is not None:
                made(conn)
            await waiter
    except BaseException:
        waiter.cancel()
        if connected:
            conn.abort()
            await conn.wait_closed()
        raise
    return conn
