"""Start-up recovery in a cluster takes only the starting node's sessions."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from broker.db.all_models import metadata
from broker.db.models_sessions import RemoteSession
from broker.sessions import store


def _row(sid: str, node: str, state: str) -> RemoteSession:
    return RemoteSession(
        id=sid,
        ticket_id=1042,
        customer="acme",
        agent_id="a-" + "x" * 22,
        agent_name="web01",
        owner="max",
        owner_level=2,
        kind="shell",
        via="ssh",
        state=state,
        node=node,
        created_at=dt.datetime(2026, 12, 7, tzinfo=dt.UTC),
    )


async def test_a_cluster_node_recovers_its_own_sessions_and_a_single_node_all() -> None:
    """Node n1 finds only its own unended rows (n2's live sessions are n2's to end); a
    single node (no node name) finds every unended row, whatever host wrote it."""
    engine = create_async_engine("sqlite+aiosqlite://")
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    db = async_sessionmaker(engine)
    async with db() as s, s.begin():
        s.add_all(
            [
                _row("s-n1live", "n1", "live"),
                _row("s-n1wait", "n1", "waiting_consent"),
                _row("s-n2live", "n2", "live"),
                _row("s-n1done", "n1", "ended"),
            ]
        )
    async with db() as s:
        mine = {r.id for r in await store.unfinished(s, node="n1")}
        every = {r.id for r in await store.unfinished(s)}
    await engine.dispose()
    assert mine == {"s-n1live", "s-n1wait"}
    assert every == {"s-n1live", "s-n1wait", "s-n2live"}
