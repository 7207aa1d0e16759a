"""The agent tunnel over the real app on loopback: real WebSockets, real asyncssh on both
sides, presence, facts, replacement, liveness, revocation and every kind of bad peer."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh
import pytest
from pytest_aiohttp import AiohttpClient
from websockets.exceptions import ConnectionClosed, InvalidStatus

from broker.agents.tunnel_answers import FULL_RETRY_S
from broker.agents.tunnel_endpoint import MAX_WS_MESSAGE, TunnelSettings
from tests.component.test_agents_harness import (
    FACTS,
    FAST,
    WAIT,
    AgentsApp,
    eventually_closed,
    start_agents_app,
)
from tests.support.ssh_packets import count_arrivals

pytestmark = pytest.mark.postgres

NEW_FACTS = {**FACTS.to_dict(), "os_version": "13", "users": ["carol"]}


@pytest.fixture
async def agents(data_dir: Path, aiohttp_client: AiohttpClient) -> AsyncIterator[AgentsApp]:
    async with start_agents_app(data_dir, aiohttp_client) as app:
        await app.customer("acme")
        yield app


async def shown(agents: AgentsApp, agent_id: str) -> dict[str, object]:
    await agents.runtime.presence.flush()
    _, data = await agents.api.call("GET", f"/agents/{agent_id}", expect=200)
    assert isinstance(data, dict)
    return data


async def test_a_connected_agent_is_online_with_fresh_facts(agents: AgentsApp) -> None:
    """After connecting, the agent is online, its facts come from sl:facts, and the
    registry hands out a working SSH connection to it."""
    agent = await agents.agent(facts_output=json.dumps(NEW_FACTS).encode() + b"\n")
    await agent.connect()
    async with asyncio.timeout(WAIT):
        conn = await agents.registry.wait_ready(agent.id)
    data = await shown(agents, agent.id)
    assert (data["status"], data["online"]) == ("online", True)
    assert data["facts"] == NEW_FACTS
    assert data["last_seen"] is not None
    result = await conn.run("echo hello", check=True)
    assert result.stdout == "hello\n"
    _, listed = await agents.api.call("GET", "/agents?status=online", expect=200)
    assert isinstance(listed, list)
    assert [a["id"] for a in listed] == [agent.id]
    await agent.close()
    async with asyncio.timeout(WAIT):
        await agents.registry.wait_for(agent.id, online=False)
    assert (await shown(agents, agent.id))["status"] == "offline"


async def test_the_broker_sends_no_ignore_packets_to_the_agent(agents: AgentsApp) -> None:
    """Each packet the broker sends through the tunnel goes alone: no ignore packet in
    front of it (asyncssh sends one before every packet unless told not to;
    agent.ignore_packets)."""
    agent = await agents.agent()
    arrivals = count_arrivals(await agent.connect())
    async with asyncio.timeout(WAIT):
        conn = await agents.registry.wait_ready(agent.id)
        for word in ("one", "two", "three"):
            result = await conn.run(f"echo {word}", check=True)
            assert result.stdout == f"{word}\n"
    assert arrivals.ignored == 0


async def test_a_second_connection_replaces_the_first(agents: AgentsApp) -> None:
    """The same agent dialling again gets the registry's slot; the old tunnel is closed."""
    agent = await agents.agent()
    first = await agent.connect()
    async with asyncio.timeout(WAIT):
        old = await agents.registry.wait_ready(agent.id)
    await agent.connect()
    async with asyncio.timeout(WAIT):
        # The broker closes the old tunnel when the new one takes its place.
        await first.wait_closed()
        conn = await agents.registry.wait_ready(agent.id)
    assert conn is not old
    assert len(agents.registry) == 1
    assert (await shown(agents, agent.id))["status"] == "online"


