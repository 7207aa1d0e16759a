"""`secondline serve`: HTTPS (console, API, agent tunnel) and whatever features listen
themselves (the SSH gateway); SIGTERM drains and exits cleanly.

Without its database the broker does not start: it says so in one line and exits with
status 1 (the service manager starts it again). A database that goes away while it runs
stops neither the broker nor its shutdown: past the session drain, the app's clean-up gets
:data:`CLEANUP_BOUND` seconds, then the process exits anyway.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from collections.abc import AsyncIterator
from typing import Final

from aiohttp import web
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from agent.gc_policy import settle_after_startup
from broker.app import create_app
from broker.cluster.bus import ClusterError
from broker.config import BrokerConfig
from broker.db.engine import create_engine

log = logging.getLogger(__name__)

DB_ERRORS: Final = (SQLAlchemyError, OSError)
# The app's own clean-up (closing tunnels, writing agents' presence, the engine) after the
# sessions drained and the connections closed: seconds when the database answers. Some of
# it retries until the database takes it, which it never does when the database is down.
CLEANUP_BOUND: Final = 5.0


def tls_context(config: BrokerConfig) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(config.tls_cert_path), str(config.tls_key_path))
    # No TLS 1.3 session tickets (OpenSSL sends two after every handshake): agents never
    # resume a session (asyncio's TLS has no way to), and after a broker restart, when
    # thousands reconnect, the tickets of the old process would not decrypt anyway. Not
    # making them saves 6-8 % of each TLS handshake's CPU (both ends, measured on loopback).
    ctx.num_tickets = 0
    return ctx


async def database_problem(config: BrokerConfig) -> str | None:
    """Why the database cannot be reached (one line, no credentials), or None."""
    engine = create_engine(config.db_url, schema=config.database_schema or None)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except DB_ERRORS as exc:
        detail = (str(exc).strip().splitlines() or [""])[0][:200]
        return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    finally:
        await engine.dispose()
    return None


async def schema_missing(config: BrokerConfig) -> bool:
    """True when the database answers but was never set up by `secondline init`."""
    engine = create_engine(config.db_url, schema=config.database_schema or None)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT version_num FROM alembic_version"))
    except DB_ERRORS:
        return True
    finally:
        await engine.dispose()
    return False


async def serve(config: BrokerConfig) -> None:
    app = create_app(config)
    cleaning = asyncio.Event()

    async def cleanup_started(_app: web.Application) -> AsyncIterator[None]:
        yield
        cleaning.set()

    # Appended last, so it is the first to leave: the app's clean-up has begun.
    app.cleanup_ctx.append(cleanup_started)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=10)
    try:
        await runner.setup()
    except ClusterError as exc:
        # A node whose name is taken, or NATS that does not answer: one clear line.
        await _cleanup_failed_start(runner)
        raise SystemExit(f"secondline: {exc.message}") from None
    except DB_ERRORS:
        # Start-up reads and writes the database (agents left online, sessions a crash
        # left live): without it the broker used to die with a traceback. Refuse to start
        # with one clear line instead; any other failure is not hidden behind this one.
        problem = await database_problem(config)
        if problem is None and await schema_missing(config):
            await _cleanup_failed_start(runner)
            raise SystemExit(
                "secondline: the database holds no Secondline tables (database_url in "
                "secondline.toml points elsewhere, or the SQLite file was removed); point it "
                "at the broker's database, or make a new data dir with `secondline init`"
            ) from None
        if problem is None:
            raise
        await _cleanup_failed_start(runner)
        raise SystemExit(
            f"secondline: the database is unavailable ({problem}), and the broker does not "
            "start without its audit store; start the database (database_url in "
            "secondline.toml) and start the broker again"
        ) from None
    site = web.TCPSite(
        runner,
        config.listen_host,
        config.https_port,
        ssl_context=tls_context(config),
        reuse_address=True,
    )
    try:
        await site.start()
    except OSError:
        # A port in use (`secondline serve` says so in one line): clean up in order first,
        # or asyncio.run cancels the app's background work and the database pool logs a
        # traceback about it.
        await _cleanup_failed_start(runner)
        raise
    settle_after_startup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Readiness line: scripts and tests wait for it instead of polling.
    node = f", node {config.node}" if config.node else ""
    print(
        f"secondline: serving https://{config.listen_host}:{config.https_port} "
        f"(ssh {config.ssh_port}), public URL {config.public_url}{node}",
        flush=True,
    )
    await stop.wait()
    log.info("shutting down: draining sessions")
    if await _cleanup(runner, cleaning):
        print("secondline: stopped", flush=True)
    else:
        print("secondline: stopped (clean-up cut short; see the log)", flush=True)


async def _cleanup_failed_start(runner: web.AppRunner) -> None:
    """Clean up after a start that failed. The caller reports the start's own failure in
    one line (the promise of ``secondline serve``); a clean-up that fails too, as it does
    when the database it needs is the one that is down, is logged at INFO, below the
    default level, so that it shows with a verbose log and never buries that line."""
    try:
        await runner.cleanup()
    except Exception as exc:  # a boundary: the failure that counts is the start's
        log.info("cleaning up after the failed start failed too: %s", type(exc).__name__)


async def _cleanup(runner: web.AppRunner, cleaning: asyncio.Event) -> bool:
    """Drain and clean up; False when the clean-up was cut off after CLEANUP_BOUND.

    With the database down, the agents' presence writer retries forever and the broker
    never exited on SIGTERM. The sessions drain before (bounded by themselves), and what is
    lost by cutting the rest off is rebuilt at the next start (every agent is marked
    offline, sessions still live are recovered)."""
    cleanup = asyncio.ensure_future(runner.cleanup())
    begun = asyncio.ensure_future(cleaning.wait())
    try:
        await asyncio.wait({cleanup, begun}, return_when=asyncio.FIRST_COMPLETED)
        if not cleanup.done():
            await asyncio.wait({cleanup}, timeout=CLEANUP_BOUND)
    finally:
        begun.cancel()
    if cleanup.done():
        cleanup.result()  # a failing clean-up still fails loudly
        return True
    log.error(
        "the clean-up did not finish within %.0f s after the sessions drained (is the "
        "database down?); exiting anyway",
        CLEANUP_BOUND,
    )
    cleanup.cancel()
    await asyncio.wait({cleanup})
    return False
