"""``GET /agent/v1/tunnel``: an agent's WebSocket becomes the broker's SSH connection to it.

Order of checks, cheapest first, so a flood costs the broker as little as possible:

1. the ``X-Secondline-Agent`` header names an agent id (strict syntax), and the request is a
   WebSocket upgrade (else 400);
2. the refusals that need nothing of the agent's record, before it is looked up (a
   restart storm's attempts each paid the lookup's database round trips only to be
   turned away): the node is draining, or holds its fair share (the checks of 4), or has
   no descriptor to spare, or the agent holds a place in line that is not due yet, or
   too many handshakes are under way (the checks of 5);
3. the agent is enrolled and not revoked (else 403, audited): the upgrades waiting at one
   moment are looked up in one query (:mod:`broker.agents.identity_lookup`);
4. on a cluster node, the node holds less than its fair share of the cluster's agents
   (else 503 ``over_share`` with a jittered ``Retry-After`` whose window grows with the
   herd turned away, audited: the agent dials the load balancer again, which sends it to
   a node holding fewer; see :mod:`broker.cluster.share`, :mod:`broker.agents.retry_spread`);
5. the broker has a descriptor to spare for one more tunnel (else 503 with ``Retry-After``;
   see :mod:`broker.agents.descriptors`), and the handshake limiter admits it (else 503
   with ``Retry-After``: the agent's place in line, given only to an agent looked up);
   a turn due soon (a place in line within 2 s, a handshake under way to finish within
   10 s) is waited for on the connection instead, and every check made again after the
   wait (:mod:`broker.agents.handshake_hold`);
6. the upgrade; then an asyncssh client over :class:`agent.tunnel.WebSocketTunnel` that
   trusts only the host key this agent enrolled with (:mod:`broker.agents.tunnel_ssh`).
   Whoever claims another agent's id fails here (audited), and nothing else is touched.
   A peer that stalls meets the handshake timeout; garbage and oversized messages end the
   tunnel (audited);
7. the registry makes it the agent's one connection (an older one is closed), the agent
   is marked online, and its facts are refreshed with ``sl:facts`` once no handshake is
   under way (:mod:`broker.agents.facts_pacing`: a reconnect storm's handshakes go first).

The handler then waits for the SSH connection to close (keepalives every 15 s, two missed
ones close it: a silent agent is offline within 45 s) and marks the agent offline.

"Audited" means :mod:`broker.agents.refusal_audit`: the first refusal of its kind at once,
the ones after it in a ten-minute window counted into one summary event, so that a bad
agent retrying for days does not write a signed audit transaction per attempt.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import time
from collections.abc import Callable, Collection, Coroutine
from dataclasses import dataclass, field
from typing import Final

import asyncssh
from aiohttp import WSCloseCode, web
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError

from agent.protocol import (
    AGENT_ID_HEADER,
    AGENT_ID_RE,
    KEEPALIVE_COUNT_MAX,
    KEEPALIVE_INTERVAL,
    MAX_TUNNEL_MESSAGE,
)
from agent.tunnel import BDP_INFO, WebSocketTunnel, size_tunnel_buffer
from broker.agents import agent_store, descriptors
from broker.agents.facts_pacing import FACTS_MAX_WAIT_S, FactsPacer
from broker.agents.handshake_hold import CROWDED_HOLD_S, HOLD_S, MAX_HELD, HandshakeHold
from broker.agents.handshake_limiter import HandshakeLimiter
from broker.agents.identity_lookup import Found, IdentityLookup, TunnelIdentity
from broker.agents.presence import PresenceWriter
from broker.agents.refusal_audit import WINDOW_S, RefusalAuditor
from broker.agents.registry import AgentRegistry, LiveTunnel
from broker.agents.retry_spread import RetrySpread
from broker.agents.tunnel_answers import busy, draining, full, over_share
from broker.agents.tunnel_facts import refresh_facts
from broker.agents.tunnel_ssh import TunnelClient, open_tunnel_connection, tunnel_options
from broker.agents.ws_stream import AiohttpStream
from broker.errors import ForbiddenError, InputError
from broker.log_context import ContextLogger, context_logger
from broker.services import SERVICES, Services
from broker.supervision import Supervisor

log = logging.getLogger(__name__)

#: aiohttp refuses (1009) any message above this; the adapter never sends more than
#: MAX_TUNNEL_MESSAGE, and the small margin covers nothing but rounding.
MAX_WS_MESSAGE: Final = MAX_TUNNEL_MESSAGE + 1024
#: How long closing a tunnel waits for the agent's close frame (a live agent answers at once).
CLOSE_REPLY_S: Final = 2.0
#: At most one warning this often while agents are turned away for want of descriptors.
FULL_WARNING_EVERY_S: Final = 60.0
#: When the database cannot be reached (down, or no descriptor left to connect with).
STORE_RETRY_S: Final = 5
#: The audit's reason for that refusal: one kind for all agents (refusal_audit), so a
#: storm writes one event and a summary per window, not one per agent.
OVER_SHARE_REASON: Final = "the node holds its fair share of the cluster's agents"


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


def _agent_id(request: web.Request) -> str | None:
    raw = request.headers.get(AGENT_ID_HEADER, "")
    return raw if AGENT_ID_RE.fullmatch(raw) else None


async def _identity(runtime: TunnelRuntime, agent_id: str, source: str) -> TunnelIdentity | int:
    """The enrolled, non-revoked agent of this id, or the seconds after which to ask again
    when the database cannot answer (too busy, down, or no descriptor to connect with:
    a 503 the agent waits for, not a 500 it retries at once)."""
    try:
        found = await runtime.lookup.get(agent_id)
    except SQLAlchemyTimeoutError:
        return 1
    except (OperationalError, DBAPIError, OSError) as exc:
        runtime.warn_now_and_then("store", "agent tunnels wait: no database (%s)", exc)
        return STORE_RETRY_S
    if found is None or found[1] or runtime.registry.is_revoked(agent_id):
        why = "unknown agent" if found is None else "revoked agent"
        await runtime.refusals.refused(
            agent_id, enrolled=found is not None, source=source, reason=why
        )
        raise ForbiddenError(
            "this agent is not enrolled here or was revoked; enroll it again with a new token",
            code="agent_refused",
        )
    return found[0]


async def _refuse_over_share(
    runtime: TunnelRuntime, gate: ShareGate, agent_id: str, source: str
) -> web.Response:
    gate.refused += 1
    await runtime.refusals.refused(
        agent_id,
        enrolled=True,  # or not looked up yet: one kind for every agent either way
        source=source,
        reason=OVER_SHARE_REASON,
        per_agent=False,
        code="over_share",  # /metrics counts it under the 503's own code
    )
    return over_share(gate.spread)


async def tunnel_handler(request: web.Request) -> web.StreamResponse:
    """Accept an agent's tunnel (see the module docstring for the order of checks)."""
    services = request.app[SERVICES]
    runtime = request.app[TUNNEL_RUNTIME]
    source = request.remote or ""
    agent_id = _agent_id(request)
    if agent_id is None:
        await runtime.refusals.refused(
            "", enrolled=False, source=source, reason="missing or malformed agent id header"
        )
        raise InputError(
            f"send the agent id in the {AGENT_ID_HEADER} header (ag- and 16 letters or digits)",
            code="agent_id_invalid",
        )
    ws = web.WebSocketResponse(
        max_msg_size=MAX_WS_MESSAGE,
        compress=False,
        autoping=True,
        heartbeat=None,
        timeout=CLOSE_REPLY_S,
    )
    if not ws.can_prepare(request).ok:
        raise InputError("this endpoint takes a WebSocket upgrade", code="not_websocket")
    gate = request.app.get(SHARE_GATE)
    # A turn that comes soon is waited for on this connection (handshake_hold), and
    # every check is made again after the wait.
    hold, arrived, waited = runtime.hold, time.monotonic(), False
    while True:
        if services.draining:
            return draining()
        if gate is not None and gate.turns_away(agent_id):
            return await _refuse_over_share(runtime, gate, agent_id, source)
        now, in_flight = time.monotonic(), runtime.registry.handshakes_in_flight
        if runtime.full(now):
            return full()
        wait = runtime.limiter.held_back(agent_id, now, in_flight)
        if wait <= 0:
            break
        crowded = runtime.crowded(in_flight)
        if not await hold.wait(wait, arrived, crowded=crowded, again=waited):
            return busy(max(1, math.ceil(wait)))
        waited = True
    identity = await _identity(runtime, agent_id, source)
    if isinstance(identity, int):
        return busy(identity)
    while True:
        # The same checks again, exactly: the node may have filled during the lookup.
        if services.draining:
            return draining()
        if gate is not None and not gate.admits(agent_id):
            return await _refuse_over_share(runtime, gate, agent_id, source)
        # From here to the count below nothing awaits: the budget holds exactly, however
        # many upgrades arrive together.
        now, in_flight = time.monotonic(), runtime.registry.handshakes_in_flight
        if runtime.full(now):
            return full()
        wait = runtime.limiter.admit(agent_id, now, in_flight)
        if wait <= 0:
            break
        crowded = runtime.crowded(in_flight)
        if not await hold.wait(wait, arrived, crowded=crowded, again=waited):
            return busy(max(1, math.ceil(wait)))
        waited = True
    runtime.registry.tunnel_opened()
    try:
        await ws.prepare(request)
        sock = request.transport.get_extra_info("socket") if request.transport else None
        # Bytes in the broker's receive buffer are ahead of every keystroke's echo.
        bdp = size_tunnel_buffer(sock, socket.SO_RCVBUF) if sock is not None else None
        stream = AiohttpStream(ws)
        conn = await _handshake(services, runtime, identity, stream, source, bdp)
        if conn is not None:
            await _serve(services, runtime, identity, conn, stream, source)
        await stream.finish()
    finally:
        runtime.registry.tunnel_finished()
    return ws


