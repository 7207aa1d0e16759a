"""A ticket gone in its external system is told on every node: the node that saw it tells
its own sessions and publishes the notice on the cluster bus (a real nats-server on
127.0.0.1:4222, which .ci/run starts; and the single node's in-process bus); each other
node tells its own sessions, the sender not twice, and a malformed notice is dropped."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest

from broker.cluster.bus import Bus, InProcessBus
from broker.cluster.messages import Subjects
from broker.cluster.nats_bus import NatsBus
from broker.connectors.notices import GoneNotices

NATS_URL = os.environ.get("SECONDLINE_TEST_NATS", "nats://127.0.0.1:4222")
WAIT = 30.0  # failure bound on a shared, loaded machine, never a pause
TOLD = "RT-81 was merged into RT-90 in the ticket system and T-1002 is closed"


@pytest.fixture(params=["in-process", "nats"])
async def buses(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Bus, Bus]]:
    """Two nodes' members of one bus: the same object in-process, two connections on NATS."""
    if request.param == "in-process":
        local = InProcessBus()
        yield local, local
        await local.close()
        return
    one = await NatsBus.connect(NATS_URL, name="test-a")
    two = await NatsBus.connect(NATS_URL, name="test-b")
    yield one, two
    await one.close()
    await two.close()


class Sessions:
    """What a node's sessions were told (its ``tell_sessions``), with an event per telling."""

    def __init__(self) -> None:
        self.told: list[tuple[int, str]] = []
        self.changed = asyncio.Event()

    def tell(self, ticket: int, message: str) -> None:
        self.told.append((ticket, message))
        self.changed.set()

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(WAIT):
            while len(self.told) < count:
                self.changed.clear()
                await self.changed.wait()


async def test_every_node_tells_its_sessions_once(buses: tuple[Bus, Bus]) -> None:
    """Node a sees the merge: a's sessions are told at once and once, b's by the bus;
    a malformed notice and one of another cluster change nothing."""
    one, two = buses
    subject = Subjects(f"test{os.getpid()}x{id(one)}").tickets
    seen_a, seen_b = Sessions(), Sessions()
    node_a = GoneNotices(one, subject, "a", seen_a.tell)
    node_b = GoneNotices(two, subject, "b", seen_b.tell)
    await node_a.start()
    await node_b.start()
    other_cluster = Subjects("elsewhere").tickets
    try:
        if isinstance(two, NatsBus):
            await two._nc.flush()  # the subscriptions are at the server before we publish
        await one.publish(subject, b'{"ticket": "1002", "message": "x", "origin": "c"}')
        await one.publish(
            subject, b'{"ticket": 1002, "message": "\\u001b[2J wiped", "origin": "c"}'
        )
        await one.publish(other_cluster, b'{"ticket": 1002, "message": "x", "origin": "c"}')
        await node_a.gone(1002, TOLD)
        assert seen_a.told[-1] == (1002, TOLD)  # at once, before the bus carried anything
        # Published after a's own notice on the same connection, so heard after it: once a
        # has it, a's own notice has come back, and was skipped.
        await one.publish(subject, b'{"ticket": 1003, "message": "last", "origin": "c"}')
        await seen_b.wait_for(3)
        await seen_a.wait_for(3)
    finally:
        await node_a.stop()
        await node_b.stop()
    # The escape sequence of the foreign notice is cleaned; a's own notice is told once.
    wiped, last = (1002, "[2J wiped"), (1003, "last")
    assert seen_b.told == [wiped, (1002, TOLD), last]
    assert sorted(seen_a.told) == sorted([wiped, (1002, TOLD), last])
