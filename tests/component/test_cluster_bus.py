"""The bus between nodes, both implementations over the same tests: in-process (a single
node) and NATS (a real nats-server on 127.0.0.1:4222, which .ci/run starts)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest

from broker.cluster.bus import Bus, BusUnavailable, InProcessBus, Message, NoResponder
from broker.cluster.nats_bus import NatsBus

NATS_URL = os.environ.get("SECONDLINE_TEST_NATS", "nats://127.0.0.1:4222")
WAIT = 30.0  # failure bound on a shared, loaded machine, never a pause


@pytest.fixture(params=["in-process", "nats"])
async def buses(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Bus, Bus]]:
    """Two members of one bus: the same object in-process, two connections on NATS."""
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


def _unique(name: str) -> str:
    return f"secondline.test.{os.getpid()}.{id(object())}.{name}"


async def test_a_published_message_reaches_every_subscriber(buses: tuple[Bus, Bus]) -> None:
    """Publish on one member; a wildcard subscriber on the other gets it."""
    one, two = buses
    subject = _unique("presence")
    got: asyncio.Queue[Message] = asyncio.Queue()

    async def handler(message: Message) -> None:
        await got.put(message)

    sub = await two.subscribe(subject.rsplit(".", 1)[0] + ".*", handler)
    if isinstance(two, NatsBus):
        await two._nc.flush()  # the subscription is at the server before we publish
    await one.publish(subject, b"hello")
    async with asyncio.timeout(WAIT):
        message = await got.get()
    assert (message.subject, message.data) == (subject, b"hello")
    await sub.unsubscribe()


async def test_a_request_gets_one_answer_and_nobody_listening_is_said(
    buses: tuple[Bus, Bus],
) -> None:
    """Request/reply across members; a subject nobody listens on is NoResponder at once."""
    one, two = buses
    subject = _unique("kill")

    async def answer(message: Message) -> None:
        await two.publish(message.reply, b"done:" + message.data)

    sub = await two.subscribe(subject, answer)
    if isinstance(two, NatsBus):
        await two._nc.flush()
    assert await one.request(subject, b"s1", WAIT) == b"done:s1"
    gathered = await one.gather(subject, b"s2", 1.0)
    assert gathered == [b"done:s2"]
    await sub.unsubscribe()
    with pytest.raises(NoResponder):
        await one.request(_unique("nobody"), b"", WAIT)


async def test_nats_that_does_not_answer_is_a_clear_refusal() -> None:
    """A node pointed at a port where no NATS runs is told where it looked and what to do."""
    with pytest.raises(BusUnavailable, match=r"cannot reach NATS at nats://127\.0\.0\.1:1 "):
        await NatsBus.connect("nats://127.0.0.1:1", name="nobody", wait=1.0)
