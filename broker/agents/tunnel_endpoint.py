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

import math
import socket
import time
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError

from agent.protocol import AGENT_ID_HEADER, AGENT_ID_RE, MAX_TUNNEL_MESSAGE
from agent.tunnel import size_tunnel_buffer
from broker.agents.identity_lookup import TunnelIdentity
from broker.agents.tunnel_answers import busy, draining, full, over_share
from broker.agents.tunnel_life import run_tunnel
from broker.agents.tunnel_runtime import (
    FULL_WARNING_EVERY_S,
    SHARE_GATE,
    TUNNEL_RUNTIME,
    ShareGate,
    TunnelRuntime,
    TunnelSettings,
    node_name,
)
from broker.agents.tunnel_websocket import TunnelWebSocket
from broker.agents.ws_takeover import TakeoverError, is_upgrade, take_over
from broker.errors import ForbiddenError, InputError
from broker.services import SERVICES, Services

__all__ = [
    "CLOSE_REPLY_S",
    "FULL_WARNING_EVERY_S",
    "MAX_WS_MESSAGE",
    "OVER_SHARE_REASON",
    "SHARE_GATE",
    "STORE_RETRY_S",
    "TUNNEL_RUNTIME",
    "ShareGate",
    "TunnelRuntime",
    "TunnelSettings",
    "node_name",
    "tunnel_handler",
]

#: The largest message an agent may send; over it the WebSocket fails with 1009. The
#: adapter never sends more than MAX_TUNNEL_MESSAGE, and the small margin covers nothing
#: but rounding.
MAX_WS_MESSAGE: Final = MAX_TUNNEL_MESSAGE + 1024
#: How long closing a tunnel waits for the agent's close frame (a live agent answers at once).
CLOSE_REPLY_S: Final = 2.0
#: When the database cannot be reached (down, or no descriptor left to connect with).
STORE_RETRY_S: Final = 5
#: The audit's reason for that refusal: one kind for all agents (refusal_audit), so a
#: storm writes one event and a summary per window, not one per agent.
OVER_SHARE_REASON: Final = "the node holds its fair share of the cluster's agents"


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


@dataclass(slots=True)
class _Checks:
    """The checks of 2, 4 and 5 (module docstring) for one upgrade: made before its agent
    is looked up, then exactly again to admit it. A turn that comes soon is waited for on
    the connection (handshake_hold), and every check is made again after the wait."""

    services: Services
    runtime: TunnelRuntime
    gate: ShareGate | None
    agent_id: str
    source: str
    arrived: float = field(default_factory=time.monotonic)
    #: Whether this upgrade waited before, in either round: woken, it waits again at the
    #: front of the hold's line.
    waited: bool = False

    async def run(self, *, admit: bool) -> web.Response | None:
        """The refusal, or None once the upgrade passes. Without ``admit`` nothing is
        claimed (the agent is not looked up yet: the gate only turns away whom it would
        never admit, the limiter only holds back); with it, the limiter gives or takes the
        place in line and the tunnel is counted here, so that no await stands between the
        last check and the count."""
        runtime, gate, agent_id = self.runtime, self.gate, self.agent_id
        while True:
            if self.services.draining:
                return draining()
            if gate is not None and (
                not gate.admits(agent_id) if admit else gate.turns_away(agent_id)
            ):
                return await _refuse_over_share(runtime, gate, agent_id, self.source)
            # From here to the count below (tunnel_opened) nothing awaits: the budget holds
            # exactly, however many upgrades arrive together.
            now, in_flight = time.monotonic(), runtime.registry.handshakes_in_flight
            if runtime.full(now):
                return full()
            judge = runtime.limiter.admit if admit else runtime.limiter.held_back
            wait = judge(agent_id, now, in_flight)
            if wait <= 0:
                if admit:
                    runtime.registry.tunnel_opened()
                return None
            crowded = runtime.crowded(in_flight)
            if not await runtime.hold.wait(wait, self.arrived, crowded=crowded, again=self.waited):
                return busy(max(1, math.ceil(wait)))
            self.waited = True


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
    if not is_upgrade(request):
        raise InputError("this endpoint takes a WebSocket upgrade", code="not_websocket")
    checks = _Checks(services, runtime, request.app.get(SHARE_GATE), agent_id, source)
    refused = await checks.run(admit=False)
    if refused is not None:
        return refused
    identity = await _identity(runtime, agent_id, source)
    if isinstance(identity, int):
        return busy(identity)
    # The same checks again, exactly: the node may have filled during the lookup.
    refused = await checks.run(admit=True)
    if refused is not None:
        return refused
    stream = TunnelWebSocket(max_size=MAX_WS_MESSAGE, close_reply_s=CLOSE_REPLY_S)
    try:
        transport = take_over(request, stream)
    except TakeoverError:
        runtime.registry.tunnel_finished()
        raise
    if transport is None:
        # The agent went away during the checks: nothing to answer.
        runtime.registry.tunnel_finished()
        return web.Response(status=499)
    sock = transport.get_extra_info("socket")
    # Bytes in the broker's receive buffer are ahead of every keystroke's echo.
    bdp = size_tunnel_buffer(sock, socket.SO_RCVBUF) if sock is not None else None
    runtime.run_tunnel(run_tunnel(services, runtime, identity, stream, source, bdp))
    # aiohttp has let go of the connection: this response is never written (and aiohttp's
    # objects for the request are gone once it returns).
    return web.Response(status=101)
