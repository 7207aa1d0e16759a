"""The agent records that tunnel upgrades need, looked up together.

After a cluster restart thousands of agents dial within seconds, and each upgrade looked
its agent up on its own: a pooled connection's ping, ``BEGIN``, a ``SELECT`` of the whole
record (its facts and customer included, made into an ORM object) and ``ROLLBACK``, four
round trips to PostgreSQL per attempt. The restart storm bench found 19-23 % of every
node's samples there (docs/benchmarks.md, "Restart storm"). So the upgrades waiting at
one moment share one lookup: one ``SELECT`` of the three columns a tunnel needs for every
agent id waiting, outside a transaction (it reads one committed row per agent, so it
needs none). While that query runs, the next upgrades gather for the one after it: a
single upgrade is looked up at once, a herd in a few queries.

The answer is as fresh as before: every waiting upgrade is answered by a query that began
after it arrived, so a revocation committed before an agent dialled is seen.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Final

#: The most agent ids one query asks for (bound parameters of one ``IN``).
MAX_BATCH: Final = 500


class TunnelIdentity:
    """What a live tunnel keeps of its agent's record (thousands are held at once)."""

    __slots__ = ("agent_id", "name", "public_key")

    def __init__(self, agent_id: str, name: str, public_key: str) -> None:
        self.agent_id = agent_id
        self.name = name
        self.public_key = public_key


#: An enrolled agent as the lookup finds it: its identity, and whether it was revoked.
Found = tuple[TunnelIdentity, bool]
#: Looks up many agent ids at once: the enrolled ones among them (unknown ids are absent).
Fetch = Callable[[Collection[str]], Awaitable[Mapping[str, Found]]]


class IdentityLookup:
    """Looks agents up for tunnel upgrades, the upgrades waiting at one moment together."""

    def __init__(self, fetch: Fetch, *, max_batch: int = MAX_BATCH) -> None:
        self._fetch = fetch
        self._max_batch = max_batch
        self._waiting: dict[str, list[asyncio.Future[Found | None]]] = {}
        self._runner: asyncio.Task[None] | None = None
        #: Upgrades whose agents the query under way asks for.
        self._in_query = 0
        #: Queries made and agent ids they asked for (what batching saved, for tests).
        self.queries = 0
        self.asked = 0

    @property
    def under_way(self) -> int:
        """Upgrades waiting for their agent's record now."""
        return sum(len(futures) for futures in self._waiting.values()) + self._in_query

    async def get(self, agent_id: str) -> Found | None:
        """The agent's identity and whether it is revoked; None when it is not enrolled.
        Raises what the database raised (every upgrade of that query sees it)."""
        future: asyncio.Future[Found | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(agent_id, []).append(future)
        if self._runner is None:
            # A task of its own: an upgrade cancelled while it waits (its agent went away)
            # must not cancel the query the others wait for.
            self._runner = asyncio.get_running_loop().create_task(self._run(), name="agent lookups")
        return await future

    async def _run(self) -> None:
        try:
            while self._waiting:
                batch = self._take()
                await self._answer(batch)
        finally:
            self._runner = None

    def _take(self) -> dict[str, list[asyncio.Future[Found | None]]]:
        batch: dict[str, list[asyncio.Future[Found | None]]] = {}
        for agent_id in list(self._waiting)[: self._max_batch]:
            futures = [f for f in self._waiting.pop(agent_id) if not f.done()]
            if futures:  # an upgrade cancelled while it waited needs no answer
                batch[agent_id] = futures
        return batch

    async def _answer(self, batch: dict[str, list[asyncio.Future[Found | None]]]) -> None:
        if not batch:
            return
        self.queries += 1
        self.asked += len(batch)
        self._in_query = sum(len(futures) for futures in batch.values())
        try:
            found = await self._fetch(batch.keys())
        except asyncio.CancelledError:
            for futures in batch.values():
                for future in futures:
                    future.cancel()
            raise
        except Exception as exc:  # the database's error is each waiting upgrade's to handle
            for futures in batch.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
            return
        finally:
            self._in_query = 0
        for agent_id, futures in batch.items():
            for future in futures:
                if not future.done():
                    future.set_result(found.get(agent_id))

    async def close(self) -> None:
        """Cancel a query under way (at shutdown); its waiting upgrades are cancelled."""
        runner = self._runner
        if runner is not None:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        for futures in self._waiting.values():
            for future in futures:
                future.cancel()
        self._waiting.clear()
