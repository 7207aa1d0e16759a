"""A large TLS read reaches OpenSSL in pieces (broker/agents/tls_read_buffer.py), so the
connection's incoming memory BIO, which never shrinks, stays small after it.

The broker's side is asyncio's real TLS protocol (with the shared buffer) fed by a real
OpenSSL client over memory BIOs; the socket under it is a recorder of what it sends."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import datetime as dt
import gc
import ssl
from pathlib import Path

from broker.agents import tls_read_buffer
from broker.keys import make_tls_certificate

CONNECTIONS = 12
BURST = 200_000  # one read's worth: what an agent's large facts can arrive as


class _Wire(asyncio.Transport):
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


class _Sink(asyncio.Protocol):
    def __init__(self) -> None:
        self.received = 0

    def data_received(self, data: bytes) -> None:
        self.received += len(data)


def _heap_in_use() -> int:
    class MallInfo2(ctypes.Structure):
        _fields_ = [
            (name, ctypes.c_size_t)
            for name in (
                "arena",
                "ordblks",
                "smblks",
                "hblks",
                "hblkhd",
                "usmblks",
                "fsmblks",
                "uordblks",
                "fordblks",
                "keepcost",
            )
        ]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    gc.collect()
    return int(libc.mallinfo2().uordblks)


def _receive(protocol: tls_read_buffer.SharedBufferSSLProtocol, data: bytes) -> None:
    """What the event loop does when the socket has ``data``: one read of all of it."""
    view = protocol.get_buffer(len(data))
    view[: len(data)] = data
    protocol.buffer_updated(len(data))


async def test_a_large_read_leaves_the_incoming_bio_small(tmp_path: Path) -> None:
    cert, key = make_tls_certificate("https://localhost", dt.datetime.now(dt.UTC))
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    client_ctx = ssl.create_default_context(cafile=tmp_path / "cert.pem")
    loop = asyncio.get_running_loop()
    ends = []
    for _ in range(CONNECTIONS):
        sink = _Sink()
        waiter = loop.create_future()
        protocol = tls_read_buffer.SharedBufferSSLProtocol(
            loop, sink, server_ctx, waiter, server_side=True
        )
        wire = _Wire()
        protocol.connection_made(wire)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        client = client_ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
        while not waiter.done():
            with contextlib.suppress(ssl.SSLWantReadError):
                client.do_handshake()
            if outgoing.pending:
                _receive(protocol, outgoing.read())
            incoming.write(bytes(wire.sent))
            wire.sent.clear()
            await asyncio.sleep(0)  # a loop turn (no time passes): the handshake's steps
        ends.append((protocol, sink, client, outgoing))
    bursts = []
    for _, _, client, outgoing in ends:
        client.write(b"f" * BURST)
        bursts.append(outgoing.read())
    before = _heap_in_use()
    for (protocol, sink, _, _), burst in zip(ends, bursts, strict=True):
        _receive(protocol, burst)
        assert sink.received == BURST
    retained = (_heap_in_use() - before) / CONNECTIONS
    # Fed at once, the BIO kept 4/3 of the read: 260 KB per connection.
    assert retained < 40_000, f"{retained:.0f} bytes kept per connection after one read"
    for protocol, _, _, _ in ends:
        protocol.connection_lost(None)  # what the loop does when the socket closes
