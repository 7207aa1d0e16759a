"""The cluster targets: Secondline as N nodes on PostgreSQL and NATS behind HAProxy.

`secondline-cluster1` and `secondline-cluster2` are the same set-up with one and two
nodes (`secondline serve --node nN`), so beside each other they show what the second node
(the second core of a 2-core machine) buys: handshakes per second, session capacity and
loaded echo. Both run on PostgreSQL and NATS behind HAProxy, so the only difference
between the two columns is the second node.

The set-up follows docs/cluster.md: one `secondline init --database-url` data dir whose
copy every other node gets (same keys, same admin token), the load balancer's URL as
everyone's public URL, a `[cluster]` section naming NATS and a cluster name of its own,
and deploy/haproxy.cfg, the tested configuration, with the lines of the nodes the run does
not start taken out (`haproxy_config`).

Everything goes through HAProxy: agents (the bench agents and the swarm), every admin
command, and staff's ssh (its `leastconn` picks the gateway; a session whose agent is on
the other node crosses to it over the peer stream, docs/cluster.md). With two nodes there
is one bench agent on each, so sessions record on both nodes, and each new session takes
the next agent, as staff spread over agents would.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import re
import secrets
import shutil
import ssl
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bench import BenchError, MeasurementError, TargetUnavailable
from bench.child_process import ManagedProcess, run_command
from bench.metrics import LOADED_PARTS, TargetKey
from bench.openssh import free_port, wait_port
from bench.secondline_target import (
    CUSTOMER,
    READY_TIMEOUT_S,
    STAFF_USER,
    SecondlineTarget,
    SwarmFactory,
    _program,
    agent_is_online,
    parse_ticket_id,
    parse_token,
    pinned_host_keys,
)
from bench.targets import Workspace

HAPROXY_TEMPLATE: Final = Path(__file__).resolve().parents[1] / "deploy" / "haproxy.cfg"
NATS_URL: Final = "nats://127.0.0.1:4222"
#: The server the test suite and .ci/run use; the run makes and drops a database of its own.
PG_URL: Final = "postgresql://postgres@127.0.0.1:5432/test"
#: The scenarios a cluster column answers: what a second node can change.
PLACEMENT_TRIES: Final = 5
CLUSTER_SCENARIOS: Final = frozenset(
    {"echo_latency", *LOADED_PARTS, "handshakes_per_second", "max_concurrent_sessions"}
)
_NODE_LINE = re.compile(r"\$\{SL_N(\d+)_")
_HELD = re.compile(r"^secondline_agents_held(?:\{[^}]*\})?\s+([0-9.eE+]+)\s*$", re.MULTILINE)


def _grew(before: list[int], held: list[int]) -> bool:
    return sum(held) > sum(before)


def haproxy_config(template: str, nodes: int) -> str:
    """deploy/haproxy.cfg for `nodes` nodes: the server lines of nodes beyond them removed.

    The template names three nodes (``${SL_N1_…}`` … ``${SL_N3_…}``, one server line per
    node and backend); a node the template does not name is refused rather than left out.
    """
    named = {int(found) for found in _NODE_LINE.findall(template)}
    if not 1 <= nodes <= max(named, default=0):
        raise MeasurementError(
            f"deploy/haproxy.cfg names nodes {sorted(named)}; it cannot front {nodes} nodes"
        )
    kept = []
    for line in template.splitlines(keepends=True):
        numbers = {int(found) for found in _NODE_LINE.findall(line)}
        if numbers and max(numbers) > nodes:
            continue
        kept.append(line)
    return "".join(kept)


def server_states(show_stat: str, backend: str) -> dict[str, str]:
    """HAProxy's ``show stat`` CSV: server name → status (UP, DOWN, …) in `backend`."""
    states: dict[str, str] = {}
    for line in show_stat.splitlines():
        if line.startswith("#"):
            continue
        cells = line.split(",")
        if len(cells) > 17 and cells[0] == backend and cells[1] not in ("FRONTEND", "BACKEND"):
            states[cells[1]] = cells[17]
    return states


def agents_held(metrics: str) -> int:
    """``secondline_agents_held`` from a node's /metrics (Prometheus text)."""
    found = _HELD.search(metrics)
    if found is None:
        raise MeasurementError("the node's /metrics has no secondline_agents_held")
    return int(float(found.group(1)))


def database_url(dsn: str, database: str) -> str:
    """`dsn` (a PostgreSQL URL) pointing at `database` instead of its own."""
    if not dsn.startswith(("postgresql://", "postgres://")) or "/" not in dsn.split("://", 1)[1]:
        raise TargetUnavailable(
            "SECONDLINE_BENCH_PG must be a URL like postgresql://postgres@127.0.0.1:5432/test"
        )
    return dsn.split("?", 1)[0].rsplit("/", 1)[0] + "/" + database


