"""The audit of refused agent tunnels: every refusal accounted for, not one write each.

A bad agent retries for as long as it runs: the real agent about once a minute at the
cap of its backoff, a hostile client as fast as it likes, and an unknown agent id costs an
attacker nothing to invent. Each audit event is a serialised, signed database
transaction, so written one per refusal, a refusal cost the broker far more CPU than a
good agent's whole connection (measured with the agent swarm: 5.6 ms against 3.5 ms; a
counted repeat now costs about what a connection does, its TLS and SSH key exchange), and
one bad key wrote an event a minute, 1,440 a day, for as long as it ran.

So the first refusal of its kind in a window (:data:`WINDOW_S`) is audited at once, with
its details; "of its kind" means the same claimed agent id (or none, for ids nobody
enrolled: they are the attacker's choice), the same source and the same reason. Those
after it in the window are counted, and one summary event when the window ends says how
many there were, from when to when (``details``: ``reason``, ``repeats``, ``first_at``,
``last_at``). At shutdown every open window's count is written.

:class:`RefusalDigest` (``broker/audit/refusals.py``, shared with the summaries of
anonymous refusals) is the pure bookkeeping; :class:`RefusalAuditor` writes the events.
"""

from __future__ import annotations

import logging
import time

from broker.audit.refusals import WINDOW_S, RefusalDigest, Summary
from broker.audit.summary_writer import SummaryWriter
from broker.services import Services

log = logging.getLogger(__name__)

__all__ = ["WINDOW_S", "RefusalAuditor", "RefusalDigest", "Summary"]


class RefusalAuditor(SummaryWriter):
    """Writes the audit events :class:`RefusalDigest` asks for (one per node)."""

    def __init__(self, services: Services, window: float = WINDOW_S) -> None:
        super().__init__(RefusalDigest(window=window))
        self._services = services

    async def refused(
        self,
        agent_id: str,
        *,
        enrolled: bool,
        source: str,
        reason: str,
        per_agent: bool = True,
        **details: object,
    ) -> bool:
        """Account for one refusal; True when it was audited on its own just now.
        ``per_agent=False``: a refusal about the node, not the agent (a node at its share),
        is one kind for every agent, so that a herd writes one event, not one per agent."""
        kind = (agent_id if enrolled and per_agent else "", source, reason)
        if not self._digest.refused(kind, time.monotonic(), self._services.clock()):
            return False
        await self._record(agent_id, source, {"reason": reason, **details})
        self._arm()
        return True

    async def _record(self, agent_id: str, source: str, details: dict[str, object]) -> None:
        await self._services.audit.record(
            actor=f"agent:{agent_id}" if agent_id else "anonymous",
            action="agent.tunnel",
            target=agent_id,
            outcome="denied",
            source=source,
            details=details,
        )

    async def _write(self, summaries: list[Summary]) -> None:
        for summary in summaries:
            agent_id, source, reason = summary.kind
            try:
                await self._record(
                    agent_id,
                    source,
                    {
                        "reason": reason,
                        "repeats": summary.repeats,
                        "first_at": summary.first_at.isoformat(),
                        "last_at": summary.last_at.isoformat(),
                    },
                )
            except Exception:  # a task boundary: say so rather than lose it silently
                log.exception(
                    "could not audit %d repeated tunnel refusals of %r from %s (%s)",
                    summary.repeats,
                    agent_id,
                    source,
                    reason,
                )
