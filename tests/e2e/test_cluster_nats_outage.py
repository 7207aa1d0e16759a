"""NATS going away and coming back under a running cluster: a private, real nats-server
(Debian's, on its own port, so the shared one is never touched) that the test stops and
starts again."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from agent.reaping import reap
from tests.e2e.test_cluster_nodes import site_on, status
from tests.support.broker import BrokerProcess, free_port, secondline
from tests.support.cluster import Cluster, heard_twice, make_cluster
from tests.support.database import Backend
from tests.support.site import Site, new_ticket, ok, start_agent

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

WAIT = 30.0  # failure bound, never a pause


class NatsServer:
    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> None:
        binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
        self.proc = await asyncio.create_subprocess_exec(
            binary, "-a", "127.0.0.1", "-p", str(self.port),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert self.proc.stderr is not None
        try:
            async with asyncio.timeout(WAIT):
                while b"Server is ready" not in await self.proc.stderr.readline():
                    assert self.proc.returncode is None, "nats-server exited"
        except BaseException:
            # A server that never got ready is nobody's to stop: end it here.
            await reap(self.proc)
            raise
        # Keep draining its log so it never blocks on a full pipe.
        self._drain = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stderr is not None
        while await self.proc.stderr.readline():
            pass

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()
            await self._drain


@pytest.fixture
def private_nats_port() -> int:
    return free_port()


@pytest.fixture
def outage_dirs(pg: Backend, tmp_path: Path, private_nats_port: int) -> Cluster:
    return make_cluster(tmp_path, pg, nats_url=f"nats://127.0.0.1:{private_nats_port}")


@pytest.fixture
async def outage(
    outage_dirs: Cluster, private_nats_port: int
) -> AsyncIterator[tuple[Cluster, NatsServer]]:
    nats = NatsServer(private_nats_port)
    await nats.start()
    try:
        yield outage_dirs, nats
    finally:
        await outage_dirs.stop_all()
        await nats.stop()


async def readyz(node: BrokerProcess) -> tuple[int, dict[str, object]]:
    context = ssl.create_default_context(cafile=str(node.data_dir / "keys" / "tls.crt"))
    context.check_hostname = False
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session,
        session.get(node.url + "/readyz") as response,
    ):
        return response.status, dict(await response.json())


async def test_nodes_outlive_nats_and_announce_themselves_when_it_returns(
    outage: tuple[Cluster, NatsServer], tmp_path: Path
) -> None:
    """With NATS gone a node keeps its agent and says it is not ready; a session that
    crosses nodes goes on, while a new one is refused saying the bus is lost; when NATS
    returns both nodes reconnect, hear each other again and answer `cluster status`."""
    cluster, nats = outage
    site = await site_on(cluster, tmp_path)
    n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
    await start_agent(site, "web01", "unattended")
    assert (await readyz(n1))[0] == 200
    site.ticket = new_ticket(site, "web01")
    agents = json.loads(ok(secondline("agent", "list", "--json", data_dir=n1.data_dir)))
    await heard_twice(cluster, "n1", str(agents[0]["id"]))  # n2 knows where web01 is
    via_n2 = Site(n2, tmp_path, site.key, tmp_path / "known_hosts_n2")
    host_key = site.known_hosts.read_text().split()[1:]
    via_n2.known_hosts.write_text(f"[127.0.0.1]:{via_n2.ssh_port} {' '.join(host_key)}\n")
    crossing = await via_n2.interactive(site.ticket)  # bob on n2, the shell on n1
    crossing.type("echo before-$((40+2))\n")
    await crossing.expect(b"before-42")

    marks = len(n1.output), len(n2.output)
    await nats.stop()
    await n1.wait_for_line(rb"NATS connection lost", marks[0])
    await n2.wait_for_line(rb"NATS connection lost", marks[1])
    crossing.type("echo during-$((40+2))\n")
    await crossing.expect(b"during-42")  # its stream is node to node, not over NATS
    refused = await via_n2.ssh(site.ticket, "true")
    assert refused.code == 255, refused
    assert "this node has lost the cluster bus (NATS)" in refused.err, refused.err
    crossing.type("exit\n")
    assert (await crossing.finish())[0] == 0
    assert await readyz(n1) == (
        503,
        {"status": "unavailable", "node": "n1", "database": "up", "bus": "down", "draining": False},
    )
    agents = json.loads(ok(secondline("agent", "list", "--json", data_dir=n1.data_dir)))
    assert [(a["name"], a["online"]) for a in agents] == [("web01", True)]

    await nats.start()
    await n1.wait_for_line(rb"NATS connection back", marks[0])
    await n2.wait_for_line(rb"NATS connection back", marks[1])
    # n2 forgot every lease when it reconnected, and learns n1 again from its heartbeat.
    await n2.wait_for_line(rb"node n1 joined the cluster", marks[1])
    assert (await readyz(n1))[0] == 200
    rows = status(n1.data_dir)
    assert {(n, r["state"], r["agents"]) for n, r in rows.items()} == {
        ("n1", "up", 1),
        ("n2", "up", 0),
    }
    if site.agent is not None:
        site.agent.kill()
        await site.agent.wait()
