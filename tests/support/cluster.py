"""A real cluster for end-to-end tests: `secondline serve --node NAME` processes on one
PostgreSQL database and the NATS server on 127.0.0.1:4222 (which .ci/run starts), each
node with its own data dir holding the same keys, as docs/cluster.md tells an admin to
set them up. Each test gets its own cluster name, so test runs sharing the NATS server
never hear each other."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import nats
from nats.aio.msg import Msg

from broker.config import write_config
from tests.support.broker import BrokerProcess, free_ports, init_dir, start_broker
from tests.support.database import Backend

NATS_URL = os.environ.get("SECONDLINE_TEST_NATS", "nats://127.0.0.1:4222")


def node_dir(first: Path, path: Path, cluster: str, nats_url: str = NATS_URL) -> Path:
    """A copy of the first node's data dir (keys, admin token) with its own ports, joined
    to ``cluster``; ``first`` itself is joined when ``path`` is ``first``."""
    if path != first:
        shutil.copytree(first, path, ignore=shutil.ignore_patterns("transcripts", "*.head"))
    config = path / "secondline.toml"
    settings = {
        k: v
        for k, v in tomllib.loads(config.read_text()).items()
        if k not in ("public_url", "cluster")
    }
    if path != first:
        settings["https_port"], settings["ssh_port"] = free_ports(2)
    write_config(path, f"https://127.0.0.1:{settings['https_port']}", settings)
    with config.open("a", encoding="utf-8") as fh:
        fh.write(f'\n[cluster]\nnats_url = "{nats_url}"\nname = "{cluster}"\n')
    return path


@dataclass
class Cluster:
    """Data dirs of the nodes (n1, n2, …) on one database, and the nodes running."""

    root: Path
    name: str
    nats_url: str = NATS_URL
    dirs: dict[str, Path] = field(default_factory=dict)
    nodes: dict[str, BrokerProcess] = field(default_factory=dict)

    @property
    def first(self) -> Path:
        return self.dirs["n1"]

    def add_dir(self, node: str) -> Path:
        if node not in self.dirs:
            self.dirs[node] = node_dir(self.first, self.root / node, self.name, self.nats_url)
        return self.dirs[node]

    def port(self, node: str, which: str) -> int:
        """A node's ``https_port`` or ``ssh_port`` as its config file says."""
        config = tomllib.loads((self.add_dir(node) / "secondline.toml").read_text())
        return int(config[which])

    def behind(self, url: str) -> None:
        """Every node's public_url becomes ``url`` (a load balancer's): it is the address
        agents are told to dial, whichever node enrolled them."""
        for path in self.dirs.values():
            config = path / "secondline.toml"
            text = config.read_text()
            settings = tomllib.loads(text)
            config.write_text(
                text.replace(f'public_url = "{settings["public_url"]}"', f'public_url = "{url}"')
            )

    async def start(self, node: str) -> BrokerProcess:
        broker = await start_broker(self.add_dir(node), "--node", node)
        self.nodes[node] = broker
        return broker

    async def stop_all(self) -> None:
        # Every node is stopped even when one outlasts its bound (that one is killed); the
        # first such failure is raised once all are gone.
        failed: list[BaseException] = []
        for broker in self.nodes.values():
            if broker.process.returncode is None:
                try:
                    await broker.stop()
                except Exception as error:  # raised below, after the others
                    failed.append(error)
        if failed:
            raise failed[0]


def make_cluster(tmp: Path, backend: Backend, nats_url: str = NATS_URL) -> Cluster:
    assert backend.kind == "postgresql"
    name = f"t{secrets.token_hex(6)}"
    first = init_dir(tmp / "n1", backend)
    return Cluster(tmp, name, nats_url, {"n1": node_dir(first, first, name, nats_url)})


async def heard_twice(cluster: Cluster, node: str, agent_id: str) -> None:
    """Wait until ``node`` has announced holding ``agent_id`` twice on the cluster's NATS:
    every other node has taken the first of the two in by then (a heartbeat apart)."""
    client = await nats.connect(cluster.nats_url)
    heard = 0
    got = asyncio.Event()

    async def on_presence(msg: Msg) -> None:
        nonlocal heard
        body = json.loads(msg.data)
        if body.get("node") == node and agent_id in body.get("agents", []):
            heard += 1
            if heard >= 2:
                got.set()

    try:
        await client.subscribe(f"secondline.{cluster.name}.presence", cb=on_presence)
        async with asyncio.timeout(30):
            await got.wait()
    finally:
        await client.close()
