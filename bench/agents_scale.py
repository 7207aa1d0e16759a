"""Many simulated agents against one broker: memory per idle agent, handshakes per second.

`python -m bench.agents_scale --agents N [--processes P] [--rate R]` starts a broker of its
own (`secondline init` + `serve` in a temp dir), enrolls N agents through
``POST /agent/v1/enroll`` and connects them all at once; it prints the broker's RSS before
and after (``/proc/<pid>/status``, VmRSS), the growth per idle agent, and how many agents
per second came online. ``--rate`` sets ``tunnel_handshakes_per_second`` (0: no limit, to
see what the machine can do).

The agents run in P separate worker processes (`python -m bench.agents_scale worker ...`),
each holding many real tunnels: a ``websockets`` client, the shared adapter of
``agent.tunnel`` and a light asyncssh *server* per agent that answers ``sl:facts`` (a real
SSH handshake each, Ed25519 keys, the broker's client key pinned), as the real agent does
without its PTY machinery. A 503 answer is honoured by waiting its ``Retry-After``.

:func:`swarm_factory` plugs the same swarm into the full bench:
``SecondlineTarget(workspace, swarm_factory=swarm_factory)``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import random
import resource
import ssl
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

import aiohttp
import asyncssh
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from agent.enrollment import EnrollmentAnswer, EnrollmentRequest, EnrollmentToken
from agent.facts import Facts
from agent.protocol import (
    AGENT_ID_HEADER,
    ENROLL_PATH,
    KEEPALIVE_COUNT_MAX,
    KEEPALIVE_INTERVAL,
    MAX_TUNNEL_MESSAGE,
    Ed25519PublicKey,
)
from agent.runner import tunnel_ssl_context
from agent.tunnel import WebsocketsStream, WebSocketTunnel
from bench import MeasurementError
from bench.child_process import ManagedProcess, run_command
from bench.openssh import free_port, wait_port
from bench.procfs import cpu_seconds, rss_kib

if TYPE_CHECKING:
    from bench.secondline_target import SecondlineTarget

logger = logging.getLogger(__name__)

CUSTOMER: Final = "acme"
ENROLL_CONCURRENCY: Final = 8
READY_TIMEOUT_S: Final = 120.0
ONLINE_TIMEOUT_S: Final = 900.0
RECONNECT_S: Final = 1.0
IDLE_S: Final = 10.0
FACTS: Final = Facts(
    hostname="sim", os="Simulated", os_version="1", kernel="0", arch="x86_64", users=()
)


# -- the worker process: N agents, their enrollment and their tunnels ----------------------


class SimulatedAgent:
    """One enrolled agent: its key, its identity, and its tunnel kept up."""

    #: Answers of the broker seen by this worker's agents (printed with the online count).
    busy = 0
    failed = 0

    def __init__(self, key: asyncssh.SSHKey, answer: EnrollmentAnswer) -> None:
        self.key = key
        self.answer = answer
        self.online = False

    async def run(
        self, ssl_context: ssl.SSLContext, authorized: asyncssh.SSHAuthorizedKeys
    ) -> None:
        """Keep the tunnel up: dial, honour 503 Retry-After, serve SSH, reconnect."""
        while True:
            try:
                websocket = await connect(
                    self.answer.tunnel_url,
                    ssl=ssl_context,
                    additional_headers={AGENT_ID_HEADER: self.answer.agent_id},
                    compression=None,
                    max_size=MAX_TUNNEL_MESSAGE,
                    open_timeout=60,
                )
            except InvalidStatus as exc:
                SimulatedAgent.busy += 1
                retry = exc.response.headers.get("Retry-After", "")
                wait = float(retry) if retry.isdigit() else RECONNECT_S
                await asyncio.sleep(wait + random.random() * 0.1)
                continue
            except (OSError, TimeoutError) as exc:
                SimulatedAgent.failed += 1
                logger.debug("dial failed: %r", exc)
                await asyncio.sleep(RECONNECT_S * (1 + random.random()))
                continue
            try:
                conn = await asyncssh.connect_reverse(
                    tunnel=WebSocketTunnel(WebsocketsStream(websocket)),
                    server_host_keys=[self.key],
                    authorized_client_keys=authorized,
                    process_factory=_answer_facts,
                    config=None,
                    gss_host=None,
                    encoding=None,
                    agent_forwarding=False,
                    x11_forwarding=False,
                    allow_scp=False,
                    keepalive_interval=KEEPALIVE_INTERVAL,
                    keepalive_count_max=KEEPALIVE_COUNT_MAX,
                )
            except (asyncssh.Error, OSError) as exc:
                SimulatedAgent.failed += 1
                logger.debug("handshake failed: %r", exc)
                await websocket.close()
                await asyncio.sleep(RECONNECT_S * (1 + random.random()))
                continue
            self.online = True
            await conn.wait_closed()
            self.online = False
            await websocket.close()
            await asyncio.sleep(RECONNECT_S * random.random())


def _answer_facts(process: asyncssh.SSHServerProcess[bytes]) -> None:
    process.stdout.write(FACTS.serialize() + b"\n")
    process.exit(0)


async def _enroll_one(
    session: aiohttp.ClientSession, url: str, token: str, name: str
) -> SimulatedAgent:
    key = asyncssh.generate_private_key("ssh-ed25519")
    request = EnrollmentRequest(
        token=EnrollmentToken.parse(token),
        name=name,
        public_key=Ed25519PublicKey.parse(key.export_public_key().decode("ascii")),
        facts=FACTS,
    )
    async with session.post(
        url + ENROLL_PATH,
        data=request.serialize(),
        headers={"Content-Type": "application/json"},
    ) as response:
        body = await response.read()
        if response.status != 200:
            raise MeasurementError(f"enrollment of {name} refused: {body[:200]!r}")
    return SimulatedAgent(key, EnrollmentAnswer.parse(body))


async def worker(url: str, token: str, count: int, prefix: str, cert_pem: str) -> None:
    """Enroll ``count`` agents, say so, connect them on "connect", stop at end of input."""
    ssl_context = tunnel_ssl_context(cert_pem)
    connector = aiohttp.TCPConnector(ssl=ssl_context, limit=ENROLL_CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:
        gate = asyncio.Semaphore(ENROLL_CONCURRENCY)

        async def enroll(index: int) -> SimulatedAgent:
            async with gate:
                return await _enroll_one(session, url, token, f"{prefix}-{index}")

        agents = await asyncio.gather(*(enroll(i) for i in range(count)))
    authorized = asyncssh.import_authorized_keys(agents[0].answer.broker_ssh_key.serialize())
    print(f"enrolled {len(agents)}", flush=True)
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks: list[asyncio.Task[None]] = []
    while line := await reader.readline():
        if line.strip() == b"connect" and not tasks:
            tasks = [loop.create_task(a.run(ssl_context, authorized)) for a in agents]
            tasks.append(loop.create_task(_report_online(agents)))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _report_online(agents: Sequence[SimulatedAgent]) -> None:
    """Print "online K" whenever the count of this worker's connected agents changes."""
    last = -1
    while True:
        count = sum(1 for a in agents if a.online)
        if count != last:
            print(
                f"online {count} busy {SimulatedAgent.busy} failed {SimulatedAgent.failed}",
                flush=True,
            )
            last = count
        await asyncio.sleep(0.05)