@dataclass
class Node:
    """One `secondline serve --node NAME` and its ports."""

    name: str
    data_dir: Path
    https_port: int
    ssh_port: int
    process: ManagedProcess | None = None


class ClusterTarget(SecondlineTarget):
    """Secondline as `nodes` nodes on PostgreSQL and NATS, behind HAProxy."""

    def __init__(
        self,
        workspace: Workspace,
        *,
        nodes: int,
        max_sessions: int = 10,
        swarm_factory: SwarmFactory | None = None,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        self.key: TargetKey = "secondline-cluster1" if nodes == 1 else "secondline-cluster2"
        self.label = f"Secondline cluster, {nodes} node{'s' if nodes > 1 else ''}"
        super().__init__(workspace, max_sessions=max_sessions, swarm_factory=swarm_factory)
        self._dsn = (
            environ.get("SECONDLINE_BENCH_PG") or environ.get("SECONDLINE_TEST_PG") or PG_URL
        )
        self._nats = environ.get("SECONDLINE_BENCH_NATS", NATS_URL)
        self._nodes = [Node(f"n{i}", self.directory / f"n{i}", 0, 0) for i in range(1, nodes + 1)]
        self.data_dir = self._nodes[0].data_dir
        self._database = f"slbench_{secrets.token_hex(5)}"
        self._created = False
        self._haproxy: ManagedProcess | None = None
        self._stats_socket = self.directory / "haproxy.sock"
        self._agents: list[ManagedProcess] = []
        self._names: list[str] = []
        self._tickets: list[str] = []  # one per bench agent
        self._turn = itertools.count()

    def supports(self, scenario: str) -> bool:
        """Echo under load, capacity and handshakes: what a second node can change."""
        return scenario in CLUSTER_SCENARIOS

    async def _setup(self) -> None:
        haproxy = shutil.which("haproxy", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
        if haproxy is None:
            raise TargetUnavailable("no haproxy: apt-get install haproxy")
        await self._check_nats()
        await self._create_database()
        self.https_port, self.ssh_port = free_port(), free_port()  # HAProxy's
        for node in self._nodes:
            node.https_port, node.ssh_port = free_port(), free_port()
        await self._init_nodes()
        for node in self._nodes:
            await self._start_node(node)
        await self._start_haproxy(haproxy)
        await self.admin("customer", "add", CUSTOMER)
        await self.admin(
            "user", "add", STAFF_USER, "--role", "level2",
            "--ssh-key", str(self._workspace.identity.with_suffix(".pub")),
            "--customer", CUSTOMER,
        )  # fmt: skip
        for index in range(len(self._nodes)):
            await self._add_agent(index)
        # Every node has the same host key (copied data dir), so one pin holds whichever
        # node HAProxy picks.
        pub = (self.data_dir / "keys" / "ssh_host_ed25519.pub").read_text(encoding="ascii")
        line = f"[127.0.0.1]:{self.ssh_port} {' '.join(pub.split()[:2])}"
        if not pinned_host_keys(line):
            raise MeasurementError("the data dir holds no well-formed Ed25519 host key")
        pattern, public_key = line.split(" ", 1)
        self._config.trust(pattern, public_key)

    async def _check_nats(self) -> None:
        # Without NATS no node is ever ready; say so now rather than after HAProxy's wait.
        address = urllib.parse.urlsplit(self._nats)
        try:
            async with asyncio.timeout(5.0):
                _, writer = await asyncio.open_connection(address.hostname, address.port or 4222)
            writer.close()
        except (OSError, TimeoutError, ValueError) as error:
            raise TargetUnavailable(
                f"no NATS server at {self._nats} ({error or 'timed out'}); start nats-server "
                "or set SECONDLINE_BENCH_NATS"
            ) from None

    async def _create_database(self) -> None:
        import asyncpg  # the broker's own PostgreSQL driver

        try:
            connection = await asyncpg.connect(self._dsn)
        except (OSError, asyncpg.PostgresError) as error:
            raise TargetUnavailable(
                f"cannot reach PostgreSQL at {self._dsn} ({error}); "
                "set SECONDLINE_BENCH_PG to a server the bench may create databases on"
            ) from None
        try:
            await connection.execute(f'CREATE DATABASE "{self._database}"')
            self._created = True
        finally:
            await connection.close()

    async def _drop_database(self) -> None:
        import asyncpg

        connection = await asyncpg.connect(self._dsn)
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{self._database}" WITH (FORCE)')
        finally:
            await connection.close()

    async def _init_nodes(self) -> None:
        first = self._nodes[0]
        await run_command(
            [
                _program("secondline"), "--data-dir", str(first.data_dir), "init",
                "--public-url", self.broker_url,
                "--https-port", str(first.https_port), "--ssh-port", str(first.ssh_port),
                "--listen-host", "127.0.0.1",
                "--database-url", database_url(self._dsn, self._database),
            ],
            env=self.env,
            label="secondline init",
        )  # fmt: skip
        # Every node: a copy of the first data dir (keys, admin token), joined to one
        # cluster of its own name, so bench runs sharing the NATS server never hear
        # each other (docs/cluster.md, "Setting up").
        section = (
            f'\n[cluster]\nnats_url = "{self._nats}"\nname = "{self._database.replace("_", "-")}"\n'
        )
        with (first.data_dir / "secondline.toml").open("a", encoding="utf-8") as fh:
            fh.write(section)
        for node in self._nodes[1:]:
            shutil.copytree(first.data_dir, node.data_dir)

    async def _start_node(self, node: Node) -> None:
        node.process = await ManagedProcess.start(
            f"secondline serve --node {node.name}",
            [
                _program("secondline"), "--data-dir", str(node.data_dir), "serve",
                "--https-port", str(node.https_port), "--ssh-port", str(node.ssh_port),
                "--node", node.name,
            ],
            # Policy, not performance, as for the single node (SecondlineTarget).
            env={
                **self.env,
                "SECONDLINE_MAX_SESSIONS_PER_STAFF": str(self._max_sessions),
                "SECONDLINE_SSH_SECOND_FACTOR": "off",
            },
        )  # fmt: skip
        await wait_port(node.https_port, READY_TIMEOUT_S, alive=node.process)
        await wait_port(node.ssh_port, READY_TIMEOUT_S, alive=node.process)

    async def _start_haproxy(self, haproxy: str) -> None:
        config = self.directory / "haproxy.cfg"
        config.write_text(haproxy_config(HAPROXY_TEMPLATE.read_text(), len(self._nodes)))
        env = {
            **os.environ,
            "SL_LB_HOST": "127.0.0.1",
            "SL_LB_HTTPS_PORT": str(self.https_port),
            "SL_LB_SSH_PORT": str(self.ssh_port),
            "SL_NODE_CA": str(self.data_dir / "keys" / "tls.crt"),
            "SL_LB_STATS_SOCKET": str(self._stats_socket),
        }
        for index, node in enumerate(self._nodes, start=1):
            env |= {
                f"SL_N{index}_HOST": "127.0.0.1",
                f"SL_N{index}_HTTPS_PORT": str(node.https_port),
                f"SL_N{index}_SSH_PORT": str(node.ssh_port),
            }
        self._haproxy = await ManagedProcess.start(
            "haproxy", [haproxy, "-W", "-db", "-f", str(config)], env=env
        )
        await self._haproxy.wait_for_line(r"Loading success", READY_TIMEOUT_S)
        await self._wait_all_up()

    async def _wait_all_up(self) -> None:
        """Return once HAProxy's health checks (/readyz: database and NATS up) pass on
        every node; only its stats socket can say so, so ask with a growing pause."""
        names = {node.name for node in self._nodes}
        pause = 0.05
        states: dict[str, str] = {}
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                while True:
                    states = server_states(await self._show_stat(), "nodes_https")
                    if all(states.get(name, "").startswith("UP") for name in names):
                        return
                    if self._haproxy is not None and self._haproxy.returncode is not None:
                        raise MeasurementError(f"haproxy exited: {self._haproxy.last_line()}")
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 1.0)
        except TimeoutError:
            raise MeasurementError(
                f"HAProxy did not see every node ready within {READY_TIMEOUT_S:.0f} s: {states}"
            ) from None

    async def _show_stat(self) -> str:
        try:
            reader, writer = await asyncio.open_unix_connection(str(self._stats_socket))
        except OSError:
            return ""
        writer.write(b"show stat\n")
        await writer.drain()
        data = await reader.read()
        writer.close()
        return data.decode(errors="replace")

    async def _held(self) -> list[int]:
        context = ssl.create_default_context(cafile=str(self.data_dir / "keys" / "tls.crt"))

        def read(port: int) -> str:
            url = f"https://127.0.0.1:{port}/metrics"
            with urllib.request.urlopen(url, context=context, timeout=10) as answer:
                body: bytes = answer.read()
                return body.decode()

        return [agents_held(await asyncio.to_thread(read, node.https_port)) for node in self._nodes]

    async def _held_until(
        self, done: Callable[[list[int]], bool], process: ManagedProcess | None
    ) -> list[int]:
        """Each node's agents_held once `done` says so; only /metrics can tell, so ask
        with a growing pause, and stop waiting if `process` (the agent) exits."""
        pause = 0.05
        held: list[int] = []
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                while not done(held := await self._held()):
                    if process is not None and process.returncode is not None:
                        raise MeasurementError(
                            f"{process.name} exited {process.returncode}: {process.last_line()}"
                        )
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 1.0)
        except TimeoutError:
            raise MeasurementError(
                f"the nodes' agents_held stayed {held} for {READY_TIMEOUT_S:.0f} s"
            ) from None
        return held

    async def _add_agent(self, index: int) -> None:
        """Enroll and run bench agent `index` through HAProxy, give it a ticket, and
        note the node whose gateway reaches it."""
        name = f"bench-agent-{index + 1}"
        state_dir = self.directory / f"agent{index + 1}"
        token = parse_token(
            await self.admin("token", "create", "--customer", CUSTOMER, "--consent", "unattended")
        )
        agent = _program("secondline-agent")
        await run_command(
            [agent, "enroll", self.broker_url, token, "--state-dir", str(state_dir),
             "--name", name],
            env=self.env,
            label="secondline-agent enroll",
        )  # fmt: skip
        argv = [agent, "run", "--state-dir", str(state_dir)]
        for _ in range(PLACEMENT_TRIES):
            before = await self._held()
            process = await ManagedProcess.start(
                f"secondline-agent run ({name})", argv, env=self.env
            )
            after = await self._held_until(functools.partial(_grew, before), process)
            gained = [i for i, (b, a) in enumerate(zip(before, after, strict=True)) if a > b]
            # HAProxy's leastconn gives the next tunnel to the node with the fewest, but a
            # connection that has not closed yet (an admin command's) can tip it; two bench
            # agents on one node would leave the other node's hub and recorder idle, so
            # such an agent is stopped and dials again.
            if len(gained) == 1 and before[gained[0]] == 0:
                break
            await process.stop()
            await self._held_until(before.__eq__, None)
        else:
            raise MeasurementError(
                f"{name} never landed on a node without a bench agent in {PLACEMENT_TRIES} tries"
            )
        self._agents.append(process)
        await self._wait_online(name, process)
        ticket = parse_ticket_id(
            await self.admin(
                "ticket", "create", "--title", "Benchmark", "--customer", CUSTOMER,
                "--agent", name, "--level", "2",
            )
        )  # fmt: skip
        await self.admin("ticket", "assign", ticket, STAFF_USER)
        self._names.append(name)
        self._tickets.append(ticket)

    async def wait_agent_online(self) -> None:
        """Return once every bench agent is listed online."""
        for name, process in zip(self._names, self._agents, strict=True):
            await self._wait_online(name, process)

    async def _wait_online(self, name: str, process: ManagedProcess) -> None:
        # As SecondlineTarget: the CLI is the contract, asked with a growing pause.
        pause = 0.05
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                while not agent_is_online(await self.admin("agent", "list", "--json"), name):
                    if process.returncode is not None:
                        raise MeasurementError(
                            f"secondline-agent run exited {process.returncode}: "
                            f"{process.last_line()}"
                        )
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 1.0)
        except TimeoutError:
            raise MeasurementError(
                f"agent {name} not online within {READY_TIMEOUT_S:.0f} s"
            ) from None

    def ssh_argv(self, command: str | None, tty: bool) -> list[str]:
        """``ssh -p HAPROXY_SSH T-<n>@127.0.0.1``, each call the next agent's ticket."""
        ticket = self._tickets[next(self._turn) % len(self._tickets)]
        return self._config.argv(
            "-p", str(self.ssh_port), "-i", str(self._workspace.identity),
            *(["-tt"] if tty else []),
            f"{ticket}@127.0.0.1",
            *([command] if command is not None else []),
        )  # fmt: skip

    def broker_pid(self) -> int:
        """The first node's pid (the cluster targets measure no per-process figure)."""
        process = self._nodes[0].process
        if process is None:
            raise MeasurementError("the cluster is not running")
        return process.pid

    async def restart_broker(self) -> None:
        """Not measured on a cluster: restart recovery is the single node's figure."""
        raise MeasurementError("restart_recovery is not measured on the cluster targets")

    async def teardown(self) -> None:
        """Stop the agents, HAProxy and the nodes; drop the run's database."""
        for agent in self._agents:
            await agent.stop()
        self._agents = []
        if self._haproxy is not None:
            await self._haproxy.stop()
            self._haproxy = None
        for node in self._nodes:
            if node.process is not None:
                await node.process.stop()
                node.process = None
        if self._created:
            try:
                await self._drop_database()
            except (OSError, BenchError) as error:
                raise MeasurementError(f"could not drop {self._database}: {error}") from None
            self._created = False
