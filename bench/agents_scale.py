"""Many simulated agents against one broker: memory per idle agent, handshakes per second.

`python -m bench.agents_scale --agents N [--processes P] [--rate R]` starts a broker of its
own (`secondline init` + `serve` in a temp dir), enrolls N agents through
``POST /agent/v1/enroll`` and connects them all at once; it prints the broker's RSS before
and after (``/proc/<pid>/status``, VmRSS), the growth per idle agent, how many agents
per second came online (until the broker lists all of them), and the CPU per handshake of
the broker and of the swarm (utime + stime), then the same once every deferred facts
refresh is done. ``--rate`` sets ``tunnel_handshakes_per_second`` (0: no limit, to see
what the machine can do); ``--profile FILE`` samples the broker with py-spy while the
swarm connects (speedscope JSON for a ``.json`` name, else collapsed stacks).

The agents are the swarm of :mod:`bench.agent_swarm` (P worker processes, each holding many
real tunnels: TLS, WebSocket, a real SSH handshake and ``sl:facts`` per agent); a 503
answer is honoured by waiting its ``Retry-After``.

:func:`swarm_factory` plugs the same swarm into the full bench:
``SecondlineTarget(workspace, swarm_factory=swarm_factory)``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

from bench.agent_swarm import Swarm, SwarmPlan, broker_call
from bench.agent_swarm_worker import raise_fd_limit
from bench.child_process import ManagedProcess, run_command
from bench.openssh import free_port, wait_port
from bench.procfs import cpu_seconds, rss_kib
from bench.profile import py_spy

if TYPE_CHECKING:
    from bench.secondline_target import SecondlineTarget

logger = logging.getLogger(__name__)

CUSTOMER: Final = "acme"
READY_TIMEOUT_S: Final = 120.0
ONLINE_TIMEOUT_S: Final = 900.0
IDLE_S: Final = 10.0
#: The broker trims its heap 5 s after a burst of handshakes or enrollments stops and looks
#: every second (broker.agents.heap_trim): "before" is read after the enrollments' trim,
#: or the trim after the handshakes gives their garbage back too and the growth per agent
#: comes out low (with glibc's allocator, by 2-5 KB at 500 agents).
TRIM_WAIT_S: Final = 7.0


class AgentsScaleSwarm:
    """`size` simulated agents in `processes` worker processes (bench.targets.AgentSwarm),
    all of them good: :class:`bench.agent_swarm.Swarm` under the bench's protocol."""

    def __init__(
        self,
        *,
        url: str,
        admin_token: str,
        cert: Path,
        size: int,
        make_token: Callable[[int], Awaitable[str]],
        processes: int = 4,
        env: dict[str, str] | None = None,
    ) -> None:
        self.size = size
        self._url = url
        self._admin_token = admin_token
        self._cert = cert
        self._swarm = Swarm(
            url=url,
            cert=cert,
            plan=SwarmPlan(size=size, processes=processes),
            make_token=make_token,
            env=env,
        )

    async def spawn(self) -> None:
        """Start the workers and wait until every agent is enrolled."""
        await self._swarm.spawn(READY_TIMEOUT_S * 5)

    async def connect(self) -> None:
        """Tell every worker to connect its agents now."""
        await self._swarm.connect()

    async def wait_connected(self, wait_s: float) -> tuple[int, int]:
        """Wait until every agent finished its SSH handshake; return how many 503 answers
        and how many failed attempts they met on the way."""
        status = await self._swarm.wait_until(
            lambda s: s.up.get("good", 0) >= self.size, wait_s, "all agents connected"
        )
        failed = sum(
            status.outcomes(outcome)
            for outcome in ("dial_refused", "dial_failed", "handshake_unconfirmed")
        )
        return status.outcomes("busy"), failed

    async def wait_facts(self, wait_s: float) -> None:
        """Wait until every agent served ``sl:facts`` (deferred by the broker while
        handshakes are under way)."""
        await self._swarm.wait_until(
            lambda s: s.online.get("good", 0) >= self.size, wait_s, "all facts asked for"
        )

    async def online(self) -> int:
        """How many of the swarm's agents are online: as the workers count them while some
        have not finished their handshake, then as the broker lists them. Listing
        thousands of agents costs the broker CPU (tens of milliseconds), and the bench
        asks many times a second while it measures handshakes: asked only for the final
        word, the broker is measured, not the question."""
        up = self._swarm.status().up.get("good", 0)
        if up < self.size:
            return up
        _, agents = await broker_call(
            self._url, self._cert, self._admin_token, "GET", "/agents?status=online"
        )
        assert isinstance(agents, list)
        prefix = self._swarm.prefix
        return sum(1 for a in agents if str(a.get("name", "")).startswith(prefix))

    def cpu_seconds(self) -> float:
        """CPU seconds the worker processes spent so far (the simulator's own cost)."""
        return sum(cpu_seconds(pid) for pid in self._swarm.worker_pids())

    async def close(self) -> None:
        """Stop every worker."""
        await self._swarm.close()


