"""One TLS connection in memory, for measuring the broker's TLS layer: the broker's side is
asyncio's real TLS protocol (with the shared read buffer, broker/agents/tls_read_buffer.py)
over a wire that records what it sends; the client's is a real OpenSSL object over memory
BIOs. Used by tests/unit/test_tls_bio_pieces.py and bench/tls_pieces.py."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ssl
from dataclasses import dataclass
from pathlib import Path

from broker.agents import tls_read_buffer
from broker.keys import make_tls_certificate


class Wire(asyncio.Transport):
    """The socket under the TLS protocol: collects what it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = bytearray()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.sent += data

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default


class Sink(asyncio.Protocol):
    """The application over the TLS protocol: counts what it is handed."""

    def __init__(self) -> None:
        self.received = 0

    def data_received(self, data: bytes) -> None:
        self.received += len(data)


def receive(protocol: tls_read_buffer.SharedBufferSSLProtocol, data: bytes) -> None:
    """What the event loop does when the socket has ``data``: one read of all of it."""
    view = protocol.get_buffer(len(data))
    view[: len(data)] = data
    protocol.buffer_updated(len(data))


@dataclass
class TlsEnds:
    """One TLS connection: the broker's side (asyncio's protocol over the recording wire)
    and the client's (an OpenSSL object over memory BIOs)."""

    protocol: tls_read_buffer.SharedBufferSSLProtocol
    sink: Sink
    wire: Wire
    client: ssl.SSLObject
    incoming: ssl.MemoryBIO
    outgoing: ssl.MemoryBIO


def contexts(directory: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a fresh certificate written to ``directory``, and a client
    context that trusts it."""
    cert, key = make_tls_certificate("https://localhost", dt.datetime.now(dt.UTC))
    (directory / "cert.pem").write_bytes(cert)
    (directory / "key.pem").write_bytes(key)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    return server_ctx, ssl.create_default_context(cafile=directory / "cert.pem")


async def connected(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, *, grow_client_bios: int = 0
) -> TlsEnds:
    """A connection with its handshake done. ``grow_client_bios`` bytes pass through the
    client's BIOs first, so that what they grow to is not counted later."""
    loop = asyncio.get_running_loop()
    sink, wire, waiter = Sink(), Wire(), loop.create_future()
    protocol = tls_read_buffer.SharedBufferSSLProtocol(
        loop, sink, server_ctx, waiter, server_side=True
    )
    protocol.connection_made(wire)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    if grow_client_bios:
        for bio in (incoming, outgoing):
            bio.write(bytes(grow_client_bios))
            bio.read()
    client = client_ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    while not waiter.done():
        with contextlib.suppress(ssl.SSLWantReadError):
            client.do_handshake()
        if outgoing.pending:
            receive(protocol, outgoing.read())
        incoming.write(bytes(wire.sent))
        wire.sent.clear()
        await asyncio.sleep(0)  # a loop turn (no time passes): the handshake's steps
    return TlsEnds(protocol, sink, wire, client, incoming, outgoing)
