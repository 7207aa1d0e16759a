"""What a load balancer and Prometheus ask a single node (its in-process bus): /readyz
and /metrics, on the real app over a loopback socket."""

from __future__ import annotations

from tests.support.api import Api


async def test_a_single_node_is_ready_with_its_database_and_in_process_bus(api: Api) -> None:
    """/readyz answers 200 and names what it checked."""
    r = await api.client.get("/readyz")
    assert r.status == 200
    assert await r.json() == {
        "status": "ready",
        "node": "single",
        "database": "up",
        "bus": "up",
        "draining": False,
    }


async def test_metrics_count_what_the_node_holds_and_refusals_by_code(api: Api) -> None:
    """/metrics is Prometheus text: agents, sessions, outbox, and a refusal just made,
    counted under its action and code."""
    refused, _ = await api.call(
        "POST", "/auth/login", {"user": "admin", "password": "wrong"}, token=None
    )
    assert refused == 401
    r = await api.client.get("/metrics")
    assert r.status == 200
    assert r.headers["Content-Type"].startswith("text/plain; version=")
    text = await r.text()
    for line in (
        'secondline_agents_held{node="single"} 0.0',
        'secondline_sessions_live{node="single"} 0.0',
        'secondline_outbox_depth{node="single"} 0.0',
        'secondline_cluster_nodes{node="single"} 1.0',
        'secondline_bus_connected{node="single"} 1.0',
        'secondline_tunnel_handshakes_total{node="single"} 0.0',
        'secondline_tunnel_share_refusals_total{node="single"} 0.0',
        'secondline_agents_handed_off_total{node="single"} 0.0',
        'secondline_refusals_total{action="login.failed",code="denied",node="single"} 1.0',
    ):
        assert line in text.splitlines(), line
    # A node alone takes every agent: its share limit has no sample.
    assert "# TYPE secondline_agents_share_limit gauge" in text.splitlines()
    assert not [
        line for line in text.splitlines() if line.startswith("secondline_agents_share_limit{")
    ]


async def test_a_single_node_takes_no_node_to_node_requests(api: Api) -> None:
    """The peer endpoint of sessions across nodes answers 404 on a single node, saying why."""
    r = await api.client.get("/cluster/v1/peer")
    assert r.status == 404
    assert "single node" in (await r.json())["error"]["message"]
