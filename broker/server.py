"""`secondline serve`: HTTPS (console, API, agent tunnel) and whatever features listen
themselves (the SSH gateway); SIGTERM drains and exits cleanly."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl

from aiohttp import web

from broker.app import create_app
from broker.config import BrokerConfig

log = logging.getLogger(__name__)


def tls_context(config: BrokerConfig) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(config.tls_cert_path), str(config.tls_key_path))
    return ctx


async def serve(config: BrokerConfig) -> None:
    app = create_app(config)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=10)
    await runner.setup()
    site = web.TCPSite(
        runner,
        config.listen_host,
        config.https_port,
        ssl_context=tls_context(config),
        reuse_address=True,
    )
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Readiness line: scripts and tests wait for it instead of polling.
    print(
        f"secondline: serving https://{config.listen_host}:{config.https_port} "
        f"(ssh {config.ssh_port}), public URL {config.public_url}",
        flush=True,
    )
    await stop.wait()
    log.info("shutting down: draining sessions")
    await runner.cleanup()
    print("secondline: stopped", flush=True)
