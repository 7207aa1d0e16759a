"""The restart storm (issue 16): a whole cluster stopped and started under N agents.

``python -m bench.cluster_storm [--agents 10000] [--processes 4] [--quick] [--profile]
[--redial agent|fast]`` sets up the cluster of :mod:`bench.cluster_target` with three
nodes (PostgreSQL, NATS and HAProxy running deploy/haproxy.cfg), enrolls the swarm of
:mod:`bench.agent_swarm` through HAProxy and connects it, lets every tunnel stay up for
the minute after which a real agent's backoff starts over (``--redial agent``, the
default: the swarm redials as real agents do; ``fast`` is the tests' harsher herd, back
within 1-2 s), then stops every node (SIGTERM, all at once) and starts
every node again (all at once). It reports the seconds from the start until half, 90 %
and all of the agents are back, what each node then holds against its fair share
(broker.cluster.share), what it turned away (503 ``over_share``) and handed off, its CPU
and memory, and what the machine's limits looked like on the way: HAProxy's ``maxconn``,
the descriptors, PostgreSQL's connections, TCP sockets in use and in TIME_WAIT.

The promise is every agent back within 60 s (:data:`bench.storm_figures.PROMISE_S`);
``--profile`` samples each node with py-spy from its start until all are back and adds
the functions the samples were in to the JSON. The figures go to
``bench/results/cluster-storm-<UTC time>.json`` (and ``cluster-storm-latest.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import resource
import shutil
import signal
import ssl
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Literal

from agent.backoff import STABLE_AFTER_SECONDS
from bench import BenchError, MeasurementError, TargetUnavailable
from bench.agent_swarm import Swarm, SwarmPlan, SwarmStatus
from bench.cluster_target import ClusterTarget, Node
from bench.openssh import free_port
from bench.procfs import cpu_seconds, rss_kib
from bench.profile import py_spy
from bench.secondline_target import CUSTOMER
from bench.settings import DEFAULT_RESULTS_DIR
from bench.storm_figures import (
    PROMISE_S,
    NodeFigures,
    agents_that_fit,
    checks_delta,
    descriptors_needed,
    haproxy_checks,
    metric,
    milestones,
    refusals_by_code,
    show_info,
    sockstat,
    summary,
    tally_delta,
    thin,
    top_frames,
)
from bench.targets import Workspace
from broker.cluster.share import share_limit

logger = logging.getLogger(__name__)

NODES: Final = 3
#: Failure bounds, not pauses: enrolling 10,000 agents on a shared 2-core machine takes
#: minutes, and the storm is measured well past its promise before the run gives up.
ENROLL_WAIT_S: Final = 1800.0
ONLINE_WAIT_S: Final = 900.0
#: After all are back: how long the nodes may take to hand their excess on (rounds of
#: 5 s spread and 4 s settle each, docs/cluster.md) before the spread is read as it is.
SPREAD_WAIT_S: Final = 120.0
STOP_GRACE_S: Final = 60.0
SAMPLE_S: Final = 1.0
PROFILE_RATE: Final = 50


class StormCluster(ClusterTarget):
    """The cluster target with three nodes and no bench agents of its own: the swarm is
    the only load, and the nodes can be stopped and started together."""

    def __init__(self, workspace: Workspace) -> None:
        super().__init__(workspace, nodes=NODES)
        self.label = f"Secondline cluster, {NODES} nodes"

    @property
    def nodes(self) -> list[Node]:
        return self._nodes

    @property
    def dsn(self) -> str:
        """The PostgreSQL server's URL the run made its database on."""
        return self._dsn

    @property
    def database(self) -> str:
        return self._database

    @property
    def stats_socket(self) -> Path:
        return self._stats_socket

    async def _setup(self) -> None:
        haproxy = _haproxy()
        await self._check_nats()
        await self._create_database()
        self.https_port, self.ssh_port = _free_ports(2)
        for node in self._nodes:
            node.https_port, node.ssh_port = _free_ports(2)
        await self._init_nodes()
        await asyncio.gather(*(self._start_node(node) for node in self._nodes))
        await self._start_haproxy(haproxy)
        await self.admin("customer", "add", CUSTOMER)

    async def stop_nodes(self) -> None:
        """SIGTERM to every node at once; return when all have exited."""
        running = [node.process for node in self._nodes if node.process is not None]
        await asyncio.gather(*(process.stop(STOP_GRACE_S) for process in running))
        for node in self._nodes:
            node.process = None

    async def start_nodes(self) -> dict[str, float]:
        """Start every node at once; the seconds until each listens on both ports."""
        began = time.monotonic()
        listening: dict[str, float] = {}

        async def start(node: Node) -> None:
            await self._start_node(node)
            listening[node.name] = round(time.monotonic() - began, 2)

        await asyncio.gather(*(start(node) for node in self._nodes))
        return listening

    async def metrics_text(self, node: Node) -> str:
        """The node's /metrics, asked directly (not through HAProxy)."""
        context = ssl.create_default_context(cafile=str(self.data_dir / "keys" / "tls.crt"))

        def read() -> str:
            url = f"https://127.0.0.1:{node.https_port}/metrics"
            with urllib.request.urlopen(url, context=context, timeout=30) as answer:
                body: bytes = answer.read()
                return body.decode()

        return await asyncio.to_thread(read)

    async def haproxy_checks(self) -> dict[str, dict[str, int]]:
        """HAProxy's health-check counters for the nodes' HTTPS backend."""
        return haproxy_checks(await self._show_stat(), "nodes_https")

    async def haproxy_info(self) -> dict[str, str]:
        reader, writer = await asyncio.open_unix_connection(str(self._stats_socket))
        writer.write(b"show info\n")
        await writer.drain()
        data = await reader.read()
        writer.close()
        return show_info(data.decode(errors="replace"))