# -- the parent: a swarm of workers ---------------------------------------------------------


class AgentsScaleSwarm:
    """`size` simulated agents in `processes` worker processes (bench.targets.AgentSwarm)."""

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
        self._make_token = make_token
        self._processes = max(1, min(processes, size))
        self._env = env
        self._prefix = f"sim{random.randrange(10**6):06d}"
        self._workers: list[ManagedProcess] = []
        self._counts: list[int] = []

    async def spawn(self) -> None:
        """Start the workers and wait until every agent is enrolled."""
        token = await self._make_token(self.size)
        share = math.ceil(self.size / self._processes)
        for index in range(self._processes):
            count = min(share, self.size - index * share)
            if count <= 0:
                break
            argv = [
                sys.executable, "-m", "bench.agents_scale", "worker",
                "--url", self._url, "--token", token, "--count", str(count),
                "--prefix", f"{self._prefix}-{index}", "--cert", str(self._cert),
            ]  # fmt: skip
            self._workers.append(
                await ManagedProcess.start(
                    f"agents worker {index}", argv, env=self._env, with_stdin=True
                )
            )
            self._counts.append(count)
        for process in self._workers:
            await process.wait_for_line(r"^enrolled \d+", READY_TIMEOUT_S * 5)

    async def connect(self) -> None:
        """Tell every worker to connect its agents now."""
        for process in self._workers:
            await process.write(b"connect\n")

    async def wait_connected(self, wait_s: float) -> tuple[int, int]:
        """Wait until every worker says all of its agents hold a tunnel; return how many
        503 answers and how many failed attempts they met on the way."""
        busy = failed = 0
        for process, count in zip(self._workers, self._counts, strict=True):
            found = await process.wait_for_line(
                rf"^online {count} busy (\d+) failed (\d+)$", wait_s
            )
            busy += int(found.group(1))
            failed += int(found.group(2))
        return busy, failed

    async def online(self) -> int:
        """How many of the swarm's agents the broker lists online."""
        context = ssl.create_default_context(cafile=str(self._cert))
        context.check_hostname = False
        headers = {"Authorization": f"Bearer {self._admin_token}"}
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session,
            session.get(self._url + "/api/v1/agents?status=online", headers=headers) as response,
        ):
            agents = await response.json()
        return sum(1 for a in agents if str(a.get("name", "")).startswith(self._prefix))

    async def close(self) -> None:
        """Stop every worker."""
        for process in self._workers:
            await process.stop()
        self._workers.clear()


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


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _wait_online(
    swarm: AgentsScaleSwarm, count: int, pid: int, cpu_before: float
) -> tuple[float, float, int, int]:
    """Seconds until the agents hold their tunnels (told by the workers, so that asking
    the broker does not load it while it is measured), then the broker's own count."""
    start = time.monotonic()
    busy, failed = await swarm.wait_connected(ONLINE_TIMEOUT_S)
    elapsed = time.monotonic() - start
    cpu = cpu_seconds(pid) - cpu_before
    # The broker lists an agent online a moment after its handshake; ask until it does.
    async with asyncio.timeout(60):
        while await swarm.online() < count:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
    return elapsed, cpu, busy, failed


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


