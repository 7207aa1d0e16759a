"""An agent whose handshake turn comes soon waits for it on its connection: no 503, no
second TLS handshake and upgrade. Real broker app, real agents' WebSockets and SSH."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpClient
from websockets.exceptions import InvalidStatus

from broker.agents.tunnel_endpoint import TunnelSettings
from tests.component.test_agents_harness import WAIT, start_agents_app
from tests.component.test_sessions_fairness import on_a_loop_turn

pytestmark = pytest.mark.postgres


async def test_an_agent_whose_place_in_line_comes_soon_waits_for_it(
    data_dir: Path, aiohttp_client: AiohttpClient
) -> None:
    """One handshake a second: the second agent's place is due within the hold, so its
    upgrade waits for it and goes through (it was a 503 and a dial again)."""
    slow = TunnelSettings(handshakes_per_second=1, handshake_burst=1, handshake_timeout=5.0)
    async with start_agents_app(data_dir, aiohttp_client, slow) as agents:
        await agents.customer("acme")
        first = await agents.agent("first")
        second = await agents.agent("second")
        await first.connect()
        try:
            await second.connect()
        except InvalidStatus as exc:
            pytest.fail(f"the second agent was turned away: {exc.response.status_code}")
        async with asyncio.timeout(WAIT):
            await agents.registry.wait_ready(second.id)
        assert agents.runtime.limiter.reservations == 0
        assert agents.runtime.hold.held == 0


async def test_an_agent_waits_for_a_place_among_the_handshakes_under_way(
    data_dir: Path, aiohttp_client: AiohttpClient
) -> None:
    """One handshake at a time: while one agent's handshake is under way the next one's
    upgrade waits, and goes through once that handshake ends (here: its agent hangs up)."""
    one = TunnelSettings(max_handshakes_in_flight=1, handshake_timeout=WAIT, handshake_hold=WAIT)
    async with start_agents_app(data_dir, aiohttp_client, one) as agents:
        await agents.customer("acme")
        stalled = await agents.agent("stalled")
        second = await agents.agent("second")
        # A WebSocket that never speaks SSH: its handshake stays under way.
        ws = await stalled.open_ws()
        await on_a_loop_turn(lambda: agents.registry.handshakes_in_flight == 1)
        dialling = asyncio.create_task(second.connect())
        await on_a_loop_turn(lambda: agents.runtime.hold.held == 1 or dialling.done())
        assert not dialling.done(), "the second agent was answered at once"
        await ws.close()
        async with asyncio.timeout(WAIT):
            await dialling
            await agents.registry.wait_ready(second.id)
        assert agents.runtime.hold.held == 0
