"""What arrives on an asyncssh connection, counted: tunnel messages and SSH ignore packets.

Instrumentation of the library's connection (asyncssh's, not ours), on the instance: a
tunnel hands each WebSocket message to the connection's ``data_received`` once, and the
connection looks its packet handlers up in its own ``_packet_handlers`` (as
broker/ssh_gateway/wire.py relies on).
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import asyncssh
from asyncssh.constants import MSG_IGNORE
from asyncssh.packet import SSHPacket


@dataclass
class Arrivals:
    """Counts of what reached one connection since :func:`count_arrivals`."""

    messages: int = 0
    ignored: int = 0


def count_arrivals(conn: asyncssh.SSHClientConnection | asyncssh.SSHServerConnection) -> Arrivals:
    """Count the ``data_received`` calls (tunnel messages) and ignore packets of ``conn``."""
    arrivals = Arrivals()
    receive = conn.data_received
    handlers = dict(conn._packet_handlers)
    process_ignore = handlers[MSG_IGNORE]

    def message(data: bytes, datatype: asyncssh.DataType = None) -> None:
        arrivals.messages += 1
        receive(data, datatype)

    def ignore(self: Any, pkttype: int, pktid: int, packet: SSHPacket) -> Awaitable[None] | None:
        arrivals.ignored += 1
        return process_ignore(self, pkttype, pktid, packet)

    handlers[MSG_IGNORE] = ignore
    conn.data_received = message  # type: ignore[method-assign]
    conn._packet_handlers = handlers
    return arrivals