async def standalone(agents: int, processes: int, rate: int) -> dict[str, object]:
    """Set up a broker, run the swarm against it, return the figures."""
    _raise_fd_limit()
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
                before = await _settled_rss(broker.pid)
                cpu_before = cpu_seconds(broker.pid)
                await swarm.connect()
                seconds, cpu, busy, failed = await _wait_online(
                    swarm, agents, broker.pid, cpu_before
                )
                after = await _settled_rss(broker.pid)
                # Idle means idle: the broker tidies its heap once handshakes stop.
                await asyncio.sleep(IDLE_S)
                idle = rss_kib(broker.pid)
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
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.agents_scale", description=__doc__)
    sub = parser.add_subparsers(dest="mode")
    run = sub.add_parser("worker", help="(internal) one process of simulated agents")
    run.add_argument("--url", required=True)
    run.add_argument("--token", required=True)
    run.add_argument("--count", type=int, required=True)
    run.add_argument("--prefix", required=True)
    run.add_argument("--cert", type=Path, required=True)
    parser.add_argument("--agents", type=int, default=2000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--rate", type=int, default=200, help="handshakes/s; 0 = no limit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="bench: %(message)s", stream=sys.stderr)
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    if args.mode == "worker":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(
                worker(args.url, args.token, args.count, args.prefix, args.cert.read_text())
            )
        return 0
    figures = asyncio.run(standalone(args.agents, args.processes, args.rate))
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