def _haproxy() -> str:
    found = shutil.which("haproxy", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
    if found is None:
        raise TargetUnavailable("no haproxy: apt-get install haproxy")
    return found


def _free_ports(count: int) -> list[int]:
    return [free_port() for _ in range(count)]


def raise_descriptors(need: int) -> int:
    """Give this process (and so the nodes, HAProxy and the swarm it starts) at least
    ``need`` descriptors if it may; return the soft limit it got."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need:
        # Only a privileged process may raise its hard limit; otherwise keep the hard one.
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))
            return need
    target = hard if hard == resource.RLIM_INFINITY or hard < need else max(soft, need)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Sampler:
    """Once a second while the storm runs: TCP sockets (in use, TIME_WAIT), PostgreSQL
    connections to the run's database, memory available; the peaks are kept."""

    def __init__(self, dsn: str, database: str) -> None:
        self._dsn = dsn
        self._database = database
        self.peaks: dict[str, int] = {}
        self.lowest_available_mib = 0

    def _keep(self, name: str, value: int) -> None:
        self.peaks[name] = max(self.peaks.get(name, 0), value)

    async def run(self) -> None:
        import asyncpg

        connection = await asyncpg.connect(self._dsn)
        try:
            limit = await connection.fetchval("SHOW max_connections")
            self.peaks["pg_max_connections"] = int(limit)
            while True:
                tcp = _tcp_sockets()
                self._keep("tcp_inuse", tcp.get("inuse", 0))
                self._keep("tcp_time_wait", tcp.get("tw", 0))
                count = await connection.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", self._database
                )
                self._keep("pg_connections", int(count))
                available = _mem_available_mib()
                if not self.lowest_available_mib or available < self.lowest_available_mib:
                    self.lowest_available_mib = available
                await asyncio.sleep(SAMPLE_S)
        finally:
            await connection.close()


def _tcp_sockets() -> dict[str, int]:
    return sockstat(Path("/proc/net/sockstat").read_text())