def swarm_factory(target: SecondlineTarget, size: int) -> AgentsScaleSwarm:
    """The swarm for `SecondlineTarget(swarm_factory=...)` of the full bench."""

    async def make_token(uses: int) -> str:
        out = await target.admin(
            "token", "create", "--customer", CUSTOMER, "--consent", "unattended",
            "--uses", str(uses), "--ttl", "2h",
        )  # fmt: skip
        return out.strip()

    return AgentsScaleSwarm(
        url=target.broker_url,
        admin_token=(target.data_dir / "admin.token").read_text().strip(),
        cert=target.data_dir / "keys" / "tls.crt",
        size=size,
        make_token=make_token,
        env=target.env,
    )


# -- standalone run --------------------------------------------------------------------------


async def _wait_online(
    swarm: AgentsScaleSwarm, count: int, pid: int, cpu_before: float
) -> tuple[float, float, int, int]:
    """Seconds until the broker lists every agent online (the workers tell when all
    finished their handshakes, so that asking the broker does not load it while it is
    measured), and the broker's CPU seconds until then."""
    start = time.monotonic()
    busy, failed = await swarm.wait_connected(ONLINE_TIMEOUT_S)
    # The broker lists an agent online a moment after its handshake; ask until it does.
    async with asyncio.timeout(60):
        while await swarm.online() < count:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    elapsed = time.monotonic() - start
    cpu = cpu_seconds(pid) - cpu_before
    return elapsed, cpu, busy, failed


async def rss_before(pid: int) -> int:
    """The broker's RSS once it settled and trimmed its heap after the enrollments."""
    await asyncio.sleep(TRIM_WAIT_S)
    return await _settled_rss(pid)


async def idle_rss(pid: int) -> tuple[int, int]:
    """The broker's RSS once it settled after the agents came online, and again
    :data:`IDLE_S` later: idle means idle, the broker tidies its heap once handshakes stop
    (broker.agents.heap_trim). The full bench's memory_per_idle_agent measures the same."""
    settled = await _settled_rss(pid)
    await asyncio.sleep(IDLE_S)
    return settled, rss_kib(pid)


async def _settled_rss(pid: int) -> int:
    """The broker's RSS once it stopped moving (collections, freed handshake buffers)."""
    last = rss_kib(pid)
    for _ in range(20):
        await asyncio.sleep(0.5)
        now = rss_kib(pid)
        if abs(now - last) < 64:
            return now
        last = now
    return last


