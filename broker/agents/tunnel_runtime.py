"""What the agent tunnel endpoint keeps between requests: its settings, the handshake
limiter, the shared SSH options, the background work (presence, audits), and the tunnels
themselves once their upgrade is done (each a task of its own: :mod:`broker.agents.tunnel_life`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Collection, Coroutine
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web

from agent.protocol import KEEPALIVE_COUNT_MAX, KEEPALIVE_INTERVAL
from broker.agents import agent_store, descriptors
from broker.agents.facts_pacing import FACTS_MAX_WAIT_S, FactsPacer
from broker.agents.handshake_hold import CROWDED_HOLD_S, HOLD_S, MAX_HELD, HandshakeHold
from broker.agents.handshake_limiter import HandshakeLimiter
from broker.agents.identity_lookup import Found, IdentityLookup, TunnelIdentity
from broker.agents.presence import PresenceWriter
from broker.agents.refusal_audit import WINDOW_S, RefusalAuditor
from broker.agents.registry import AgentRegistry
from broker.agents.retry_spread import RetrySpread
from broker.agents.tunnel_ssh import tunnel_options
from broker.log_context import ContextLogger
from broker.services import Services
from broker.supervision import Supervisor

log = logging.getLogger(__name__)

#: At most one warning this often while agents are turned away for want of descriptors.
FULL_WARNING_EVERY_S: Final = 60.0


@dataclass
class ShareGate:
    """Set by the cluster feature on a cluster node: ``admits(agent_id)`` says whether the
    node lets one more agent in under its fair share (broker.cluster.share);
    ``turns_away(agent_id)``, asked before the agent is looked up, says True only where
    ``admits`` would say False."""

    admits: Callable[[str], bool]
    turns_away: Callable[[str], bool]
    #: Agents turned away for the share (a metric).
    refused: int = 0
    #: Their Retry-After: a random wait in a window that grows with the herd.
    spread: RetrySpread = field(default_factory=RetrySpread)


@dataclass(frozen=True, kw_only=True)
class TunnelSettings:
    """Timing and limits of agent tunnels (tests shorten the timers)."""

    handshakes_per_second: int = 200
    handshake_burst: int = 0  # 0: one second's worth
    max_handshakes_in_flight: int = 256
    handshake_timeout: float = 20.0
    keepalive_interval: float = KEEPALIVE_INTERVAL
    keepalive_count_max: int = KEEPALIVE_COUNT_MAX
    facts_timeout: float = 10.0
    #: Facts wait at most this long for the handshakes under way (see facts_pacing).
    facts_max_wait: float = FACTS_MAX_WAIT_S
    touch_interval: float = 60.0
    node: str = ""
    #: Tunnels open or in their handshake at once; 0: as many as descriptors allow.
    max_tunnels: int = 0
    #: Refusals of one kind after the first are counted this long, then summarised.
    refusal_window: float = WINDOW_S
    #: Rekey after this many bytes; None: asyncssh's default (1 GB). Tests make it small.
    rekey_bytes: int | None = None
    #: An upgrade whose place in line comes within this long waits for it (0: never), or
    #: for a handshake under way to finish within the second; at most so many at once.
    #: See handshake_hold.
    handshake_hold: float = HOLD_S
    handshake_crowded_hold: float = CROWDED_HOLD_S
    max_held_upgrades: int = MAX_HELD

    def limiter(self) -> HandshakeLimiter:
        rate = self.handshakes_per_second
        burst = self.handshake_burst or max(1, rate)
        return HandshakeLimiter(
            rate=float(rate), burst=burst, max_in_flight=self.max_handshakes_in_flight
        )


def node_name() -> str:
    """This broker node's name in the presence columns."""
    return "".join(c for c in socket.gethostname() if c.isascii() and c.isprintable())[:64]


