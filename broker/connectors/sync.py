"""The long-lived task that keeps the mirrors of every connector up to date.

Each round reads every connector's change feed from its cursor, applies each changed ticket
to the mirror, and stores the cursor after the batch it applied, so a broker stopped mid-way
reads that batch again (applying a ticket twice changes nothing). A connector's first round
starts the feed at its present end and imports the open tickets of its level places.

A failure marks the connector unhealthy with what went wrong (``connector list`` and the
console show it; the change is audited once) and the next round tries again; its mirrored
tickets keep the state last seen, so sessions go on being opened on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

from broker.connectors.errors import ExternalError, ExternalRefused
from broker.connectors.mirror import Mirror
from broker.connectors.outbound import Outbound
from broker.connectors.remote import ExternalSystem
from broker.connectors.store import ConnectorRecord, ConnectorStore, build_system
from broker.services import Services
from broker.supervision import OnFailure, Supervisor

log = logging.getLogger(__name__)

# Change-feed batches applied per connector per round; the rest wait for the next round.
BATCHES_PER_ROUND: Final = 20


class Systems:
    """One client per connector, rebuilt when its URL or credential changed."""

    def __init__(self) -> None:
        self._clients: dict[int, tuple[tuple[str, str, str], ExternalSystem]] = {}

    def get(self, record: ConnectorRecord) -> ExternalSystem:
        key = (record.kind, record.url, record.credential)
        held = self._clients.get(record.id)
        if held is not None and held[0] == key:
            return held[1]
        system = build_system(record)
        self._clients[record.id] = (key, system)
        return system

    async def close(self) -> None:
        for connector_id, ((kind, _, _), system) in self._clients.items():
            try:
                await system.close()
            except (
                Exception
            ):  # shutdown: one client that fails to close must not keep the rest open
                log.exception("closing the %s client of connector %d failed", kind, connector_id)
        self._clients.clear()


class ConnectorSync:
    def __init__(
        self, services: Services, store: ConnectorStore, mirror: Mirror, systems: Systems
    ) -> None:
        self.services = services
        self.store = store
        self.mirror = mirror
        self.systems = systems
        self.outbound = Outbound(services)
        self.interval = services.config.connector_poll_seconds
        self._wake = asyncio.Event()
        self._tasks = Supervisor("connectors")

    def start(self) -> None:
        # RESTART: each connector's cursor is in the store, so a new loop goes on from the
        # last batch applied; stopped, the mirrors would silently fall behind.
        self._tasks.keep("connector sync", self.run, on_failure=OnFailure.RESTART)

    def wake(self) -> None:
        self._wake.set()

    async def close(self) -> None:
        await self._tasks.stop()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            try:
                for record in await self.store.all():
                    await self.sync(record)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the connectors could not be read; retrying")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()

    async def sync(self, record: ConnectorRecord) -> None:
        """One round for one connector."""
        system = self.systems.get(record)
        try:
            cursor = record.cursor
            if cursor is None:
                cursor = await system.start_cursor()
                for external_id in await system.active_tickets():
                    await self._apply(record, system, external_id)
                await self.store.set_cursor(record, cursor)
            for _ in range(BATCHES_PER_ROUND):
                changes = await system.changes(cursor)
                for external_id in changes.external_ids:
                    await self._apply(record, system, external_id)
                if changes.cursor == cursor:
                    break
                cursor = changes.cursor
                await self.store.set_cursor(record, cursor)
            # After the feed: a change made there meanwhile is in the mirror before ours goes.
            await self.outbound.deliver(record, system)
        except ExternalError as exc:
            if await self.store.set_health(record, False, exc.message):
                level = logging.ERROR if isinstance(exc, ExternalRefused) else logging.WARNING
                log.log(level, "connector %s is unhealthy: %s", record.name, exc.message)
            return
        if record.healthy and record.checked_at is not None:
            return
        # Healthy again only when everything `connector test` checks passes, so a queue or
        # a right that is missing stays reported while the feed itself can be read.
        try:
            health = await system.check()
        except ExternalError as exc:
            await self.store.set_health(record, False, exc.message)
            return
        if await self.store.set_health(record, health.ok, health.summary()):
            if health.ok:
                log.info("connector %s is healthy again", record.name)
            else:
                log.warning("connector %s is unhealthy: %s", record.name, health.summary())

    async def _apply(
        self, record: ConnectorRecord, system: ExternalSystem, external_id: str
    ) -> None:
        remote = await system.ticket(external_id)
        line = await self.mirror.apply(record, external_id, remote)
        if line:
            log.info("connector %s: %s", record.name, line)
