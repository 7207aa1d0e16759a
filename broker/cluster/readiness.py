"""Whether this node's database answers, asked without queueing behind the node's own work
(``/readyz``, and ``/healthz`` since a herd made it time out the same way).

``/readyz`` used to take a connection from the node's pool, the one agent lookups and
API requests use. A restarting cluster's herd of agents holds every pooled connection
with its lookups, so the probe waited for one, gave up after :data:`PROBE_WAIT_S` and
said 503: the load balancer took a busy, healthy node out, and with all of them out it
turned every agent away (docs/benchmarks.md, "Restart storm").

So the probe has a pool of its own: one connection, to the same database, used by
nothing else. A node whose database answers is ready however busy its pool is; a node
whose database is gone is not (the probe's connection fails, and so does connecting
again). It costs the database one more connection per node.
"""

from __future__ import annotations

import asyncio
from typing import Final

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool

#: A readiness look at the database gives up after this long.
PROBE_WAIT_S: Final = 2.0


def own_connection(engine: AsyncEngine) -> AsyncEngine:
    """An engine of one kept connection to ``engine``'s database, outside its pool (a herd's
    lookups holding every pooled connection must not hold this one up)."""
    return create_async_engine(
        engine.url,
        poolclass=AsyncAdaptedQueuePool,
        pool_size=1,
        max_overflow=0,
        pool_pre_ping=True,
    )


class DatabaseProbe:
    """``SELECT 1`` on a connection of its own (made on first use, kept between probes)."""

    def __init__(self, engine: AsyncEngine, wait: float = PROBE_WAIT_S) -> None:
        self.wait = wait
        # One connection and no overflow: probes come one a second from each load
        # balancer; two at once (a slow database) wait for each other, within `wait`.
        # Pre-ping: the kept connection may have died with a database restart, and the
        # first probe after the restart must not fail for that.
        self.engine = own_connection(engine)

    async def database_up(self) -> bool:
        try:
            async with asyncio.timeout(self.wait), self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except (TimeoutError, OperationalError, DBAPIError, OSError):
            return False
        return True

    async def close(self) -> None:
        await self.engine.dispose()