class TunnelRuntime:
    """What the tunnel endpoint keeps between requests: settings, limiter, SSH options."""

    def __init__(
        self, settings: TunnelSettings, registry: AgentRegistry, services: Services
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.limiter = settings.limiter()
        self.hold = HandshakeHold(
            settings.handshake_hold, settings.max_held_upgrades, settings.handshake_crowded_hold
        )
        self.node = settings.node or services.config.node or node_name()
        #: The feature's background work: the presence writer, housekeeping, refusal audits.
        self.tasks = Supervisor("agent tunnels")
        self.presence = PresenceWriter(services, self.node, self.tasks)
        self.refusals = RefusalAuditor(services, settings.refusal_window)
        self.facts_pacer = FactsPacer(registry, max_wait=settings.facts_max_wait)
        self._warned_at: dict[str, float] = {}
        #: Enrollments answered: a burst of them leaves garbage in the heap as handshakes
        #: do, which the housekeeping's trim gives back once they stop (heap_trim).
        self.enrollments = 0
        #: Every tunnel past its upgrade, a task each (its handshake, then its life).
        self._tunnels: set[asyncio.Task[None]] = set()
        self.lookup = IdentityLookup(lambda ids: _tunnel_keys(services, ids))
        # Built once: every tunnel differs only in the one host key it trusts (tunnel_ssh).
        self.ssh_options = tunnel_options(
            services.keys.agent_client_key,
            keepalive_interval=settings.keepalive_interval,
            keepalive_count_max=settings.keepalive_count_max,
            login_timeout=settings.handshake_timeout,
            rekey_bytes=settings.rekey_bytes,
        )

    def crowded(self, in_flight: int) -> bool:
        """Whether the handshakes under way are at the limiter's bound."""
        return in_flight >= self.limiter.max_in_flight

    def tunnel_budget(self) -> int:
        """How many tunnels may be open at once now (the descriptor limit can change)."""
        budget = descriptors.current_budget()
        given = self.settings.max_tunnels
        return min(given, budget) if given > 0 else budget

    def full(self, now: float) -> bool:
        """Whether one more tunnel would eat into the descriptors kept for the rest."""
        budget = self.tunnel_budget()
        if self.registry.open_tunnels < budget:
            return False
        self.warn_now_and_then(
            "full",
            "turning agents away: %d tunnels open, the most the descriptor limit allows "
            "(raise LimitNOFILE, or add broker nodes)",
            budget,
            now=now,
        )
        return True

    def warn_now_and_then(
        self, topic: str, message: str, *args: object, now: float | None = None
    ) -> None:
        """Log a warning about ``topic`` at most every FULL_WARNING_EVERY_S: a storm of
        agents would otherwise write thousands of the same line."""
        now = time.monotonic() if now is None else now
        if now - self._warned_at.get(topic, -FULL_WARNING_EVERY_S) >= FULL_WARNING_EVERY_S:
            self._warned_at[topic] = now
            log.warning(message, *args)

    def in_background(
        self, what: str, work: Coroutine[object, object, None], logger: ContextLogger
    ) -> None:
        """Run ``work`` to its end even if the request that started it is cancelled."""
        self.tasks.spawn(what, work, logger=logger)

    def run_tunnel(self, life: Coroutine[object, object, None]) -> None:
        """Run one tunnel's handshake and life as a task of its own: the request that
        upgraded it has ended (broker.agents.ws_takeover)."""
        task = asyncio.get_running_loop().create_task(life)
        self._tunnels.add(task)
        task.add_done_callback(self._tunnel_done)

    def _tunnel_done(self, task: asyncio.Task[None]) -> None:
        self._tunnels.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # The tunnel's own code records every way a tunnel ends; this is a bug.
            log.error("an agent tunnel failed", exc_info=task.exception())

    @property
    def tunnels(self) -> int:
        """Tunnels past their upgrade and not yet finished."""
        return len(self._tunnels)

    async def end_tunnels(self, grace: float) -> None:
        """Shutdown: wait up to ``grace`` seconds for the tunnels (closed by then, or in
        their handshake), then cancel the rest and wait for them."""
        if self._tunnels:
            await asyncio.wait(set(self._tunnels), timeout=grace)
        rest = set(self._tunnels)
        for task in rest:
            task.cancel()
        if rest:
            await asyncio.wait(rest)

    async def drain_background(self) -> None:
        """Wait for background work, then write the counted refusals (at shutdown)."""
        await self.tasks.idle()
        await self.refusals.close()


async def _tunnel_keys(services: Services, agent_ids: Collection[str]) -> dict[str, Found]:
    """The lookup's query: outside a transaction (one committed row per agent needs none),
    which spares PostgreSQL's BEGIN and ROLLBACK round trips."""
    async with services.engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        keys = await agent_store.tunnel_keys(conn, agent_ids)
    return {
        agent_id: (TunnelIdentity(agent_id, name, key), revoked)
        for agent_id, (name, key, revoked) in keys.items()
    }


TUNNEL_RUNTIME: Final = web.AppKey("agent_tunnel_runtime", TunnelRuntime)
SHARE_GATE: Final = web.AppKey("agent_share_gate", ShareGate)
