"""The agent feature of the broker app: enrollment and tunnel routes, the live registry,
presence bookkeeping at start, while running, and at shutdown."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Final

from aiohttp import web

from agent.protocol import ENROLL_PATH, TUNNEL_PATH
from agent.release import UPDATE_PATH, UPDATE_REPORT_PATH
from broker.agents import agent_store, descriptors, heap_trim, tls_read_buffer
from broker.agents.enroll_endpoint import enroll_handler
from broker.agents.packages import PACKAGE_SHELF, PACKAGES_PREFIX, PackageShelf, package_handler
from broker.agents.registry import AgentRegistry
from broker.agents.release_offer import update_handler, update_report_handler
from broker.agents.signed_requests import REPLAY_GUARD, ReplayGuard
from broker.agents.tunnel_endpoint import (
    TUNNEL_RUNTIME,
    TunnelRuntime,
    TunnelSettings,
    tunnel_handler,
)
from broker.services import SERVICES, Services
from broker.supervision import OnFailure

log = logging.getLogger(__name__)

#: At shutdown, how long closed tunnels (and handshakes under way) get to end by themselves.
SHUTDOWN_GRACE_S: Final = 5.0

#: The live tunnels of this node; the session hub reads it (broker.ports.AgentTunnels).
AGENT_REGISTRY: Final = web.AppKey("agent_registry", AgentRegistry)
#: Optional: set before the app starts to change tunnel timers and limits (tests do).
TUNNEL_SETTINGS: Final = web.AppKey("agent_tunnel_settings", TunnelSettings)


def setup(app: web.Application) -> None:
    """Add the agent routes, the registry and the presence bookkeeping to ``app``."""
    # Thousands of idle agent tunnels are TLS connections: see tls_read_buffer.
    tls_read_buffer.install()
    # Thousands of tunnels are thousands of descriptors: see descriptors.
    descriptors.prepare()
    quiet_asyncssh()
    app[AGENT_REGISTRY] = AgentRegistry()
    app[REPLAY_GUARD] = ReplayGuard()
    app.router.add_post(ENROLL_PATH, enroll_handler)
    app.router.add_get(TUNNEL_PATH, tunnel_handler)
    app.router.add_get(PACKAGES_PREFIX + "/{version}/{file}", package_handler)
    app.router.add_post(UPDATE_PATH, update_handler)
    app.router.add_post(UPDATE_REPORT_PATH, update_report_handler)
    app.cleanup_ctx.append(_packages_ctx)
    app.cleanup_ctx.append(_tunnels_ctx)
    app.on_shutdown.append(_close_tunnels)


def quiet_asyncssh() -> None:
    """asyncssh logs every channel, command and environment at INFO: per agent connection
    that is a dozen lines (milliseconds of CPU in a reconnect storm), and commands may
    carry secrets. Unless someone chose a level for it, it logs warnings and errors only."""
    asyncssh_log = logging.getLogger("asyncssh")
    if asyncssh_log.level == logging.NOTSET:
        asyncssh_log.setLevel(logging.WARNING)


def _settings(app: web.Application, services: Services) -> TunnelSettings:
    given = app.get(TUNNEL_SETTINGS)
    if given is not None:
        return given
    config = services.config
    return TunnelSettings(
        handshakes_per_second=config.tunnel_handshakes_per_second,
        keepalive_interval=float(config.tunnel_keepalive_interval_seconds),
        keepalive_count_max=config.tunnel_keepalive_count_max,
    )


async def _packages_ctx(app: web.Application) -> AsyncIterator[None]:
    app[PACKAGE_SHELF] = PackageShelf(app[SERVICES].config.agent_packages_path)
    yield


async def _tunnels_ctx(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    runtime = TunnelRuntime(_settings(app, services), app[AGENT_REGISTRY], services)
    app[TUNNEL_RUNTIME] = runtime
    async with services.db() as db, db.begin():
        if services.config.clustered:
            # The other nodes' tunnels live on: only this node's own are gone.
            stale = await agent_store.mark_node_offline(db, runtime.node)
        else:
            stale = await agent_store.mark_all_offline(db)
    if stale:
        log.info("marked %d agents offline: no tunnel survives a broker restart", stale)
    runtime.presence.start()
    # RESTART: housekeeping keeps no state a new loop could not rebuild, and without it
    # last_seen of live agents goes stale and the heap is never trimmed.
    runtime.tasks.keep(
        "housekeeping", lambda: _housekeeping(services, runtime), on_failure=OnFailure.RESTART
    )
    try:
        yield
    finally:
        await runtime.lookup.close()
        await runtime.presence.stop()
        # Ends the loops and waits for refusal audits still under way ...
        await runtime.tasks.stop()
        # ... so that the counted refusals written now include theirs.
        await runtime.refusals.close()


async def _housekeeping(services: Services, runtime: TunnelRuntime) -> None:
    """Every second: trim the heap after bursts of handshakes or enrollments; now and then:
    last_seen."""
    trim = heap_trim.malloc_trim()
    policy = heap_trim.TrimPolicy()
    registry = runtime.registry
    next_touch = time.monotonic() + runtime.settings.touch_interval
    while True:
        await asyncio.sleep(1.0)
        now = time.monotonic()
        if trim is not None and policy.due(
            registry.handshakes_done + runtime.enrollments, registry.handshakes_in_flight, now
        ):
            trim()
        if now >= next_touch:
            next_touch = now + runtime.settings.touch_interval
            await _touch_live(services, registry.online_ids())


async def _touch_live(services: Services, ids: list[str]) -> None:
    """Keep last_seen of live agents fresh, in a few statements."""
    if not ids:
        return
    try:
        async with services.db() as db, db.begin():
            await agent_store.touch(db, ids, services.clock())
    except Exception:  # a task boundary: the next round tries again
        log.exception("could not record when %d live agents were seen", len(ids))


async def _close_tunnels(app: web.Application) -> None:
    """Shutdown: every tunnel closes (GOING_AWAY); presence is written at cleanup."""
    runtime = app.get(TUNNEL_RUNTIME)
    if runtime is not None:
        closed = runtime.registry.close_all("the broker is shutting down")
        if closed:
            log.info("closing %d agent tunnels for shutdown", closed)
        # The tunnels are tasks of their own, not aiohttp's requests (ws_takeover): wait
        # for them to record how they ended, as aiohttp's shutdown waited for its handlers.
        await runtime.end_tunnels(SHUTDOWN_GRACE_S)
