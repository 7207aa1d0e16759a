"""Nodes' leases in the database, on real PostgreSQL (a cluster's database): a node that
renews its lease is alive however silent it is, so nobody seals its sessions or marks its
agents offline; once its lease has lapsed, exactly one node may. And a node whose clock is
30 s ahead never marks offline an agent that has moved to another node."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.agents import agent_store
from broker.agents.presence import Offline, Online, PendingChanges, write_batch
from broker.cluster.lease import NodeLeases
from broker.db.engine import create_engine, migrate, session_factory
from broker.db.models_agents import Agent
from broker.db.models_cluster import NODE_LEASE_S, NodeLease
from broker.db.models_sessions import RemoteSession
from broker.db.models_staff import Customer
from broker.sessions import store as session_store
from tests.support.database import Backend

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.parametrize("backend", ["postgresql"], indirect=True),
]

SID = "s-" + "L" * 22
AGENT = "ag-" + "l" * 16
NOW = dt.datetime(2026, 12, 7, tzinfo=dt.UTC)


@pytest.fixture
async def engine(backend: Backend) -> AsyncIterator[AsyncEngine]:
    """A migrated database holding n1's live session and its agent, online on n1."""
    await asyncio.to_thread(migrate, backend.url)
    engine = create_engine(backend.url)
    async with session_factory(engine)() as s, s.begin():
        customer = Customer(name="acme", display_name="Acme", created_at=NOW)
        s.add(customer)
        await s.flush()
        s.add(
            Agent(
                id=AGENT, name="web01", customer_id=customer.id, labels={}, facts={},
                consent="unattended", public_key="ssh-ed25519 AAAA", key_fingerprint="SHA256:l",
                enrolled_with="t", enrolled_at=NOW, online=True, node="n1", connected_at=NOW,
            )
        )  # fmt: skip
        s.add(
            RemoteSession(
                id=SID, ticket_id=7, customer="acme", agent_id=AGENT, agent_name="web01",
                owner="bob", owner_level=2, kind="shell", via="ssh", state="live", node="n1",
                created_at=NOW,
            )
        )  # fmt: skip
    yield engine
    await engine.dispose()


async def age_lease(engine: AsyncEngine, node: str, seconds: float) -> None:
    """The lease as the database would hold it ``seconds`` after its last renewal (the
    node died then): the test moves the row, not the clock."""
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE node_leases SET renewed_at = now() - make_interval(secs => :s) "
                 "WHERE node = :node"),
            {"s": seconds, "node": node},
        )  # fmt: skip


async def test_a_silent_node_that_renews_its_lease_keeps_its_session_and_agents(
    engine: AsyncEngine,
) -> None:
    """n1 renews its lease: n2 finds it alive, cannot claim its session nor mark its agent
    offline; once the lease is older than the lease time, n2 finds it dead and does both,
    and n3 after it finds the claim taken."""
    db = session_factory(engine)
    n1, n2 = NodeLeases(engine, "n1"), NodeLeases(engine, "n2")
    try:
        assert await n1.renew() is True
        assert await n2.lapsed({"n1", "n9"}) == {"n9"}  # n9 never held a lease

        async with db() as s, s.begin():
            assert await session_store.claim_recovery(s, SID, by="n2", gone="n1") is False
            assert await agent_store.mark_node_offline(s, "n1", dead=True) == 0
        async with db() as s:
            row = await s.get(RemoteSession, SID)
            assert row is not None
            assert row.recovered_by is None
            agent = await s.get(Agent, AGENT)
            assert agent is not None
            assert agent.online is True

        await age_lease(engine, "n1", NODE_LEASE_S - 1)
        assert await n2.lapsed({"n1"}) == set()  # still within its lease
        await age_lease(engine, "n1", NODE_LEASE_S + 1)
        assert await n2.lapsed({"n1"}) == {"n1"}
        async with db() as s, s.begin():
            assert await session_store.claim_recovery(s, SID, by="n2", gone="n1") is True
            assert await agent_store.mark_node_offline(s, "n1", dead=True) == 1
        async with db() as s, s.begin():
            assert await session_store.claim_recovery(s, SID, by="n3", gone="n1") is False

        # A node that stops cleanly gives its lease up; one that renews again is alive.
        await n1.renew()
        await n1.release()
        async with db() as s:
            assert (await s.execute(select(NodeLease.node))).scalars().all() == []
    finally:
        await n1.close()
        await n2.close()


async def test_a_node_restarted_under_its_name_is_alive_again(engine: AsyncEngine) -> None:
    """n1 died (its lease lapsed) and starts again before anyone sealed its session: its
    first renewal makes the others leave the session to it."""
    n1 = NodeLeases(engine, "n1")
    try:
        await n1.renew()
        await age_lease(engine, "n1", NODE_LEASE_S + 5)
        assert await n1.lapsed({"n1"}) == {"n1"}
        await n1.renew()
        assert await n1.lapsed({"n1"}) == set()
        async with session_factory(engine)() as s, s.begin():
            assert await session_store.claim_recovery(s, SID, by="n2", gone="n1") is False
            assert await session_store.claim_recovery(s, SID, by="n1") is True
    finally:
        await n1.close()


async def test_a_tunnel_ending_on_a_node_whose_clock_is_ahead_leaves_a_newer_one_online(
    engine: AsyncEngine,
) -> None:
    """web01's tunnel on n1, whose clock is 30 s ahead, was half-open; the agent came back
    on n2 five seconds later by the true time (25 s earlier by n1's clock). When n1 writes
    its old tunnel offline, the agent stays online on n2: the row is n2's now."""
    db = session_factory(engine)
    skew = dt.timedelta(seconds=30)
    on_n1_at = NOW + skew  # n1's clock
    on_n2_at = NOW + dt.timedelta(seconds=5)  # n2's clock, right
    for node, change in (
        ("n1", Online(on_n1_at)),
        ("n2", Online(on_n2_at)),
        ("n1", Offline(on_n1_at, on_n1_at + dt.timedelta(seconds=40))),
    ):
        batch = PendingChanges()
        batch.presence[AGENT] = change
        async with db() as s, s.begin():
            await write_batch(s, batch, node)
    async with db() as s:
        agent = await s.get(Agent, AGENT)
        assert agent is not None
        assert (agent.online, agent.node, agent.connected_at) == (True, "n2", on_n2_at)
