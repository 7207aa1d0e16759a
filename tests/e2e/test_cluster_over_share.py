"""Fair shares end to end (issue 16, docs/cluster.md "Fair shares"): a node holding its
share of the cluster's agents turns a new agent's tunnel away with 503 ``over_share``,
audited and counted in its /metrics, and the agent, dialling the load balancer again,
comes online on another node.

Real parts: three `secondline serve --node` processes on PostgreSQL and NATS, HAProxy
running deploy/haproxy.cfg, a swarm of simulated agents (bench.agent_swarm) that fills the
first node, and one real `secondline-agent run`. HAProxy's leastconn never picks the full
node by itself (it holds the most connections), so the agent's first connection reaches
the full node through a CONNECT proxy that steers that one connection there, the stand-in
for the load balancer's pick in a restart race; every later one goes to HAProxy.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import sys
from pathlib import Path

import aiohttp
import nats
import pytest
from nats.aio.msg import Msg

from bench.agent_swarm import Swarm, SwarmPlan, broker_call
from bench.storm_figures import refusals_by_code
from broker.agents.retry_spread import FIRST_S
from broker.agents.tunnel_endpoint import OVER_SHARE_REASON
from broker.cluster.share import share_limit
from tests.e2e.test_cluster_haproxy import Balancer, metric
from tests.support.broker import BrokerProcess, cli_env, secondline
from tests.support.cluster import Cluster
from tests.support.site import agent_cli, ok
from tests.support.steering_proxy import SteeringProxy

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

NODES = ("n1", "n2", "n3")
#: n1 holding all of 6 agents among three nodes is exactly at its share and slack
#: (ceil(6 * 1.1 / 3) + 3 = 6): full, with nothing to hand off.
FILLER = 6
WAIT = 60.0  # failure bound on a shared 2-core machine, never a pause
SWARM_WAIT = 180.0
PROBE_ONLINE = rb"agent (ag-[a-z0-9]{16}) \(probe\) online from"


async def share_limit_is(cluster: Cluster, node: BrokerProcess, cert: Path, limit: int) -> None:
    """Return once ``node``'s /metrics says it takes at most ``limit`` agents: looked at
    after each of its presence announcements (the other nodes count once they have said
    they are ready for a few seconds, docs/cluster.md)."""
    client = await nats.connect(cluster.nats_url)
    beats: asyncio.Queue[None] = asyncio.Queue()
    name = node.data_dir.name

    async def on_presence(msg: Msg) -> None:
        if json.loads(msg.data).get("node") == name:
            beats.put_nowait(None)

    try:
        await client.subscribe(f"secondline.{cluster.name}.presence", cb=on_presence)
        async with asyncio.timeout(WAIT):
            while True:
                await beats.get()
                try:
                    if await metric(node, cert, "secondline_agents_share_limit") == limit:
                        return
                except AssertionError:
                    continue  # no sample yet: the node takes every agent
    finally:
        await client.close()


async def test_a_node_at_its_share_turns_a_new_agent_away_and_it_comes_online_on_another(
    cluster: Cluster, tmp_path: Path
) -> None:
    """n1 alone takes a swarm of six through HAProxy; once n2 and n3 are up it holds exactly
    its share. A real agent's first tunnel reaches n1: 503 over_share with a Retry-After,
    audited as an agent.tunnel refusal and counted in n1's /metrics; the agent waits its
    turn, dials HAProxy again and comes online on n2 or n3. n1 keeps its six and hands
    none off."""
    assert share_limit(FILLER, len(NODES)) == FILLER
    lb = Balancer(cluster, tmp_path)
    cluster.behind(lb.url)
    first = cluster.first
    cert = first / "keys" / "tls.crt"
    token = (first / "admin.token").read_text().strip()
    n1 = await cluster.start("n1")
    await lb.start()
    try:
        for name in NODES[1:]:
            await lb.wait_for(f"Server nodes_https/{name} is DOWN".encode())
        ok(secondline("customer", "add", "acme", data_dir=first))

        async def make_token(uses: int) -> str:
            body = {"customer": "acme", "consent": "unattended", "uses": uses}
            status, made = await broker_call(
                lb.url, cert, token, "POST", "/enrollment-tokens", body
            )
            assert status == 201, (status, made)
            assert isinstance(made, dict)
            return str(made["token"])

        plan = SwarmPlan(size=FILLER, processes=1)
        env = cli_env(tmp_path / "swarm")
        async with Swarm(url=lb.url, cert=cert, plan=plan, make_token=make_token, env=env) as swarm:
            await swarm.spawn(SWARM_WAIT)
            await swarm.connect()
            await swarm.wait_until(lambda s: s.online.get("good") == FILLER, WAIT, "filler")
            assert await metric(n1, cert, "secondline_agents_held") == FILLER

            state = tmp_path / "agent-probe"
            ok(agent_cli(state, "enroll", lb.url, await make_token(1), "--name", "probe"))
            others = await asyncio.gather(*(cluster.start(name) for name in NODES[1:]))
            for name in NODES[1:]:
                await lb.wait_for(f"Server nodes_https/{name} is UP".encode())
            await share_limit_is(cluster, n1, cert, FILLER)

            marks = [len(node.output) for node in others]
            log = tmp_path / "probe.log"
            async with SteeringProxy(first=f"127.0.0.1:{n1.https_port}") as proxy:
                with log.open("wb") as err:
                    probe = await asyncio.create_subprocess_exec(
                        sys.executable, "-m", "agent", "run", "--state-dir", str(state),
                        stdout=asyncio.subprocess.DEVNULL, stderr=err,
                        env=cli_env(state, HTTPS_PROXY=proxy.url),
                    )  # fmt: skip
                try:
                    landed = await online_on(others, marks)
                finally:
                    probe.terminate()
                    await probe.wait()
            balancer = f"127.0.0.1:{lb.https_port}"
            # The first connection went to n1; the tunnel that came online, and anything
            # else the agent asked of the broker since, went through HAProxy.
            assert proxy.connects[0] == (balancer, f"127.0.0.1:{n1.https_port}"), proxy.connects
            assert len(proxy.connects) >= 2, proxy.connects
            assert {pair for pair in proxy.connects[1:]} == {(balancer, balancer)}
            assert landed in ("n2", "n3"), landed

            # The agent was told to come back later, and waited at least that long.
            said = log.read_text()
            waits = [float(s) for s in re.findall(r"HTTP 503; retrying in ([0-9.]+) s", said)]
            assert len(waits) == 1, said
            assert waits[0] >= FIRST_S, said

            # Audited (n1 writes it to the one audit chain) ...
            events = json.loads(
                ok(secondline("audit", "list", "--action", "agent.tunnel", "--json",
                              data_dir=first))
            )  # fmt: skip
            assert [
                (e["outcome"], e["details"]["reason"], e["details"]["code"]) for e in events
            ] == [("denied", OVER_SHARE_REASON, "over_share")], events
            probe_id = re.search(PROBE_ONLINE, b"".join(cluster.nodes[landed].output))
            assert probe_id is not None
            assert events[0]["target"] == probe_id.group(1).decode()
            # ... and counted by n1, which kept its six and handed none off.
            assert await metric(n1, cert, "secondline_tunnel_share_refusals_total") == 1
            refusals = await refusals_of(n1, cert)
            assert refusals.get("over_share") == 1, refusals
            assert await metric(n1, cert, "secondline_agents_handed_off_total") == 0
            assert await metric(n1, cert, "secondline_agents_held") == FILLER
            assert swarm.status().online.get("good") == FILLER
    finally:
        await lb.stop()


async def online_on(nodes: list[BrokerProcess], marks: list[int]) -> str:
    """The name of the node among ``nodes`` where the probe comes online after ``marks``."""
    async with asyncio.timeout(WAIT):
        while True:
            for node, mark in zip(nodes, marks, strict=True):
                if any(re.search(PROBE_ONLINE, line) for line in node.output[mark:]):
                    return node.data_dir.name
            waits = [
                asyncio.ensure_future(n.wait_for_line(PROBE_ONLINE, len(n.output))) for n in nodes
            ]
            done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            for task in done:
                # A quiet node's own 30 s bound is no failure while the outer one holds.
                if not isinstance(task.exception(), TimeoutError | type(None)):
                    task.result()


async def refusals_of(node: BrokerProcess, cert: Path) -> dict[str, int]:
    """The node's audited agent.tunnel refusals by code (its /metrics)."""
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session,
        session.get(node.url + "/metrics") as response,
    ):
        status = response.status
        text = await response.text()
    assert status == 200
    return refusals_by_code(text)