async def _handshake(
    services: Services,
    runtime: TunnelRuntime,
    agent: TunnelIdentity,
    stream: AiohttpStream,
    source: str,
    bdp: int | None,
) -> asyncssh.SSHClientConnection | None:
    """The SSH handshake over the accepted WebSocket; None (audited) when it fails.
    ``bdp``, the tunnel's measured bandwidth-delay product, sizes its channels' windows."""
    registry = runtime.registry
    try:
        host_key = asyncssh.import_public_key(agent.public_key)
    except (asyncssh.KeyImportError, ValueError):
        await runtime.refusals.refused(
            agent.agent_id, enrolled=True, source=source, reason="the enrolled key cannot be read"
        )
        return None
    registry.handshake_started()
    reason = ""
    try:
        async with asyncio.timeout(runtime.settings.handshake_timeout):
            return await open_tunnel_connection(
                runtime.ssh_options,
                agent.agent_id,
                WebSocketTunnel(stream, extra_info={} if bdp is None else {BDP_INFO: bdp}),
                host_key,
            )
    except asyncio.CancelledError:
        # The request was cancelled (the peer vanished, or shutdown): the refusal is
        # still recorded, by a task of its own.
        why = stream.problem or "the connection ended during the SSH handshake"
        runtime.in_background(
            "auditing a refused tunnel",
            _refused(runtime, agent.agent_id, source, why),
            _tunnel_log(agent.agent_id, source),
        )
        raise
    except asyncssh.HostKeyNotVerifiable:
        reason = "the SSH host key is not the one this agent enrolled with"
    except TimeoutError:
        reason = "the SSH handshake did not finish in time"
    except asyncssh.PermissionDenied:
        reason = "the agent refused the broker's key"
    except Exception as exc:  # a connection boundary: whatever the peer did, refuse it
        reason = f"the SSH handshake failed ({type(exc).__name__})"
    finally:
        registry.handshake_finished()
        runtime.hold.handshake_finished()
    await _refused(runtime, agent.agent_id, source, stream.problem or reason)
    if stream.close_code == WSCloseCode.OK:
        stream.close_code = WSCloseCode.POLICY_VIOLATION
    return None


