"""/readyz and /healthz under a herd and without a database, on a private PostgreSQL
cluster (tests/support/private_pg.py) that the test can stop for real: a node whose
connection pool is held by slow queries is busy, not down, and stays ready and healthy; a
node whose database is gone is neither, and is both again once the database is back."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Final

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.pool import QueuePool

import tests.support.private_pg as private_pg_support
from broker.cluster.readiness import PROBE_WAIT_S
from broker.services import SERVICES
from tests.support.api import Api
from tests.support.broker import init_dir
from tests.support.database import run_sync
from tests.support.private_pg import PrivatePostgres

pytestmark = [pytest.mark.postgres]

WAIT: Final = 30.0  # failure bound for waits, never a pause
#: The advisory lock the test holds and the slow queries wait for.
LOCK_KEY: Final = 7316

private_pg = private_pg_support.private_pg


@pytest.fixture
def data_dir(private_pg: PrivatePostgres, tmp_path: Path) -> Path:
    """A data dir whose database lives in the private cluster (conftest's `api` uses it)."""
    backend = run_sync(private_pg.backend())
    return init_dir(tmp_path / "data", backend, database_url=backend.url)


async def ready(api: Api) -> tuple[int, object]:
    # Bounded: a check that waits for the pool would wait for the slow queries to end.
    async with asyncio.timeout(3 * PROBE_WAIT_S):
        r = await api.client.get("/readyz")
        return r.status, (await r.json())["database"]


async def healthy(api: Api) -> tuple[int, object]:
    async with asyncio.timeout(3 * PROBE_WAIT_S):
        r = await api.client.get("/healthz")
        return r.status, (await r.json())["status"]


async def test_a_node_whose_pool_is_held_by_slow_queries_is_ready(
    api: Api, private_pg: PrivatePostgres
) -> None:
    """Every connection of the node's pool runs a query that waits for a lock the test
    holds (an agent herd's lookups on a busy database): /readyz and /healthz still answer
    200, and the pool is as exhausted after the answers as before them."""
    engine = api.client.app[SERVICES].engine
    pool = engine.pool
    assert isinstance(pool, QueuePool)
    capacity = pool.size() + pool._max_overflow  # what a herd can hold at once
    blocker = await asyncpg.connect(private_pg.plain_dsn("secondline"))
    await blocker.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
    held = 0
    all_held = asyncio.Event()

    async def slow_query() -> None:
        nonlocal held
        async with engine.connect() as conn:
            held += 1
            if held == capacity:
                all_held.set()
            await conn.execute(text("SELECT pg_advisory_lock_shared(:key)"), {"key": LOCK_KEY})

    holders = [asyncio.create_task(slow_query()) for _ in range(capacity)]
    try:
        async with asyncio.timeout(WAIT):
            await all_held.wait()
        assert pool.checkedout() == capacity
        assert await ready(api) == (200, "up")
        assert await healthy(api) == (200, "ok")
        assert pool.checkedout() == capacity  # nothing was freed to answer
    finally:
        await blocker.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
        async with asyncio.timeout(WAIT):
            await asyncio.gather(*holders)
        await blocker.close()


async def test_a_node_whose_database_is_gone_is_not_ready(
    api: Api, private_pg: PrivatePostgres
) -> None:
    """The database stopped for real: 503 naming the database, from both checks; ready and
    healthy again once it is back (the probe's kept connection died with it and is made
    anew)."""
    assert await ready(api) == (200, "up")
    await private_pg.stop()
    try:
        assert await ready(api) == (503, "down")
        assert await healthy(api) == (503, "unavailable")
    finally:
        await private_pg.start()
    assert await ready(api) == (200, "up")
    assert await healthy(api) == (200, "ok")
