"""Large TLS reads and writes reach OpenSSL in pieces (broker/agents/tls_read_buffer.py),
so the connection's memory BIOs, which never shrink, stay small after them.

The broker's side is asyncio's real TLS protocol (with the shared buffer) fed by a real
OpenSSL client over memory BIOs; the socket under it is a recorder of what it sends. What
stays behind is glibc's count of heap bytes in use, per connection."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import datetime as dt
import gc
import ssl
from dataclasses import dataclass
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


@dataclass
class _End:
    """One TLS connection: the broker's side (asyncio's protocol over the recording wire)
    and the client's (an OpenSSL object over memory BIOs)."""

    protocol: tls_read_buffer.SharedBufferSSLProtocol
    sink: _Sink
    wire: _Wire
    client: ssl.SSLObject
    incoming: ssl.MemoryBIO
    outgoing: ssl.MemoryBIO


async def _connected(tmp_path: Path) -> list[_End]:
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
        # The test's own BIOs grow before the count starts: only the broker's side counts.
        for bio in (incoming, outgoing):
            bio.write(bytes(2 * BURST))
            bio.read()
        client = client_ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
        while not waiter.done():
            with contextlib.suppress(ssl.SSLWantReadError):
                client.do_handshake()
            if outgoing.pending:
                _receive(protocol, outgoing.read())
            incoming.write(bytes(wire.sent))
            wire.sent.clear()
            await asyncio.sleep(0)  # a loop turn (no time passes): the handshake's steps
        ends.append(_End(protocol, sink, wire, client, incoming, outgoing))
    return ends


async def test_a_large_read_leaves_the_incoming_bio_small(tmp_path: Path) -> None:
    """One read of 200 KB, decrypted and handed on whole, leaves under 80 KB behind."""
    ends = await _connected(tmp_path)
    bursts = []
    for end in ends:
        end.client.write(b"f" * BURST)
        bursts.append(end.outgoing.read())
    before = _heap_in_use()
    for end, burst in zip(ends, bursts, strict=True):
        _receive(end.protocol, burst)
        assert end.sink.received == BURST
    retained = (_heap_in_use() - before) / CONNECTIONS
    # About 22 KB; fed at once, the BIO kept 4/3 of the read: 266 KB per connection.
    assert retained < 80_000, f"{retained:.0f} bytes kept per connection after one read"
    for end in ends:
        end.protocol.connection_lost(None)  # what the loop does when the socket closes


async def test_a_large_write_leaves_the_outgoing_bio_small(tmp_path: Path) -> None:
    """One write of 200 KB, encrypted and sent whole, leaves under 80 KB behind."""
    ends = await _connected(tmp_path)
    before = _heap_in_use()
    for end in ends:
        end.protocol._app_transport.write(b"g" * BURST)
        end.incoming.write(bytes(end.wire.sent))
        end.wire.sent = bytearray()
        received = 0
        with contextlib.suppress(ssl.SSLWantReadError):
            while received < BURST:
                received += len(end.client.read(BURST))
        assert received == BURST
    retained = (_heap_in_use() - before) / CONNECTIONS
    # About 38 KB; written at once, the BIO kept 4/3 of the write: 235 KB per connection.
    assert retained < 80_000, f"{retained:.0f} bytes kept per connection after one write"
    for end in ends:
        end.protocol.connection_lost(None)
