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
import os
import tempfile
import time
from pathlib import Path
from typing import Final

from broker.agents import tls_read_buffer
from tests.support.tls_memory_pair import connected, contexts, receive

BLOCK: Final = 240 * 1024  # encrypted, it fits one read of the shared buffer (256 KiB)
WHOLE: Final = 1 << 30  # a BIO_CHUNK no read or write reaches: no pieces


def _cpu_per_mb(run: object, megabytes: int) -> float:
    start = time.process_time()
    run()  # type: ignore[operator]
    return (time.process_time() - start) * 1000 / megabytes


async def measure(megabytes: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ends = await connected(*contexts(Path(tmp)))
    protocol, sink, wire, client, outgoing = (
        ends.protocol,
        ends.sink,
        ends.wire,
        ends.client,
        ends.outgoing,
    )
    block = os.urandom(BLOCK)
    blocks = megabytes * 1024 * 1024 // BLOCK
    transport = protocol._app_transport

    def reads() -> None:
        for _ in range(blocks):
            client.write(block)
            receive(protocol, outgoing.read())

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