async def test_an_agent_claiming_another_agents_id_is_refused(agents: AgentsApp) -> None:
    """B's host key cannot pass for A: refused, audited, and A's tunnel is untouched."""
    alice = await agents.agent("alice")
    mallory = await agents.agent("mallory")
    await alice.connect()
    async with asyncio.timeout(WAIT):
        alice_conn = await agents.registry.wait_ready(alice.id)
    with pytest.raises((asyncssh.Error, ConnectionError, OSError)):
        await mallory.connect(claim_id=alice.id)
    async with asyncio.timeout(WAIT):
        await agents.registry.wait_refused(1)
    assert agents.registry.connection(alice.id) is alice_conn
    assert (await alice_conn.run("echo still-here")).stdout == "still-here\n"
    reasons = await agents.denied_reasons()
    assert reasons == ["the SSH host key is not the one this agent enrolled with"]
    assert agents.registry.connection(mallory.id) is None


async def test_revoking_closes_the_tunnel_and_refuses_reconnects(agents: AgentsApp) -> None:
    """Revocation closes a live tunnel within 5 s; the next upgrade is a 403, audited."""
    agent = await agents.agent()
    conn = await agent.connect()
    async with asyncio.timeout(WAIT):
        await agents.registry.wait_ready(agent.id)
    await agents.api.call("POST", f"/agents/{agent.id}/revoke", expect=200)
    async with asyncio.timeout(5):
        await conn.wait_closed()
        await agents.registry.wait_for(agent.id, online=False)
    with pytest.raises(InvalidStatus) as refused:
        await agent.open_ws()
    assert refused.value.response.status_code == 403
    data = await shown(agents, agent.id)
    assert (data["status"], data["revoked_by"]) == ("revoked", "admin")
    assert [e.target for e in await agents.audit("agent.revoke")] == [agent.id]
    assert await agents.denied_reasons() == ["revoked agent"]


async def test_a_silent_agent_goes_offline_after_missed_keepalives(agents: AgentsApp) -> None:
    """An agent that stops answering (socket open) is dropped after 3 keepalive intervals."""
    agent = await agents.agent()
    await agent.connect()
    async with asyncio.timeout(WAIT):
        await agents.registry.wait_ready(agent.id)
    assert agent.stream is not None
    agent.stream.frozen.set()
    limit = FAST.keepalive_interval * (FAST.keepalive_count_max + 1) + 2.0
    async with asyncio.timeout(limit):
        await agents.registry.wait_for(agent.id, online=False)
    assert (await shown(agents, agent.id))["status"] == "offline"


@pytest.mark.parametrize(
    ("header", "status"),
    [("", 400), ("ag-TOOSHORT", 400), ("ag-0123456789abcdef", 403)],
)
async def test_bad_or_unknown_agent_ids_are_refused_before_the_upgrade(
    agents: AgentsApp, header: str, status: int
) -> None:
    """A missing or malformed id header is a 400, an unknown agent a 403; both audited."""
    resp = await agents.api.client.get(
        "/agent/v1/tunnel",
        headers={
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            **({"X-Secondline-Agent": header} if header else {}),
        },
    )
    assert resp.status == status
    assert len(await agents.denied_reasons()) == 1


async def test_a_plain_get_is_not_a_tunnel(agents: AgentsApp) -> None:
    """Without a WebSocket upgrade the endpoint says so."""
    agent = await agents.agent()
    resp = await agents.api.client.get("/agent/v1/tunnel", headers={"X-Secondline-Agent": agent.id})
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "not_websocket"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        # Random bytes may hold no line end: then the handshake times out instead.
        (os.urandom(4096), "the SSH handshake"),
        (b"SSH-2.0-fake\r\n" + os.urandom(2048), "the SSH handshake failed"),
        ("hello", "text message"),
        (b"\0" * (MAX_WS_MESSAGE + 1), "larger than the limit"),
    ],
)
async def test_garbage_on_the_tunnel_is_refused_and_others_are_unaffected(
    agents: AgentsApp, payload: bytes | str, reason: str
) -> None:
    """Random bytes, a fake SSH stream, text and oversized messages end that tunnel only."""
    good = await agents.agent("good")
    await good.connect()
    async with asyncio.timeout(WAIT):
        good_conn = await agents.registry.wait_ready(good.id)
    bad = await agents.agent("bad")
    ws = await bad.open_ws()
    with contextlib.suppress(ConnectionClosed):
        await ws.send(payload)
    await eventually_closed(ws)
    async with asyncio.timeout(WAIT):
        await agents.registry.wait_refused(1)
    reasons = await agents.denied_reasons()
    assert len(reasons) == 1
    assert reason in reasons[0]
    assert agents.registry.connection(bad.id) is None
    assert (await good_conn.run("echo ok")).stdout == "ok\n"


