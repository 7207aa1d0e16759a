"""The broker's HTTPS context (broker.server.tls_context) over a real loopback TLS 1.3
connection."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from pathlib import Path

from broker.config import BrokerConfig
from broker.keys import make_tls_certificate
from broker.server import tls_context

WAIT = 10.0  # failure bound, never a pause


async def test_the_broker_sends_no_session_tickets(tmp_path: Path) -> None:
    """A client that read the broker's answer holds no TLS 1.3 session ticket: the broker
    makes none (agents never resume, and a restarted broker could not decrypt them)."""
    cert, key = make_tls_certificate("https://localhost", dt.datetime.now(dt.UTC))
    (tmp_path / "tls.crt").write_bytes(cert)
    (tmp_path / "tls.key").write_bytes(key)
    config = BrokerConfig(
        data_dir=tmp_path, tls_cert=str(tmp_path / "tls.crt"), tls_key=str(tmp_path / "tls.key")
    )
    client_ctx = ssl.create_default_context(cafile=tmp_path / "tls.crt")

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=tls_context(config))
    port = server.sockets[0].getsockname()[1]
    async with asyncio.timeout(WAIT), server:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost"
        )
        writer.write(b"ping\n")
        # Tickets come right after the handshake, before the answer: read them with it.
        assert await reader.readline() == b"ping\n"
        ssl_object = writer.get_extra_info("ssl_object")
        assert ssl_object.version() == "TLSv1.3"
        assert ssl_object.session is not None
        assert not ssl_object.session.has_ticket
        writer.close()
        await writer.wait_closed()
