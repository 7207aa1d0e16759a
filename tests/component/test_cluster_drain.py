"""Draining a node (`secondline node drain`), on the real app over a loopback socket: the
API's answers and audit, /readyz, and an agent's tunnel turned away to another node; and
the jittered plan by which a draining node hands its agents on."""

from __future__ import annotations

import random

import aiohttp
import pytest

from agent.protocol import AGENT_ID_HEADER, TUNNEL_PATH
from broker.cluster.drain import close_schedule
from tests.support.api import Api

pytestmark = pytest.mark.postgres


async def test_draining_a_node_turns_it_away_from_the_load_balancer_and_agents(
    api: Api,
) -> None:
    """The first drain starts (the second says it was already draining), both audited;
    /readyz turns 503 "draining"; an agent's tunnel upgrade gets 503 with Retry-After; a
    bad or unknown node name is refused with what to do, audited as denied."""
    status, body = await api.call("POST", "/nodes/single/drain")
    assert (status, body) == (200, {"node": "single", "draining": True, "started": True})
    status, body = await api.call("POST", "/nodes/single/drain")
    assert (status, body) == (200, {"node": "single", "draining": True, "started": False})

    ready = await api.client.get("/readyz")
    assert ready.status == 503
    assert (await ready.json())["status"] == "draining"

    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await api.client.ws_connect(TUNNEL_PATH, headers={AGENT_ID_HEADER: "ag-" + "a" * 16})
    assert refused.value.status == 503
    assert refused.value.headers is not None
    assert refused.value.headers["Retry-After"] == "2"

    status, body = await api.call("POST", "/nodes/Bad_Name/drain")
    assert status == 400
    assert isinstance(body, dict)
    assert body["error"]["code"] == "bad_node_name"
    assert "cluster status" in body["error"]["message"]
    status, body = await api.call("POST", "/nodes/n9/drain")
    assert status == 404
    assert isinstance(body, dict)
    assert body["error"]["code"] == "node_not_found"
    _, events = await api.call("GET", "/audit?action=node.drain")
    assert isinstance(events, list)
    assert [(e["target"], e["outcome"]) for e in reversed(events)] == [
        ("single", "ok"),
        ("single", "ok"),
        ("Bad_Name", "denied"),
        ("n9", "denied"),
    ]


def test_a_drain_spreads_the_tunnel_closes_over_its_window_after_the_grace() -> None:
    """Every agent gets one close time, none before the grace, all within the window,
    earliest first, and a thousand agents are not bunched into a few seconds."""
    agents = [f"ag-{i:016d}" for i in range(1000)]
    rand = random.Random(7).random  # noqa: S311 - a schedule's jitter, no secret
    plan = close_schedule(agents, rand, grace=3.0, spread=10.0)
    assert sorted(a for _, a in plan) == sorted(agents)
    times = [t for t, _ in plan]
    assert times == sorted(times)
    assert times[0] >= 3.0
    assert times[-1] < 13.0
    per_second = [sum(1 for t in times if s <= t - 3.0 < s + 1) for s in range(10)]
    assert max(per_second) < 150, per_second