async def test_a_stalled_handshake_times_out(agents: AgentsApp) -> None:
    """A WebSocket that never speaks SSH is closed at the handshake timeout, audited."""
    agent = await agents.agent()
    ws = await agent.open_ws()
    async with asyncio.timeout(FAST.handshake_timeout + WAIT):
        await ws.wait_closed()
        await agents.registry.wait_refused(1)
    assert await agents.denied_reasons() == ["the SSH handshake did not finish in time"]


@pytest.mark.parametrize(
    "output",
    [
        json.dumps({**NEW_FACTS, "os": "Debian\u001b[31m"}).encode(),
        json.dumps({**NEW_FACTS, "os": "<b>Debian</b>"}).encode(),
        b'{"hostname": "x", "pad": "' + b"x" * (2 * 1024 * 1024) + b'"}',
        b"\xff\xfe\x00garbage",
    ],
)
async def test_hostile_facts_on_connect_keep_the_old_ones(agents: AgentsApp, output: bytes) -> None:
    """Facts with escapes, markup, megabytes or junk are refused and audited; the agent
    stays online with the facts it enrolled with."""
    agent = await agents.agent(facts_output=output)
    await agent.connect()
    async with asyncio.timeout(WAIT):
        conn = await agents.registry.wait_ready(agent.id)
    data = await shown(agents, agent.id)
    assert data["status"] == "online"
    assert data["facts"] == FACTS.to_dict() | {"users": list(FACTS.users)}
    assert len(await agents.denied_reasons("agent.facts")) == 1
    assert (await conn.run("echo alive")).stdout == "alive\n"


async def test_an_over_limit_upgrade_gets_503_with_retry_after(
    data_dir: Path, aiohttp_client: AiohttpClient
) -> None:
    """Past the handshake rate the broker answers 503 and when to come back."""
    slow = TunnelSettings(
        handshakes_per_second=1, handshake_burst=1, handshake_timeout=2.0, handshake_hold=0
    )
    async with start_agents_app(data_dir, aiohttp_client, slow) as agents:
        await agents.customer("acme")
        first = await agents.agent("first")
        second = await agents.agent("second")
        await first.connect()
        with pytest.raises(InvalidStatus) as busy:
            await second.open_ws()
        response = busy.value.response
        assert response.status_code == 503
        assert int(response.headers["Retry-After"]) >= 1
        assert json.loads(response.body)["error"]["code"] == "busy"
        assert agents.runtime.limiter.reservations == 1


async def test_tunnels_beyond_the_descriptor_budget_wait_outside(
    data_dir: Path, aiohttp_client: AiohttpClient
) -> None:
    """Past its tunnel budget the broker answers 503 "full" with Retry-After before any
    handshake or place in line; once a tunnel closes the next agent gets in."""
    one = TunnelSettings(
        max_tunnels=1, keepalive_interval=0.2, keepalive_count_max=2, handshake_timeout=2.0
    )
    async with start_agents_app(data_dir, aiohttp_client, one) as agents:
        await agents.customer("acme")
        first = await agents.agent("first")
        second = await agents.agent("second")
        await first.connect()
        async with asyncio.timeout(WAIT):
            await agents.registry.wait_ready(first.id)
        assert agents.registry.open_tunnels == 1
        with pytest.raises(InvalidStatus) as full:
            await second.open_ws()
        response = full.value.response
        assert response.status_code == 503
        assert response.headers["Retry-After"] == str(FULL_RETRY_S)
        assert json.loads(response.body)["error"]["code"] == "full"
        assert agents.runtime.limiter.reservations == 0
        assert await agents.denied_reasons() == []
        await first.close()
        async with asyncio.timeout(WAIT):
            await agents.registry.wait_open_at_most(0)
        await second.connect()
        async with asyncio.timeout(WAIT):
            await agents.registry.wait_ready(second.id)
        assert agents.registry.open_tunnels == 1


