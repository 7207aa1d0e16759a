"""What handing large TLS reads and writes to OpenSSL in pieces costs in CPU.

`python -m bench.tls_pieces [--megabytes N] [--rounds R]` moves N MB each way through the
broker's TLS layer (asyncio's protocol with the shared read buffer, broker.agents.
tls_read_buffer) in 240 KiB reads and writes, near the largest a tunnel makes, with the pieces
(:data:`~broker.agents.tls_read_buffer.BIO_CHUNK`) and without them, alternately, and
prints the process CPU (``time.process_time``) per MB of each. The other end is an OpenSSL
object over memory BIOs in the same process: the read figures include its encryption, the
write figures are the broker's encryption alone (nothing decrypts them). No socket: only
the TLS layer is measured, so the difference is not diluted by the rest of a tunnel.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import ssl
import tempfile
import time
from pathlib import Path
from typing import Final

from broker.agents import tls_read_buffer
from broker.keys import make_tls_certificate

BLOCK: Final = 240 * 1024  # encrypted, it fits one read of the shared buffer (256 KiB)
WHOLE: Final = 1 << 30  # a BIO_CHUNK no read or write reaches: no pieces


class _Wire(asyncio.Transport):
    """The socket under the TLS protocol: collects what it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = bytearray()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.sent += data

    def is_closing(self) -> bool:
        return False


class _Sink(asyncio.Protocol):
    def __init__(self) -> None:
        self.received = 0

    def data_received(self, data: bytes) -> None:
        self.received += len(data)


def _receive(protocol: tls_read_buffer.SharedBufferSSLProtocol, data: bytes) -> None:
    view = protocol.get_buffer(len(data))
    view[: len(data)] = data
    protocol.buffer_updated(len(data))


async def _connection(
    directory: Path,
) -> tuple[tls_read_buffer.SharedBufferSSLProtocol, _Sink, _Wire, ssl.SSLObject, ssl.MemoryBIO]:
    cert, key = make_tls_certificate("https://localhost", dt.datetime.now(dt.UTC))
    (directory / "cert.pem").write_bytes(cert)
    (directory / "key.pem").write_bytes(key)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    client_ctx = ssl.create_default_context(cafile=directory / "cert.pem")
    loop = asyncio.get_running_loop()
    sink, wire, waiter = _Sink(), _Wire(), loop.create_future()
    protocol = tls_read_buffer.SharedBufferSSLProtocol(
        loop, sink, server_ctx, waiter, server_side=True
    )
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
        await asyncio.sleep(0)  # a loop turn: the handshake's steps
    return protocol, sink, wire, client, outgoing


def _cpu_per_mb(run: object, megabytes: int) -> float:
    start = time.process_time()
    run()  # type: ignore[operator]
    return (time.process_time() - start) * 1000 / megabytes


async def measure(megabytes: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        protocol, sink, wire, client, outgoing = await _connection(Path(tmp))
    block = os.urandom(BLOCK)
    blocks = megabytes * 1024 * 1024 // BLOCK
    transport = protocol._app_transport

    def reads() -> None:
        for _ in range(blocks):
            client.write(block)
            _receive(protocol, outgoing.read())

    def writes() -> None:
        for _ in range(blocks):
            transport.write(block)
            wire.sent.clear()

    print("round  pieces  read ms/MB  write ms/MB")
    for round_ in range(rounds):
        for label, chunk in (("yes", tls_read_buffer.BIO_CHUNK), ("no", WHOLE)):
            saved = tls_read_buffer.BIO_CHUNK
            tls_read_buffer.BIO_CHUNK = chunk  # type: ignore[misc]
            try:
                read_ms = _cpu_per_mb(reads, megabytes)
                write_ms = _cpu_per_mb(writes, megabytes)
            finally:
                tls_read_buffer.BIO_CHUNK = saved  # type: ignore[misc]
            print(f"{round_:5}  {label:6}  {read_ms:10.3f}  {write_ms:11.3f}")
    assert sink.received >= blocks * BLOCK
    protocol.connection_lost(None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    asyncio.run(measure(args.megabytes, args.rounds))


if __name__ == "__main__":
    main()