async def _profiler(pid: int, path: Path | None) -> asyncio.subprocess.Process | None:
    """py-spy sampling the broker from outside (``--nonblocking``), when asked."""
    command = py_spy()
    if path is None or command is None:
        if path is not None:
            logger.warning("no py-spy: install the bench extras (make install); not profiling")
        return None
    fmt = "speedscope" if path.name.endswith(".json") else "raw"
    return await asyncio.create_subprocess_exec(
        command, "record", "--pid", str(pid), "--format", fmt, "--output", str(path),
        "--rate", "100", "--nonblocking",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


async def _stop_profiler(process: asyncio.subprocess.Process | None) -> None:
    if process is None:
        return
    process.send_signal(signal.SIGINT)
    await process.wait()


async def standalone(
    agents: int, processes: int, rate: int, profile: Path | None = None
) -> dict[str, object]:
    """Set up a broker, run the swarm against it, return the figures."""
    raise_fd_limit()
    with tempfile.TemporaryDirectory(prefix="sl-agents-scale-") as tmp:
        root = Path(tmp)
        data = root / "data"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SECONDLINE_")}
        env.update(HOME=str(root), SECONDLINE_TUNNEL_HANDSHAKES_PER_SECOND=str(rate))
        port = free_port()
        url = f"https://127.0.0.1:{port}"
        cli = [sys.executable, "-m", "broker.cli.main", "--data-dir", str(data)]
        await run_command(
            [*cli, "init", "--public-url", url, "--https-port", str(port),
             "--ssh-port", str(free_port()), "--listen-host", "127.0.0.1"],
            env=env, label="secondline init",
        )  # fmt: skip
        broker = await ManagedProcess.start("secondline serve", [*cli, "serve"], env=env)
        try:
            await wait_port(port, READY_TIMEOUT_S, alive=broker)
            await run_command([*cli, "customer", "add", CUSTOMER], env=env, label="customer")

            async def make_token(uses: int) -> str:
                out = await run_command(
                    [*cli, "token", "create", "--customer", CUSTOMER, "--consent",
                     "unattended", "--uses", str(uses), "--ttl", "2h"],
                    env=env, label="token create",
                )  # fmt: skip
                return out.strip()

            swarm = AgentsScaleSwarm(
                url=url,
                admin_token=(data / "admin.token").read_text().strip(),
                cert=data / "keys" / "tls.crt",
                size=agents,
                make_token=make_token,
                processes=processes,
                env=env,
            )
            try:
                started = time.monotonic()
                await swarm.spawn()
                enrolled = time.monotonic() - started
                before = await rss_before(broker.pid)
                cpu_before = cpu_seconds(broker.pid)
                swarm_before = swarm.cpu_seconds()
                sampler = await _profiler(broker.pid, profile)
                try:
                    await swarm.connect()
                    seconds, cpu, busy, failed = await _wait_online(
                        swarm, agents, broker.pid, cpu_before
                    )
                    swarm_cpu = swarm.cpu_seconds() - swarm_before
                    await swarm.wait_facts(ONLINE_TIMEOUT_S)
                    cpu_facts = cpu_seconds(broker.pid) - cpu_before
                    swarm_cpu_facts = swarm.cpu_seconds() - swarm_before
                finally:
                    await _stop_profiler(sampler)
                after, idle = await idle_rss(broker.pid)
            finally:
                await swarm.close()
        finally:
            await broker.stop()
    return {
        "agents": agents,
        "processes": processes,
        "tunnel_handshakes_per_second": rate,
        "broker_rss_before_kib": before,
        "broker_rss_after_kib": after,
        "broker_kb_per_agent_just_online": round((after - before) * 1.024 / agents, 1),
        "broker_rss_idle_kib": idle,
        "broker_kb_per_idle_agent": round((idle - before) * 1.024 / agents, 1),
        "enrollments_per_second": round(agents / enrolled, 1),
        "seconds_until_all_online": round(seconds, 2),
        "agents_online_per_second": round(agents / seconds, 1),
        "answers_503_retry_after": busy,
        "failed_attempts": failed,
        "broker_cpu_ms_per_handshake": round(cpu * 1000 / agents, 2),
        "broker_handshakes_per_cpu_second": round(agents / cpu, 1) if cpu else None,
        "swarm_cpu_ms_per_handshake": round(swarm_cpu * 1000 / agents, 2),
        "broker_cpu_ms_per_agent_with_facts": round(cpu_facts * 1000 / agents, 2),
        "swarm_cpu_ms_per_agent_with_facts": round(swarm_cpu_facts * 1000 / agents, 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.agents_scale", description=__doc__)
    parser.add_argument("--agents", type=int, default=2000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--rate", type=int, default=200, help="handshakes/s; 0 = no limit")
    parser.add_argument(
        "--profile",
        type=Path,
        help="py-spy the broker while the swarm connects: speedscope for a .json path, "
        "else py-spy's raw (collapsed stacks) format",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="bench: %(message)s", stream=sys.stderr)
    figures = asyncio.run(standalone(args.agents, args.processes, args.rate, args.profile))
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
