"""How many agents the cluster expects back: the herd a restart brings.

A node's fair share (broker.cluster.share) divides the agents the nodes hold now. While a
whole cluster restarts that is a count on its way up, and every node counts its own
tunnels at once and the others' as they announced them up to a heartbeat ago: a node
filling as fast as the others looked ahead of them all the time, and turned agents away
long before any node held a third of the herd (the restart storm bench: more than one
refusal per agent). The database knows the herd beforehand: every agent a node held in
the last :data:`RECENT_S` has its ``last_seen`` there (written when its tunnel comes up,
every minute while it stays, and when it goes). The share's total is never less than
that count, so a node takes its share of the agents that are coming, not of those that
have arrived; once they are back the two counts agree.

An agent that has gone for good stops counting after :data:`RECENT_S`; a new agent counts
from its first tunnel. The count is read every :data:`REFRESH_S` on a pooled connection;
when the database does not answer the last count stands.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError

log = logging.getLogger(__name__)

#: Agents seen this recently are expected back: longer than a cluster's restart and its
#: upgrade, short enough that agents gone for good soon stop loosening the share.
RECENT_S: Final = 600.0
#: How often the count is read again.
REFRESH_S: Final = 5.0


class HerdEstimate:
    """The agents seen in the last :data:`RECENT_S`, read again every :data:`REFRESH_S`."""

    def __init__(
        self,
        count_seen_since: Callable[[dt.datetime], Awaitable[int]],
        clock: Callable[[], dt.datetime],
        *,
        refresh: float = REFRESH_S,
    ) -> None:
        self._count = count_seen_since
        self._clock = clock
        self._refresh = refresh
        #: The last count read (0 until the first answer: the share then counts as before).
        self.expected = 0

    async def read(self) -> None:
        """Read the count once; keep the last one when the database cannot answer."""
        since = self._clock() - dt.timedelta(seconds=RECENT_S)
        try:
            self.expected = await self._count(since)
        except (SQLAlchemyTimeoutError, OperationalError, DBAPIError, OSError) as exc:
            log.debug("the expected agents were not counted: %s", exc)

    async def run(self) -> None:
        """Until cancelled (the node stops)."""
        while True:
            await self.read()
            await asyncio.sleep(self._refresh)
