"""Agent tunnels turned away for what needs nothing of the agent's record make no
database query: in a restart storm each attempt paid the agent lookup's round trips
before it was refused. The one let in reads its agent's key and nothing more. Queries are
counted with a listener on the app's real engine."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpClient
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine
from websockets.exceptions import InvalidStatus

from broker.agents.tunnel_answers import FULL_RETRY_S
from broker.agents.tunnel_endpoint import TunnelSettings
from tests.component.test_agents_harness import (
    FAST,
    WAIT,
    AgentsApp,
    LoopbackAgent,
    start_agents_app,
)

pytestmark = pytest.mark.postgres


@contextmanager
def queries(engine: AsyncEngine) -> Iterator[list[str]]:
    """Every statement the engine sends while the block runs."""
    sent: list[str] = []

    def record(_conn: Connection, _cursor: object, statement: str, *_args: object) -> None:
        sent.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


async def refused(agent: LoopbackAgent) -> tuple[int, str, str]:
    """Status, error code and Retry-After of an upgrade the broker turns away."""
    with pytest.raises(InvalidStatus) as caught:
        await agent.open_ws()
    response = caught.value.response
    code = json.loads(response.body)["error"]["code"]
    return response.status_code, code, response.headers["Retry-After"]


async def connected(agents: AgentsApp, agent: LoopbackAgent) -> None:
    """``agent`` online with its facts stored: the broker's own queries for it are done."""
    await agent.connect()
    async with asyncio.timeout(WAIT):
        await agents.registry.wait_ready(agent.id)
    await agents.runtime.presence.flush()


async def test_an_agent_back_before_its_place_in_line_is_refused_without_a_query(
    data_dir: Path, aiohttp_client: AiohttpClient
) -> None:
    """One handshake a second: the next two agents are looked up once and get places in
    line; the last, back at once, is told its remaining wait without being looked up
    again, and its place stays."""
    slow = TunnelSettings(
        handshakes_per_second=1, handshake_burst=1, handshake_timeout=2.0, handshake_hold=0
    )
    async with start_agents_app(data_dir, aiohttp_client, slow) as agents:
        await agents.customer("acme")
        first, second, last = [await agents.agent(name) for name in ("a1", "a2", "a3")]
        await connected(agents, first)
        with queries(agents.services.engine) as looked_up:
            assert (await refused(second))[:2] == (503, "busy")
            assert (await refused(last))[:2] == (503, "busy")
        assert looked_up, "a first attempt is looked up before it gets a place in line"
        assert agents.runtime.limiter.reservations == 2
        with queries(agents.services.engine) as sent:
            status, code, retry_after = await refused(last)
        assert (status, code) == (503, "busy")
        assert int(retry_after) >= 1
        assert sent == []
        assert agents.runtime.limiter.reservations == 2


async def test_an_agent_past_the_tunnel_budget_is_refused_without_a_query(
    data_dir: Path, aiohttp_client: AiohttpClient
) -> None:
    """The broker holds all the tunnels its budget allows: "full" before any lookup."""
    one = TunnelSettings(max_tunnels=1, handshake_timeout=2.0)
    async with start_agents_app(data_dir, aiohttp_client, one) as agents:
        await agents.customer("acme")
        first, second = [await agents.agent(name) for name in ("a1", "a2")]
        await connected(agents, first)
        with queries(agents.services.engine) as sent:
            assert await refused(second) == (503, "full", str(FULL_RETRY_S))
        assert sent == []


async def test_a_handshake_reads_the_agents_key_and_not_its_record(
    data_dir: Path, aiohttp_client: AiohttpClient
) -> None:
    """Until the agent is online the broker sends one select of the agents table, and it
    reads neither the facts (kilobytes of JSON per agent) nor the customer."""
    async with start_agents_app(data_dir, aiohttp_client, FAST) as agents:
        await agents.customer("acme")
        agent = await agents.agent()
        with queries(agents.services.engine) as sent:
            await agent.connect()
            async with asyncio.timeout(WAIT):
                await agents.registry.wait_for(agent.id, online=True)
        selects = [s for s in sent if s.lstrip().upper().startswith("SELECT")]
        assert len(selects) == 1, selects
        (lookup,) = selects
        assert "agents.public_key" in lookup
        assert "facts" not in lookup
        assert "customers" not in lookup


async def test_upgrades_waiting_together_are_looked_up_in_one_query(
    data_dir: Path, aiohttp_client: AiohttpClient
) -> None:
    """A restart storm's upgrades each looked their agent up on their own (a ping, BEGIN,
    the whole record, ROLLBACK). Those waiting at one moment now share one SELECT of the
    columns a tunnel needs, and each still gets its own answer: enrolled, revoked, or
    unknown."""
    async with start_agents_app(data_dir, aiohttp_client) as agents:
        await agents.customer("acme")
        enrolled = [await agents.agent(f"a{i}") for i in range(5)]
        revoked = await agents.agent("gone")
        await agents.api.call("POST", f"/agents/{revoked.id}/revoke", expect=200)
        unknown = "ag-" + "0" * 16
        ids = [a.id for a in enrolled] + [revoked.id, unknown, enrolled[0].id]
        lookup = agents.runtime.lookup
        with queries(agents.services.engine) as sent:
            answers = await asyncio.gather(*(lookup.get(agent_id) for agent_id in ids))
        selects = [s for s in sent if s.lstrip().upper().startswith("SELECT")]
        assert len([s for s in selects if "agents" in s]) == 1, sent
        assert not [s for s in sent if s.strip().upper() in ("BEGIN", "ROLLBACK")], sent
        assert (lookup.queries, lookup.asked) == (1, 7)
        for agent, answer in zip(enrolled, answers, strict=False):
            assert answer is not None
            identity, is_revoked = answer
            assert (identity.agent_id, identity.name, is_revoked) == (
                agent.id,
                agent.answer.name,
                False,
            )
            assert (
                identity.public_key.split()[1] == agent.key.export_public_key().decode().split()[1]
            )
        assert answers[5] is not None
        assert answers[5][1] is True
        assert answers[6] is None
        assert answers[7] is not None
        assert answers[7][0].agent_id == enrolled[0].id
        assert lookup.under_way == 0


async def test_an_upgrade_cancelled_while_it_waits_leaves_the_others_their_answer(
    data_dir: Path, aiohttp_client: AiohttpClient
) -> None:
    """An agent that goes away while its lookup waits (aiohttp cancels its request) must
    not cancel the query the other upgrades wait for."""
    async with start_agents_app(data_dir, aiohttp_client) as agents:
        await agents.customer("acme")
        first, second = [await agents.agent(name) for name in ("a1", "a2")]
        lookup = agents.runtime.lookup
        leaving = asyncio.ensure_future(lookup.get(first.id))
        staying = asyncio.ensure_future(lookup.get(second.id))
        # One turn of the loop: both upgrades wait and the query has begun, unanswered.
        turn = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(turn.set_result, None)
        await turn
        assert lookup.under_way == 2
        leaving.cancel()
        answer = await staying
        assert answer is not None
        assert answer[0].agent_id == second.id
        assert leaving.cancelled()
        # The next upgrade is looked up as usual.
        again = await lookup.get(first.id)
        assert again is not None
        assert again[0].agent_id == first.id
