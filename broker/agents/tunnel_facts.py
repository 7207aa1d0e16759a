"""An agent's facts, asked for with ``sl:facts`` over its tunnel once it is online
(:mod:`broker.agents.tunnel_endpoint`, step 7), checked by the facts policy and stored."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import asyncssh

from agent.protocol import FACTS_COMMAND
from broker.agents.facts_policy import FACTS_OUTPUT_MAX, FactsRefused, parse_facts_output
from broker.log_context import context_logger
from broker.services import Services

if TYPE_CHECKING:
    from broker.agents.tunnel_runtime import TunnelRuntime

log = logging.getLogger(__name__)


class _FactsSession(asyncssh.SSHClientSession[bytes]):
    """Collects the stdout of ``sl:facts``, refusing more than the cap."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.too_large = False
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._chan: asyncssh.SSHClientChannel[bytes] | None = None

    def connection_made(self, chan: asyncssh.SSHClientChannel[bytes]) -> None:
        self._chan = chan

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if datatype is not None or self.too_large:
            return
        if len(self.data) + len(data) > FACTS_OUTPUT_MAX:
            self.too_large = True
            if self._chan is not None:
                self._chan.close()
            return
        self.data += data

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def refresh_facts(
    services: Services,
    runtime: TunnelRuntime,
    agent_id: str,
    conn: asyncssh.SSHClientConnection,
    source: str,
) -> None:
    """Ask the agent for its facts; store them when they pass the facts policy."""
    session = _FactsSession()
    tlog = context_logger(__name__, agent=agent_id, peer=source)
    try:
        async with asyncio.timeout(runtime.settings.facts_timeout):
            chan, _ = await conn.create_session(lambda: session, FACTS_COMMAND, encoding=None)
            await session.done
    except (asyncssh.Error, OSError, TimeoutError) as exc:
        tlog.warning("agent %s gave no facts: %s", agent_id, type(exc).__name__)
        return
    status = chan.get_exit_status()
    try:
        if session.too_large:
            raise FactsRefused(
                f"the agent's facts were refused: they are larger than {FACTS_OUTPUT_MAX} bytes",
                code="facts_too_large",
                status=413,
            )
        if status != 0:
            tlog.warning("agent %s: sl:facts exited %s", agent_id, status)
            return
        facts = parse_facts_output(bytes(session.data))
    except FactsRefused as exc:
        tlog.warning("agent %s: facts refused: %s", agent_id, exc.message)
        await services.audit.record(
            actor=f"agent:{agent_id}",
            action="agent.facts",
            target=agent_id,
            outcome="denied",
            source=source,
            details={"reason": exc.code, "message": exc.message[:200]},
        )
        return
    runtime.presence.facts(agent_id, facts, services.clock())
    await runtime.presence.flush()
    # Older agents report no software; say what was stored, once it is stored.
    packages, services_ = (len(_names(facts, key)) for key in ("packages", "services"))
    log.info("agent %s facts stored: %d packages, %d services", agent_id, packages, services_)


def _names(facts: dict[str, object], key: str) -> list[object]:
    value = facts.get(key)
    return value if isinstance(value, list) else []
