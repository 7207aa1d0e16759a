"""Presence and facts of agents, written to the database in batches.

After a broker restart thousands of agents connect within a minute; two small write
transactions per agent (online, then facts) would queue on the database's write lock
(SQLite has one, and sleeps while waiting for it). :class:`PresenceWriter` collects the
changes instead and writes whatever is pending in one transaction, with one
``executemany`` per kind of change; under load a batch holds hundreds of agents, when
idle it holds one and leaves at once.

Only the last change per agent matters, so changes are coalesced (:class:`PendingChanges`,
pure). An offline write is conditional on the agent being marked online by this node and
on ``connected_at`` not being newer than the tunnel that ended, so it never hides a newer
tunnel of the same agent: on this node (the times compared are of one clock), or on
another node of a cluster, whose clock may be half a minute off this one's, so that its
newer tunnel can carry an older time.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, cast

from sqlalchemy import Table, and_, bindparam, or_, update
from sqlalchemy.ext.asyncio import AsyncSession

from broker.db.models_agents import Agent
from broker.services import Services
from broker.supervision import OnFailure, Supervisor

log = logging.getLogger(__name__)

#: At shutdown, how long pending presence may wait for the database.
STOP_FLUSH_S: Final = 2.0
RETRY_AFTER_FAILURE_S: Final = 1.0
_AGENTS: Final = cast(Table, Agent.__table__)


@dataclass(frozen=True, slots=True)
class Online:
    connected_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Offline:
    connected_at: dt.datetime
    at: dt.datetime


@dataclass(frozen=True, slots=True)
class FactsChange:
    facts: Mapping[str, object]
    at: dt.datetime


@dataclass
class PendingChanges:
    """The newest presence and the newest facts of each agent, not yet written (pure)."""

    presence: dict[str, Online | Offline] = field(default_factory=dict)
    facts: dict[str, FactsChange] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.presence or self.facts)

    def __len__(self) -> int:
        return len(self.presence) + len(self.facts)

    def merge_older(self, older: PendingChanges) -> None:
        """Put back a batch that failed, under the changes that came after it."""
        for agent_id, change in older.presence.items():
            self.presence.setdefault(agent_id, change)
        for agent_id, facts in older.facts.items():
            self.facts.setdefault(agent_id, facts)

    def rows(self, node: str) -> tuple[list[dict[str, object]], ...]:
        """Parameters for the online, offline and facts statements."""
        online: list[dict[str, object]] = []
        offline: list[dict[str, object]] = []
        for agent_id, change in self.presence.items():
            if isinstance(change, Online):
                online.append({"b_id": agent_id, "b_node": node, "b_at": change.connected_at})
            else:
                offline.append(
                    {
                        "b_id": agent_id,
                        "b_node": node,
                        "b_connected": change.connected_at,
                        "b_at": change.at,
                    }
                )
        facts = [
            {"b_id": agent_id, "b_facts": dict(f.facts), "b_at": f.at}
            for agent_id, f in self.facts.items()
        ]
        return online, offline, facts


_ONLINE: Final = (
    update(_AGENTS)
    .where(_AGENTS.c.id == bindparam("b_id"), _AGENTS.c.revoked_at.is_(None))
    .values(
        online=True,
        node=bindparam("b_node"),
        connected_at=bindparam("b_at"),
        last_seen=bindparam("b_at"),
    )
)
_OFFLINE: Final = (
    update(_AGENTS)
    .where(
        and_(
            _AGENTS.c.id == bindparam("b_id"),
            _AGENTS.c.node == bindparam("b_node"),
            or_(
                _AGENTS.c.connected_at.is_(None),
                _AGENTS.c.connected_at <= bindparam("b_connected"),
            ),
        )
    )
    .values(online=False, node=None, last_seen=bindparam("b_at"))
)
_FACTS: Final = (
    update(_AGENTS)
    .where(_AGENTS.c.id == bindparam("b_id"))
    .values(facts=bindparam("b_facts"), facts_at=bindparam("b_at"))
)


class PresenceWriter:
    """The one writer of presence and facts for this node (a background task)."""

    def __init__(self, services: Services, node: str, tasks: Supervisor) -> None:
        self._services = services
        self._tasks = tasks
        self._node = node
        self._pending = PendingChanges()
        #: The batch a write is under way for (out of ``_pending`` until it fails).
        self._writing = PendingChanges()
        self._wake = asyncio.Event()
        self._queued = 0
        self._written = 0
        self._progress = asyncio.Event()
        self._started = False

    def start(self) -> None:
        # RESTART: what is still to be written lives in this object, not in the loop, so a
        # new loop writes it; stopping would leave every agent's presence stale until the
        # next broker start.
        self._tasks.keep("presence writer", self._run, on_failure=OnFailure.RESTART)
        self._started = True

    async def stop(self) -> None:
        """Write what is pending (for at most STOP_FLUSH_S); the supervisor's stop then
        ends the loop."""
        try:
            async with asyncio.timeout(STOP_FLUSH_S):
                await self.flush()
        except TimeoutError:
            # The database is away: the next start marks every agent offline anyway, so a
            # broker that is told to stop does not wait for it.
            log.warning("presence of %d agents not written at shutdown", self._unwritten_agents())

    def _unwritten_agents(self) -> int:
        """How many agents have a change not in the database: queued, or in the write under
        way (a stop that times out during a write to an absent database found the queue
        empty and said 0)."""
        agents: set[str] = set()
        for changes in (self._pending, self._writing):
            agents.update(changes.presence, changes.facts)
        return len(agents)

    def online(self, agent_id: str, connected_at: dt.datetime) -> None:
        self._pending.presence[agent_id] = Online(connected_at)
        self._queue()

    def offline(self, agent_id: str, connected_at: dt.datetime, at: dt.datetime) -> None:
        self._pending.presence[agent_id] = Offline(connected_at, at)
        self._queue()

    def facts(self, agent_id: str, facts: Mapping[str, object], at: dt.datetime) -> None:
        self._pending.facts[agent_id] = FactsChange(facts, at)
        self._queue()

    def _queue(self) -> None:
        self._queued += 1
        self._wake.set()

    async def flush(self) -> None:
        """Return once every change queued before this call is in the database."""
        target = self._queued
        while self._written < target:
            if not self._started or self._tasks.stopped:
                return
            progress = self._progress
            await progress.wait()

    async def _run(self) -> None:
        failures = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, PendingChanges()
            upto = self._queued
            self._writing = batch
            try:
                await self._write(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a task boundary: keep the changes and try again
                self._writing = PendingChanges()
                # The traceback once; while the database stays away, one line per try.
                if failures == 0:
                    log.exception("could not write the presence of %d agents; retrying", len(batch))
                else:
                    log.error(
                        "could not write the presence of %d agents (%s); retrying",
                        len(batch),
                        type(exc).__name__,
                    )
                failures += 1
                self._pending.merge_older(batch)
                await asyncio.sleep(RETRY_AFTER_FAILURE_S)
                self._wake.set()
                continue
            self._writing = PendingChanges()
            failures = 0
            self._written = upto
            progress, self._progress = self._progress, asyncio.Event()
            progress.set()

    async def _write(self, batch: PendingChanges) -> None:
        if not batch:
            return
        async with self._services.db() as db, db.begin():
            await write_batch(db, batch, self._node)


async def write_batch(db: AsyncSession, batch: PendingChanges, node: str) -> None:
    """The statements of one batch of node ``node``, in the caller's transaction."""
    online, offline, facts = batch.rows(node)
    if online:
        await db.execute(_ONLINE, online)
    if offline:
        await db.execute(_OFFLINE, offline)
    if facts:
        await db.execute(_FACTS, facts)