def _tunnel_log(agent_id: str, source: str) -> ContextLogger:
    """The log of one agent's tunnel. Made when a line is written, not kept with the
    tunnel: an idle agent must stay small (PERFORMANCE.md). The messages keep their own
    wording after the context: operators and tests match on it."""
    return context_logger(__name__, agent=agent_id, peer=source)


async def _refused(runtime: TunnelRuntime, agent_id: str, source: str, reason: str) -> None:
    """Log and audit (or count, see refusal_audit) a tunnel refused after its upgrade."""
    refusals = runtime.refusals
    tlog = _tunnel_log(agent_id, source)
    if await refusals.refused(agent_id, enrolled=True, source=source, reason=reason):
        tlog.warning("tunnel of agent %s from %s refused: %s", agent_id, source, reason)
    else:
        tlog.debug("tunnel of agent %s from %s refused again: %s", agent_id, source, reason)
    runtime.registry.note_refused()


async def _serve(
    services: Services,
    runtime: TunnelRuntime,
    agent: TunnelIdentity,
    conn: asyncssh.SSHClientConnection,
    stream: AiohttpStream,
    source: str,
) -> None:
    """Hold the agent's connection until it closes; presence and facts around it."""
    registry = runtime.registry
    tunnel = LiveTunnel(agent.agent_id, conn, services.clock(), stream)
    if not registry.attach(tunnel):
        conn.close()
        await _refused(runtime, agent.agent_id, source, "revoked agent")
        return
    runtime.presence.online(agent.agent_id, tunnel.connected_at)
    cancelled = False
    try:
        _tunnel_log(agent.agent_id, source).info(
            "agent %s (%s) online from %s", agent.agent_id, agent.name, source
        )
        # The agent is online (and usable) now; its facts wait out a reconnect storm.
        async with runtime.facts_pacer.turn():
            await refresh_facts(services, runtime, agent.agent_id, conn, source)
        registry.mark_ready(tunnel)
        await conn.wait_closed()
    except asyncio.CancelledError:
        # The agent's socket went and aiohttp cancelled the request (or shutdown did):
        # what the agent did wrong is still recorded, by a task of its own.
        cancelled = True
        raise
    finally:
        if registry.detach(tunnel):
            runtime.presence.offline(agent.agent_id, tunnel.connected_at, services.clock())
        client = conn.get_owner()
        lost = client.lost if isinstance(client, TunnelClient) else None
        why = tunnel.close_reason or (str(lost) if lost else "the agent closed the tunnel")
        _tunnel_log(agent.agent_id, source).info("agent %s offline: %s", agent.agent_id, why)
        problem = stream.problem
        if not problem and isinstance(lost, asyncssh.ProtocolError | asyncssh.MACError):
            problem = f"the agent broke the SSH protocol ({lost})"
        if problem and cancelled:
            runtime.in_background(
                "auditing a broken tunnel",
                _refused(runtime, agent.agent_id, source, problem),
                _tunnel_log(agent.agent_id, source),
            )
    if problem:
        await _refused(runtime, agent.agent_id, source, problem)


TUNNEL_RUNTIME: Final = web.AppKey("agent_tunnel_runtime", TunnelRuntime)
SHARE_GATE: Final = web.AppKey("agent_share_gate", ShareGate)
