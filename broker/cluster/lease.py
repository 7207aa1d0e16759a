"""Each cluster node's lease in the database: the proof that a silent node still runs.

Silence on NATS does not prove a node dead. A node that starts slowly (its first
announcement late), or whose NATS connection stalls while its sessions go on, is silent
and alive; taken for dead, its agents would be marked offline and its live sessions sealed
as interrupted by another node while it still records them. So before a node takes
another for dead, it asks the database whether that node renewed its lease within
:data:`~broker.db.models_cluster.NODE_LEASE_S`; and the statements that act on a dead
node's rows (its agents offline, the claim that seals its sessions) carry the same
condition, so a node that renews between the look and the act is left alone.

Every node renews its lease once a heartbeat, before it announces itself, so by the time
its presence lease runs out in another node's view its database lease has lapsed too. The
renewal and the look use the database's clock (``now()``) on both sides: a node whose
clock is 30 s off renews and judges like the others. They run on a connection of their
own, as ``/readyz`` does (broker.cluster.readiness): a pool held by a herd of agent
lookups must not let a busy node's lease lapse.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from typing import Final

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.cluster.readiness import own_connection
from broker.db.models_cluster import NodeLease, lease_renewed

log = logging.getLogger(__name__)

#: A renewal or a look gives up after this long (the next heartbeat tries again).
LEASE_WAIT_S: Final = 2.0
DB_ERRORS: Final = (TimeoutError, OperationalError, DBAPIError, OSError)


class NodeLeases:
    """This node's lease, and a look at the others'; on PostgreSQL (a cluster's database)."""

    def __init__(self, engine: AsyncEngine, node: str) -> None:
        self.node = node
        self.engine = own_connection(engine)
        self._failing = False

    async def renew(self) -> bool:
        """Renew this node's lease; False (logged once per outage) when the database does
        not take it: the others then take this node for dead once it is silent too."""
        stmt = insert(NodeLease).values(node=self.node, renewed_at=func.now())
        stmt = stmt.on_conflict_do_update(
            index_elements=[NodeLease.node], set_={"renewed_at": func.now()}
        )
        try:
            async with asyncio.timeout(LEASE_WAIT_S), self.engine.begin() as conn:
                await conn.execute(stmt)
        except DB_ERRORS as exc:
            if not self._failing:
                log.warning("node %s could not renew its lease: %s", self.node, type(exc).__name__)
            self._failing = True
            return False
        self._failing = False
        return True

    async def lapsed(self, nodes: Collection[str]) -> set[str] | None:
        """Those of ``nodes`` whose lease lapsed: dead. None when the database does not
        answer (nothing is taken for dead, or alive, on a guess)."""
        if not nodes:
            return set()
        stmt = select(NodeLease.node).where(NodeLease.node.in_(sorted(nodes)), lease_renewed())
        try:
            async with asyncio.timeout(LEASE_WAIT_S), self.engine.connect() as conn:
                alive = set((await conn.execute(stmt)).scalars().all())
        except DB_ERRORS as exc:
            log.warning("could not read the nodes' leases: %s", type(exc).__name__)
            return None
        return set(nodes) - alive

    async def release(self) -> None:
        """Give the lease up (a clean stop): what this node left behind is the others'."""
        try:
            async with asyncio.timeout(LEASE_WAIT_S), self.engine.begin() as conn:
                await conn.execute(delete(NodeLease).where(NodeLease.node == self.node))
        except DB_ERRORS as exc:
            log.info("node %s could not release its lease: %s", self.node, type(exc).__name__)

    async def close(self) -> None:
        await self.engine.dispose()
