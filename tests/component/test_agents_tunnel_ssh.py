"""The broker's SSH connections to agents share one prepared options object
(broker.agents.tunnel_ssh): each still trusts only its own agent's key, reports its own
handshake, and rekeys."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh
import pytest
from pytest_aiohttp import AiohttpClient

from tests.component.test_agents_harness import (
    FAST,
    WAIT,
    AgentsApp,
    eventually_closed,
    start_agents_app,
)

pytestmark = pytest.mark.postgres

#: Small enough that a few commands make the broker rekey.
REKEY_BYTES = 32 * 1024
HOST_KEY_REFUSED = "the SSH host key is not the one this agent enrolled with"


@pytest.fixture
async def agents(data_dir: Path, aiohttp_client: AiohttpClient) -> AsyncIterator[AgentsApp]:
    settings = dataclasses.replace(FAST, rekey_bytes=REKEY_BYTES)
    async with start_agents_app(data_dir, aiohttp_client, settings) as app:
        await app.customer("acme")
        yield app


async def test_handshakes_at_once_each_trust_only_their_own_agent(agents: AgentsApp) -> None:
    """Three agents connect together, a fourth with a key it did not enroll: the three are
    online and each connection reaches its own agent; the fourth is refused."""
    good = [await agents.agent(f"web{n}") for n in range(3)]
    impostor = await agents.agent("impostor")
    outcomes = await asyncio.gather(
        *(agent.connect() for agent in good),
        impostor.connect(key=asyncssh.generate_private_key("ssh-ed25519")),
        return_exceptions=True,
    )
    assert all(isinstance(conn, asyncssh.SSHServerConnection) for conn in outcomes[:3])
    assert isinstance(outcomes[3], Exception)
    for agent in good:
        async with asyncio.timeout(WAIT):
            conn = await agents.registry.wait_ready(agent.id)
        result = await conn.run(f"echo {agent.id}", check=True)
        assert result.stdout == f"{agent.id}\n"
    async with asyncio.timeout(WAIT):
        await agents.registry.wait_refused(1)
    assert await agents.denied_reasons() == [HOST_KEY_REFUSED]
    assert not agents.registry.is_online(impostor.id)


async def test_a_tunnel_rekeys_and_keeps_carrying_sessions(
    agents: AgentsApp, caplog: pytest.LogCaptureFixture
) -> None:
    """Past its rekey limit the broker's connection makes a new key exchange on the shared
    options, and sessions run on it before, during and after; after each exchange the
    connection keeps neither KEXINIT payload."""
    caplog.set_level(logging.DEBUG, logger="asyncssh")
    agent = await agents.agent()
    await agent.connect()
    async with asyncio.timeout(WAIT):
        conn = await agents.registry.wait_ready(agent.id)

    def exchanges() -> int:
        return sum(r.getMessage().endswith(" Completed key exchange") for r in caplog.records)

    def kexinits_kept() -> tuple[bytes, bytes]:
        # asyncssh's own attributes: the broker lets go of them once an exchange is done.
        return conn._client_kexinit, conn._server_kexinit

    first = exchanges()
    assert first >= 2  # the handshake, seen from both ends
    assert kexinits_kept() == (b"", b"")
    # The handler waits on the close event, whose waiters are a list (tunnel_ssh._ListEvent);
    # the agent going offline below is that wait ending.
    assert isinstance(conn._close_event._waiters, list)
    word = "x" * 8000
    for _ in range(3 * REKEY_BYTES // len(word)):
        result = await conn.run(f"echo {word}", check=True)
        assert result.stdout == f"{word}\n"
    assert exchanges() >= first + 2
    result = await conn.run("echo after", check=True)
    assert result.stdout == "after\n"
    assert kexinits_kept() == (b"", b"")
    await agent.close()
    async with asyncio.timeout(WAIT):
        await agents.registry.wait_for(agent.id, online=False)


async def test_a_handshake_cut_short_leaves_nothing_behind(agents: AgentsApp) -> None:
    """An agent that closes its socket mid-handshake is refused and counted out: no
    handshake stays in flight and no tunnel stays open."""
    agent = await agents.agent()
    ws = await agent.open_ws()
    await ws.close()
    await eventually_closed(ws)
    async with asyncio.timeout(WAIT):
        await agents.registry.wait_refused(1)
        await agents.registry.wait_open_at_most(0)
        await agents.registry.wait_handshakes_idle()
    assert agents.registry.handshakes_done == 1


async def test_the_broker_authenticates_in_one_signed_request(
    agents: AgentsApp, caplog: pytest.LogCaptureFixture
) -> None:
    """The broker's first authentication request is its signed public-key one: the agent
    answers no "none" request and no key query (it sends no failure and no PK_OK), and
    checks one signature."""
    caplog.set_level(logging.DEBUG, logger="asyncssh")
    agent = await agents.agent()
    asyncssh.set_debug_level(2)  # the level at which both ends log every auth failure
    try:
        await agent.connect()
        async with asyncio.timeout(WAIT):
            await agents.registry.wait_ready(agent.id)
    finally:
        asyncssh.set_debug_level(1)
    messages = [record.getMessage() for record in caplog.records]
    assert sum("Verifying request with" in m for m in messages) == 1
    extra = [m for m in messages if "Remaining auth methods" in m or "Trying public key" in m]
    assert extra == []


async def test_an_agent_refusing_the_brokers_key_is_refused(agents: AgentsApp) -> None:
    """An agent that trusts another broker key turns the signed request down: the broker
    gives up at once (it has no other key and no other method) and audits the refusal."""
    agent = await agents.agent()
    stranger = asyncssh.generate_private_key("ssh-ed25519")
    with pytest.raises((asyncssh.Error, OSError)):
        await agent.connect(trusts=stranger)
    async with asyncio.timeout(WAIT):
        await agents.registry.wait_refused(1)
    assert await agents.denied_reasons() == ["the agent refused the broker's key"]
    assert not agents.registry.is_online(agent.id)