def _mem_available_mib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    return 0


async def _profile(pids: dict[str, int], directory: Path) -> dict[str, asyncio.subprocess.Process]:
    command = py_spy()
    if command is None:
        logger.warning("no py-spy: install the bench extras (make install); not profiling")
        return {}
    samplers = {}
    for name, pid in pids.items():
        samplers[name] = await asyncio.create_subprocess_exec(
            command, "record", "--pid", str(pid), "--format", "raw",
            "--output", str(directory / f"cluster-storm-{name}.txt"),
            "--rate", str(PROFILE_RATE), "--nonblocking",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
    return samplers


async def _stop_profiles(
    samplers: dict[str, asyncio.subprocess.Process], directory: Path
) -> dict[str, object]:
    frames: dict[str, object] = {}
    for name, process in samplers.items():
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        try:
            async with asyncio.timeout(30):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()
        path = directory / f"cluster-storm-{name}.txt"
        if path.exists():
            frames[name] = {"file": path.name, "top_self": top_frames(path.open())}
    return frames


async def _node_figures(
    cluster: StormCluster, held_at_online: dict[str, int], cpu_before: dict[str, float]
) -> list[NodeFigures]:
    figures = []
    for node in cluster.nodes:
        assert node.process is not None
        text = await cluster.metrics_text(node)
        figures.append(
            NodeFigures(
                name=node.name,
                held_when_all_online=held_at_online[node.name],
                held_settled=int(metric(text, "secondline_agents_held")),
                share_refusals=int(metric(text, "secondline_tunnel_share_refusals_total")),
                handed_off=int(metric(text, "secondline_agents_handed_off_total")),
                handshakes=int(metric(text, "secondline_tunnel_handshakes_total")),
                refusals=refusals_by_code(text),
                rss_kib=rss_kib(node.process.pid),
                cpu_s=cpu_seconds(node.process.pid) - cpu_before[node.name],
            )
        )
    return figures


async def _held(cluster: StormCluster) -> dict[str, int]:
    texts = await asyncio.gather(*(cluster.metrics_text(node) for node in cluster.nodes))
    return {
        node.name: int(metric(text, "secondline_agents_held"))
        for node, text in zip(cluster.nodes, texts, strict=True)
    }


async def _settle(cluster: StormCluster, agents: int, limit: int | None) -> tuple[float, bool]:
    """Seconds until the nodes hold every agent with none above its share (asked every
    second: only /metrics can tell), and whether that happened within SPREAD_WAIT_S."""
    began = time.monotonic()
    while time.monotonic() - began < SPREAD_WAIT_S:
        held = await _held(cluster)
        if sum(held.values()) == agents and (limit is None or max(held.values()) <= limit):
            return time.monotonic() - began, True
        await asyncio.sleep(SAMPLE_S)
    return time.monotonic() - began, False


Redial = Literal["agent", "fast"]


async def storm(
    agents: int, processes: int, profile: bool, results: Path, redial: Redial = "agent"
) -> dict[str, object]:
    """Set up, connect, restart the whole cluster, measure; the figures."""
    wanted = descriptors_needed(agents)
    descriptors = raise_descriptors(wanted)
    figures: dict[str, object] = {
        "agents": agents,
        "nodes": NODES,
        "swarm_processes": processes,
        "redial": redial,
        "loadavg_at_start": os.getloadavg(),
        "descriptors": {"wanted": wanted, "soft_limit": descriptors},
    }
    with tempfile.TemporaryDirectory(prefix="secondline-storm-") as temp:
        workspace = await Workspace.create(Path(temp), None)
        cluster = StormCluster(workspace)
        await cluster.setup()
        try:
            info = await cluster.haproxy_info()
            maxconn = int(info.get("Maxconn", "0"))
            figures["haproxy"] = {"maxconn": maxconn, "ulimit_n": info.get("Ulimit-n")}
            fits = agents_that_fit(maxconn)
            if fits < agents:
                # Measured at the size the machine allows, and said so: failing would
                # measure nothing, and a silent cut would claim the full size.
                logger.warning(
                    "HAProxy's maxconn is %d (descriptor limit %s, not raisable here): "
                    "%d agents instead of %d; give it LimitNOFILE=%d for the full size",
                    maxconn, info.get("Ulimit-n"), fits, agents, wanted,
                )  # fmt: skip
                figures["agents_wanted"] = agents
                figures["agents"] = agents = fits
            figures |= await _run(cluster, agents, processes, profile, results, redial)
        finally:
            await cluster.teardown()
    figures["loadavg_at_end"] = os.getloadavg()
    return figures


async def _run(
    cluster: StormCluster,
    agents: int,
    processes: int,
    profile: bool,
    results: Path,
    redial: Redial,
) -> dict[str, object]:
    figures: dict[str, object] = {}

    async def make_token(uses: int) -> str:
        out = await cluster.admin(
            "token", "create", "--customer", CUSTOMER, "--consent", "unattended",
            "--uses", str(uses), "--ttl", "4h",
        )  # fmt: skip
        return out.strip()

    swarm = Swarm(
        url=cluster.broker_url,
        cert=cluster.data_dir / "keys" / "tls.crt",
        plan=SwarmPlan(size=agents, processes=processes),
        make_token=make_token,
        env=cluster.env,
        redial=redial,
    )
    sampler = Sampler(cluster.dsn, cluster.database)
    sampling = asyncio.create_task(sampler.run())
    try:
        began = time.monotonic()
        await swarm.spawn(ENROLL_WAIT_S)
        figures["enrolled_s"] = round(time.monotonic() - began, 1)
        began = time.monotonic()
        await swarm.connect()
        peak = [0]

        def connected(status: SwarmStatus) -> bool:
            peak[0] = max(peak[0], _online(status))
            return _online(status) >= agents

        try:
            await swarm.wait_until(connected, ONLINE_WAIT_S, "all online")
        except MeasurementError as error:
            # A herd that never comes online is the figure: keep what explains it.
            figures["failed"] = f"first connect: {error}"
            figures["first_connect_most_online"] = peak[0]
            figures["haproxy_checks_in_first_connect"] = await cluster.haproxy_checks()
            return figures
        figures["first_connect_s"] = round(time.monotonic() - began, 1)
        if redial == "agent":
            # A cluster restarts under agents that have been up for long, whose backoff
            # has started over (agent.backoff): a tunnel up for a minute resets it. The
            # last agent came online just now; this is the simulated steady state.
            await asyncio.sleep(STABLE_AFTER_SECONDS)
        figures["held_before"] = await _held(cluster)

        began = time.monotonic()
        await cluster.stop_nodes()
        figures["stop_s"] = round(time.monotonic() - began, 1)
        await swarm.wait_until(lambda s: _online(s) == 0, ONLINE_WAIT_S, "all cut off")
        tally_before = swarm.status().tally
        checks_before = await cluster.haproxy_checks()

        figures["loadavg_at_restart"] = os.getloadavg()
        curve: list[tuple[float, int]] = []
        # Tunnels up (the broker holds them: the agents take sessions) before their facts
        # are asked for, which waits out the handshakes (broker.agents.facts_pacing).
        up_curve: list[tuple[float, int]] = []
        began = time.monotonic()
        figures["listening_s"] = await cluster.start_nodes()
        # From when they listen: a node's start (imports, keys, database) is not the storm.
        cpu_before = {
            n.name: cpu_seconds(n.process.pid) for n in cluster.nodes if n.process is not None
        }
        # Sampled from when they listen: agents arrive once HAProxy's checks pass.
        samplers: dict[str, asyncio.subprocess.Process] = {}
        if profile:
            pids = {n.name: n.process.pid for n in cluster.nodes if n.process is not None}
            samplers = await _profile(pids, results)

        def record(status: SwarmStatus) -> bool:
            curve.append((time.monotonic() - began, _online(status)))
            up_curve.append((time.monotonic() - began, status.up.get("good", 0)))
            return _online(status) >= agents

        failed = ""
        try:
            await swarm.wait_until(record, ONLINE_WAIT_S, "all back after the restart")
        except MeasurementError as error:
            failed = str(error)
        held_at_online = await _held(cluster)
        if samplers:
            figures["profile"] = await _stop_profiles(samplers, results)
        figures |= milestones(curve, agents)
        figures["curve"] = thin(curve)
        figures["tunnels_up"] = {
            name.replace("online", "up"): seconds
            for name, seconds in milestones(up_curve, agents).items()
        }
        figures["restart_tally"] = tally_delta(tally_before, swarm.status().tally)
        # Nodes HAProxy took out while they were busy with the herd, and the dials it
        # could give to no node meanwhile.
        figures["haproxy_checks_in_restart"] = checks_delta(
            checks_before, await cluster.haproxy_checks()
        )
        if failed:
            figures["failed"] = failed
        limit = share_limit(agents, NODES)
        settled_s, spread = await _settle(cluster, agents, limit)
        figures["spread_within_share"] = spread
        figures["spread_s_after_all_online"] = round(settled_s, 1)
        nodes = await _node_figures(cluster, held_at_online, cpu_before)
        figures["per_node"] = [node.as_json(limit) for node in nodes]
        # The cost of the storm to the cluster: every node's CPU from listening to the
        # end, refused attempts and hand-offs included, per agent brought back.
        figures["node_cpu_ms_per_agent"] = round(sum(n.cpu_s for n in nodes) * 1000 / agents, 2)
        all_online = figures.get("all_online_s")
        figures["promise_met"] = isinstance(all_online, float) and all_online <= PROMISE_S
    finally:
        sampling.cancel()
        await asyncio.gather(sampling, return_exceptions=True)
        await swarm.close()
        figures["peaks"] = sampler.peaks
        figures["lowest_mem_available_mib"] = sampler.lowest_available_mib
    return figures


def _online(status: SwarmStatus) -> int:
    return status.online.get("good", 0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster_storm", description=__doc__)
    parser.add_argument("--agents", type=int, default=None, help="default 10000 (quick: 300)")
    parser.add_argument("--processes", type=int, default=4, help="swarm worker processes")
    parser.add_argument("--quick", action="store_true", help="300 agents, 2 worker processes")
    parser.add_argument("--profile", action="store_true", help="py-spy each node in the storm")
    parser.add_argument(
        "--redial",
        choices=("agent", "fast"),
        default="agent",
        help="agent: the swarm redials with the real agent's backoff; fast: within 1-2 s",
    )
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS_DIR)
    args = parser.parse_args(argv)
    agents = args.agents or (300 if args.quick else 10_000)
    processes = 2 if args.quick else args.processes
    if agents < 1 or processes < 1:
        parser.error("--agents and --processes take a positive number")
    logging.basicConfig(level=logging.INFO, format="bench: %(message)s", stream=sys.stderr)
    args.results.mkdir(parents=True, exist_ok=True)
    try:
        figures = asyncio.run(storm(agents, processes, args.profile, args.results, args.redial))
    except TargetUnavailable as error:
        print(f"cluster_storm: skipped: {error}", file=sys.stderr)
        return 0
    except BenchError as error:
        print(f"cluster_storm: failed: {error}", file=sys.stderr)
        return 1
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(figures, indent=1) + "\n"
    (args.results / f"cluster-storm-{stamp}.json").write_text(text)
    (args.results / "cluster-storm-latest.json").write_text(text)
    print(summary(figures))
    return 1 if "failed" in figures else 0


if __name__ == "__main__":
    sys.exit(main())