async def test_repeated_refusals_are_audited_once_then_summarised(agents: AgentsApp) -> None:
    """A wrong host key three times, and three invented agent ids from one source: one
    event each at once, and at shutdown one summary each counting the two repeats."""
    agent = await agents.agent()
    wrong = asyncssh.generate_private_key("ssh-ed25519")
    for attempt in range(1, 4):
        with pytest.raises((asyncssh.Error, ConnectionError, OSError)):
            await agent.connect(key=wrong)
        async with asyncio.timeout(WAIT):
            await agents.registry.wait_refused(attempt)
    for invented in ("ag-0123456789abcdef", "ag-00000000000000ff", "ag-zzzzzzzzzzzzzzzz"):
        with pytest.raises(InvalidStatus) as refused:
            await agent.open_ws(claim_id=invented)
        assert refused.value.response.status_code == 403
    events = await agents.audit("agent.tunnel")
    assert [(e.target, e.details["reason"]) for e in events] == [
        (agent.id, "the SSH host key is not the one this agent enrolled with"),
        ("ag-0123456789abcdef", "unknown agent"),
    ]
    await agents.runtime.drain_background()
    summaries = [e for e in await agents.audit("agent.tunnel") if "repeats" in e.details]
    assert sorted((e.target, e.details["reason"], e.details["repeats"]) for e in summaries) == [
        ("", "unknown agent", 2),
        (agent.id, "the SSH host key is not the one this agent enrolled with", 2),
    ]
    assert all(e.outcome == "denied" and e.details["first_at"] for e in summaries)


async def test_facts_wait_for_the_handshakes_under_way_and_still_reach_the_database(
    data_dir: Path, aiohttp_client: AiohttpClient
) -> None:
    """An agent that comes online while another agent's handshake is under way is online
    and carries sessions at once; its facts are asked for only once no handshake is under
    way, and then reach the database (a reconnect storm's handshakes go first)."""
    settings = dataclasses.replace(FAST, handshake_timeout=WAIT + 5, facts_max_wait=WAIT + 5)
    async with start_agents_app(data_dir, aiohttp_client, settings) as agents:
        await agents.customer("acme")
        staller = await agents.agent("staller")
        agent = await agents.agent(facts_output=json.dumps(NEW_FACTS).encode() + b"\n")
        # A WebSocket that never speaks SSH: its handshake stays under way.
        stalled = await staller.open_ws()
        await agent.connect()
        async with asyncio.timeout(WAIT):
            await agents.registry.wait_for(agent.id, online=True)
        assert agents.registry.handshakes_in_flight == 1
        pacer = agents.runtime.facts_pacer
        assert pacer.waiting == 1
        conn = agents.registry.connection(agent.id)
        assert conn is not None
        assert (await conn.run("echo before-facts")).stdout == "before-facts\n"
        data = await shown(agents, agent.id)
        assert data["status"] == "online"
        assert data["facts"] == FACTS.to_dict() | {"users": list(FACTS.users)}
        assert pacer.waiting == 1
        # The stalled handshake ends: the facts go ahead and are stored.
        await stalled.close()
        async with asyncio.timeout(WAIT):
            assert await agents.registry.wait_ready(agent.id) is conn
        assert pacer.waiting == 0
        assert (await shown(agents, agent.id))["facts"] == NEW_FACTS
