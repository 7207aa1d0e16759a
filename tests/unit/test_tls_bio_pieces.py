"""Large TLS reads and writes reach OpenSSL in pieces (broker/agents/tls_read_buffer.py),
so the connection's memory BIOs, which never shrink, stay small after them.

The broker's side is asyncio's real TLS protocol (with the shared buffer) fed by a real
OpenSSL client over memory BIOs; the socket under it is a recorder of what it sends. What
stays behind is glibc's count of heap bytes in use, per connection."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import ssl
from pathlib import Path

from tests.support.tls_memory_pair import TlsEnds, connected, contexts, receive

CONNECTIONS = 12
BURST = 200_000  # one read's worth: what an agent's large facts can arrive as


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


async def _connected(tmp_path: Path) -> list[TlsEnds]:
    server_ctx, client_ctx = contexts(tmp_path)
    # The test's own BIOs grow before the count starts: only the broker's side counts.
    return [
        await connected(server_ctx, client_ctx, grow_client_bios=2 * BURST)
        for _ in range(CONNECTIONS)
    ]


async def test_a_large_read_leaves_the_incoming_bio_small(tmp_path: Path) -> None:
    """One read of 200 KB, decrypted and handed on whole, leaves under 80 KB behind."""
    ends = await _connected(tmp_path)
    bursts = []
    for end in ends:
        end.client.write(b"f" * BURST)
        bursts.append(end.outgoing.read())
    before = _heap_in_use()
    for end, burst in zip(ends, bursts, strict=True):
        receive(end.protocol, burst)
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
