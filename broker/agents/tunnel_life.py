"""One agent tunnel past its upgrade: the SSH handshake over its WebSocket, then its life
(registered, online, facts refreshed, held until the connection closes, offline), each
way it ends recorded. It runs as a task of its own (:meth:`TunnelRuntime.run_tunnel`):
the request that upgraded it is gone (:mod:`broker.agents.ws_takeover`).
"""

from __future__ import annotations

import asyncio
from typing import Final

import asyncssh
from aiohttp import WSCloseCode

from agent.tunnel import BDP_INFO, WebSocketTunnel
from broker.agents.identity_lookup import TunnelIdentity
from broker.agents.registry import LiveTunnel
from broker.agents.tunnel_facts import refresh_facts
from broker.agents.tunnel_runtime import TunnelRuntime
from broker.agents.tunnel_ssh import TunnelClient, open_tunnel_connection
from broker.agents.tunnel_websocket import TunnelWebSocket
from broker.log_context import ContextLogger, context_logger
from broker.services import Services

#: The tunnels' log keeps the endpoint's name: operators filter on it.
LOG_NAME: Final = "broker.agents.tunnel_endpoint"


async def run_tunnel(
    services: Services,
    runtime: TunnelRuntime,
    identity: TunnelIdentity,
    stream: TunnelWebSocket,
    source: str,
    bdp: int | None,
) -> None:
    """The tunnel's handshake and life; its WebSocket closed at the end, with the code
    that says why, after the record of why is written."""
    try:
        conn = await _handshake(services, runtime, identity, stream, source, bdp)
        if conn is not None:
            await _serve(services, runtime, identity, conn, stream, source)
        await stream.finish()
    except asyncio.CancelledError:
        # Shutdown, past its grace: the connection goes without a close handshake.
        stream.abort()
        raise
    finally:
        runtime.registry.tunnel_finished()


async def _handshake(
    services: Services,
    runtime: TunnelRuntime,
    agent: TunnelIdentity,
    stream: TunnelWebSocket,
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
        # Cancelled (shutdown, past its grace): the refusal is
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
    return context_logger(LOG_NAME, agent=agent_id, peer=source)


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
    stream: TunnelWebSocket,
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
        # Cancelled (shutdown, past its grace):
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
