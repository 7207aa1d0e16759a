"""The herd a restarting cluster expects back (broker.cluster.herd), counted in a real
database: agents whose tunnel was up in the last ten minutes, revoked ones and agents
never connected left out, and a count that stands when the database cannot answer."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpClient
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from broker.agents import agent_store
from broker.cluster.herd import RECENT_S, HerdEstimate
from tests.component.test_agents_harness import WAIT, start_agents_app

pytestmark = pytest.mark.postgres


async def test_agents_seen_in_the_last_ten_minutes_are_expected_back(
    data_dir: Path, aiohttp_client: AiohttpClient
) -> None:
    async with start_agents_app(data_dir, aiohttp_client) as agents:
        await agents.customer("acme")
        online, gone, revoked = [await agents.agent(name) for name in ("on", "gone", "rev")]
        await agents.agent("never")  # enrolled, never connected: nothing to come back
        for agent in (online, gone, revoked):
            await agent.connect()
            async with asyncio.timeout(WAIT):
                await agents.registry.wait_ready(agent.id)
        await gone.close()
        async with asyncio.timeout(WAIT):
            await agents.registry.wait_for(gone.id, online=False)
        await agents.api.call("POST", f"/agents/{revoked.id}/revoke", expect=200)
        await agents.runtime.presence.flush()
        services = agents.services

        async def seen_since(since: dt.datetime) -> int:
            async with services.db() as db:
                return await agent_store.count_seen_since(db, since)

        now = services.clock()
        herd = HerdEstimate(seen_since, lambda: now)
        await herd.read()
        assert herd.expected == 2  # online, and gone a moment ago; not revoked, not never

        # Ten minutes on, those are no longer expected (they came back, or are gone).
        later = now + dt.timedelta(seconds=RECENT_S + 60)
        stale = HerdEstimate(seen_since, lambda: later)
        await stale.read()
        assert stale.expected == 0

        # A database that cannot answer leaves the last count standing.
        nowhere = create_async_engine(f"sqlite+aiosqlite:///{data_dir}/no/such/dir/db")
        try:
            unreachable = async_sessionmaker(nowhere)

            async def cannot_answer(since: dt.datetime) -> int:
                async with unreachable() as db:
                    return await agent_store.count_seen_since(db, since)

            broken = HerdEstimate(cannot_answer, lambda: now)
            broken.expected = 7
            await broken.read()
            assert broken.expected == 7
        finally:
            await nowhere.dispose()
