"""The worker process of :mod:`bench.agent_swarm`: many simulated agents in one process.

``python -m bench.agent_swarm_worker --url U --token T --count N --prefix P --cert C
[--wrong-key K] [--impostors I] [--revoked R] [--redial agent|fast]`` enrolls N agents
(the first K wrong_key, the next I impostors, the next R revoked, the rest good:
:meth:`SwarmPlan.roles`), prints
``roster {json}``, then ``status {json}`` lines as things change, and reads commands on
stdin: ``connect``, ``misbehave``, ``quiesce``; end of input stops it.

Each agent is a ``websockets`` client, the shared adapter of :mod:`agent.tunnel` and a
light asyncssh server answering ``sl:facts`` (a real SSH handshake, its Ed25519 key, the
broker's client key pinned), as ``secondline-agent run`` does without its PTY machinery.
Retries: a 503 with ``Retry-After`` waits it plus the real agent's jitter
(:func:`agent.runner.busy_delay`); a 403 and a failed SSH handshake wait the real agent's
backoff (:class:`agent.backoff.Backoff`). The rest depends on ``--redial``:

- ``agent`` (the restart storm bench): as the real agent (``AgentRunner._connect_once``),
  a dial nobody answers (the broker restarts), any other failed dial and a dropped tunnel
  wait the agent's exponential backoff with full jitter, reset only by a tunnel that
  stayed up for a minute: after a restart the swarm comes back spread as real agents do;
- ``fast`` (the default, for the tests): a failed dial is retried within 1-2 s and a
  dropped tunnel within 1 s, so after a restart the whole swarm is back at once: a
  harsher herd than real agents, which keeps the tests short.

A refused SSH handshake is counted once the broker closed the WebSocket with 1008: the
broker writes the audit record of a refusal before it closes, so the count proves the
record. Attempts are tallied per phase (``misbehave`` starts one); an attempt begun in an
earlier phase is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import resource
import ssl
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import aiohttp
import asyncssh
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus, WebSocketException

from agent.backoff import Backoff
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
from agent.reverse_ssh import open_reverse_connection
from agent.runner import busy_delay, retry_after, tunnel_ssl_context
from agent.ssh_server import tunnel_algorithms
from agent.tunnel import WebSocketTunnel
from bench import MeasurementError
from bench.agent_swarm import ROLES, Role, SwarmPlan

logger = logging.getLogger(__name__)

ENROLL_CONCURRENCY: Final = 8
#: ``--redial fast``: the base of a redial after a failed dial or a dropped tunnel.
RECONNECT_S: Final = 1.0
REDIALS: Final = ("agent", "fast")
#: How long a refused agent waits for the broker to close the WebSocket (its audit proof).
REFUSAL_CLOSE_S: Final = 30.0
#: The close code the broker ends a refused tunnel with (policy violation).
REFUSED_CLOSE_CODE: Final = 1008
STATUS_EVERY_S: Final = 0.05
FACTS: Final = Facts(
    hostname="sim", os="Simulated", os_version="1", kernel="0", arch="x86_64", users=()
)


class _HeldStream:
    """The tunnel's message stream over a ``websockets`` client that never closes it: the
    agent loop does, or waits for the broker to (a refusal's proof of audit)."""

    def __init__(self, websocket: ClientConnection) -> None:
        self._ws = websocket

    async def send(self, data: bytes) -> None:
        await self._ws.send(data)

    async def recv(self) -> bytes | None:
        try:
            message = await self._ws.recv()
        except WebSocketException:
            return None
        return message if isinstance(message, bytes) else None

    async def close(self) -> None:
        """Left to the agent loop."""


class Worker:
    """This process's agents, the phase, and what their attempts met."""

    def __init__(self, redial: str = "fast") -> None:
        #: Whether failed dials and dropped tunnels wait the real agent's backoff.
        self.agent_backoff = redial == "agent"
        self.agents: list[SimulatedAgent] = []
        self.phase = 0
        self.misbehaving = False
        self.quiet = False
        self.tally: dict[str, Counter[str]] = {role: Counter() for role in ROLES}
        self.refused: dict[str, set[int]] = {role: set() for role in ROLES}
        self.changed = asyncio.Event()
        self._wake_all = asyncio.Event()
        self._wake_bad = asyncio.Event()

    def count(self, phase: int, agent: SimulatedAgent, outcome: str) -> None:
        """Count an attempt's outcome, unless it began in an earlier phase."""
        if phase != self.phase:
            return
        self.tally[agent.role][outcome] += 1
        if outcome in ("refused_403", "handshake_refused"):
            self.refused[agent.role].add(agent.index)
        self.changed.set()

    def misbehave(self) -> None:
        """A new phase: fresh tallies, bad roles turn bad, every waiting agent dials now."""
        self.phase += 1
        self.misbehaving = True
        self.tally = {role: Counter() for role in ROLES}
        self.refused = {role: set() for role in ROLES}
        self._wake(everyone=True)

    def quiesce(self) -> None:
        """Agents that are not good stop once refused in this phase (a bad agent still
        waiting for its turn keeps its place and is refused first)."""
        self.quiet = True
        self._wake(everyone=False)

    def _wake(self, *, everyone: bool) -> None:
        self._wake_bad.set()
        self._wake_bad = asyncio.Event()
        if everyone:
            self._wake_all.set()
            self._wake_all = asyncio.Event()
        self.changed.set()

    def stopped(self, agent: SimulatedAgent) -> bool:
        """Whether ``agent`` is done: quiesced, not good, and refused in this phase."""
        return self.quiet and agent.role != "good" and agent.index in self.refused[agent.role]

    async def pause(self, seconds: float, agent: SimulatedAgent) -> None:
        """A retry delay, cut short by a new phase (and by quiesce, once it stops us)."""
        refused = agent.role != "good" and agent.index in self.refused[agent.role]
        wake = self._wake_bad if refused else self._wake_all
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await wake.wait()

    def status(self) -> str:
        online = Counter(a.role for a in self.agents if a.online)
        up = Counter(a.role for a in self.agents if a.up)
        return json.dumps(
            {
                "phase": self.phase,
                "online": {role: online[role] for role in ROLES},
                "up": {role: up[role] for role in ROLES},
                "tally": {role: dict(c) for role, c in self.tally.items()},
                "refused_agents": {role: len(s) for role, s in self.refused.items()},
                "active_bad": sum(1 for a in self.agents if a.role != "good" and a.active),
            },
            separators=(",", ":"),
        )


class SimulatedAgent:
    """One enrolled agent keeping its tunnel up (with bad credentials if its role says)."""

    def __init__(
        self,
        worker: Worker,
        index: int,
        role: Role,
        key: asyncssh.SSHKey,
        answer: EnrollmentAnswer,
    ) -> None:
        self.worker = worker
        self.index = index
        self.role = role
        self.key = key
        self.answer = answer
        self.bad_key = asyncssh.generate_private_key("ssh-ed25519") if role == "wrong_key" else None
        self.claims = ""
        self.backoff = Backoff()
        self.up = False
        self.online = False
        self.active = True

    def credentials(self, misbehaving: bool) -> tuple[str, asyncssh.SSHKey]:
        """The agent id for the upgrade header and the SSH host key to present."""
        if misbehaving and self.bad_key is not None:
            return self.answer.agent_id, self.bad_key
        if misbehaving and self.claims:
            return self.claims, self.key
        return self.answer.agent_id, self.key

    def roster(self) -> dict[str, str]:
        return {
            "name": self.answer.name,
            "agent_id": self.answer.agent_id,
            "role": self.role,
            "fingerprint": str(self.key.get_fingerprint("sha256")),
            "bad_fingerprint": str(self.bad_key.get_fingerprint("sha256")) if self.bad_key else "",
            "claims": self.claims,
        }

    async def run(
        self, ssl_context: ssl.SSLContext, authorized: asyncssh.SSHAuthorizedKeys
    ) -> None:
        """Dial, serve, and dial again, until the swarm stops (or quiesces a bad agent)."""
        worker = self.worker
        try:
            while not worker.stopped(self):
                delay = await self._attempt(worker.phase, ssl_context, authorized)
                if worker.stopped(self):
                    break
                await worker.pause(delay, self)
        finally:
            self.active = False
            worker.changed.set()

    async def _attempt(
        self, phase: int, ssl_context: ssl.SSLContext, authorized: asyncssh.SSHAuthorizedKeys
    ) -> float:
        """One dial; the delay before the next."""
        worker = self.worker
        agent_id, host_key = self.credentials(worker.misbehaving)
        jitter = random.random()
        try:
            websocket = await connect(
                self.answer.tunnel_url,
                ssl=ssl_context,
                additional_headers={AGENT_ID_HEADER: agent_id},
                compression=None,
                max_size=MAX_TUNNEL_MESSAGE,
                open_timeout=60,
            )
        except InvalidStatus as exc:
            code = exc.response.status_code
            if code == 503:
                told = retry_after(exc)
                worker.count(phase, self, "busy" if told is not None else "busy_no_retry_after")
                return self._redial(jitter) if told is None else busy_delay(told, jitter)
            worker.count(phase, self, "refused_403" if code in (401, 403) else f"http_{code}")
            return self.backoff.refused(jitter) if code in (401, 403) else self._redial(jitter)
        except ConnectionRefusedError:
            worker.count(phase, self, "dial_refused")  # the broker is not there (restart)
            return self._redial(jitter)
        except (OSError, TimeoutError, WebSocketException) as exc:
            worker.count(phase, self, "dial_failed")
            logger.debug("dial failed: %r", exc)
            return self._redial(jitter)
        try:
            conn = await open_reverse_connection(
                WebSocketTunnel(_HeldStream(websocket)),
                server_host_keys=[host_key],
                authorized_client_keys=authorized,
                process_factory=self._answer_facts,
                config=None,
                gss_host=None,
                encoding=None,
                agent_forwarding=False,
                x11_forwarding=False,
                allow_scp=False,
                keepalive_interval=KEEPALIVE_INTERVAL,
                keepalive_count_max=KEEPALIVE_COUNT_MAX,
                **tunnel_algorithms(),
            )
        except (asyncssh.Error, OSError) as exc:
            logger.debug("handshake failed: %r", exc)
            refused = await _closed_by_broker(websocket)
            worker.count(phase, self, "handshake_refused" if refused else "handshake_unconfirmed")
            return self.backoff.failed(jitter)
        worker.count(phase, self, "ssh_up")
        # The broker authenticated: it registers the tunnel as its handshake returns.
        self.up = True
        worker.changed.set()
        began = time.monotonic()
        try:
            await conn.wait_closed()
        finally:
            self.up = False
            self.online = False
            worker.changed.set()
            await websocket.close()
        worker.count(phase, self, "dropped")
        delay = self.backoff.disconnected(time.monotonic() - began, jitter)
        return delay if worker.agent_backoff else RECONNECT_S * jitter

    def _redial(self, jitter: float) -> float:
        """The delay after a dial that failed without a Retry-After."""
        if self.worker.agent_backoff:
            return self.backoff.failed(jitter)
        return RECONNECT_S * (1 + jitter)

    def _answer_facts(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        process.stdout.write(FACTS.serialize() + b"\n")
        process.exit(0)
        # The broker asks for facts once it registered the tunnel: now it lists us online.
        self.online = True
        self.worker.changed.set()


async def _closed_by_broker(websocket: ClientConnection) -> bool:
    """Wait for the broker to close a refused tunnel; True when it did, with 1008."""
    try:
        async with asyncio.timeout(REFUSAL_CLOSE_S):
            await websocket.wait_closed()
    except TimeoutError:
        await websocket.close()
        return False
    return websocket.close_code == REFUSED_CLOSE_CODE


async def _enroll(
    session: aiohttp.ClientSession,
    url: str,
    token: str,
    name: str,
) -> tuple[asyncssh.SSHKey, EnrollmentAnswer]:
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
    return key, EnrollmentAnswer.parse(body)


async def run_worker(
    url: str, token: str, plan: SwarmPlan, prefix: str, cert_pem: str, redial: str = "fast"
) -> None:
    """Enroll the plan's agents, print the roster, then obey stdin until it ends."""
    worker = Worker(redial)
    ssl_context = tunnel_ssl_context(cert_pem)
    roles = plan.roles()
    connector = aiohttp.TCPConnector(ssl=ssl_context, limit=ENROLL_CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:
        gate = asyncio.Semaphore(ENROLL_CONCURRENCY)

        async def enroll(index: int) -> SimulatedAgent:
            async with gate:
                key, answer = await _enroll(session, url, token, f"{prefix}-{index}")
            return SimulatedAgent(worker, index, roles[index][0], key, answer)

        worker.agents = list(await asyncio.gather(*(enroll(i) for i in range(plan.size))))
    for agent, (_, victim) in zip(worker.agents, roles, strict=True):
        if victim is not None:
            agent.claims = worker.agents[victim].answer.agent_id
    print("roster " + json.dumps([a.roster() for a in worker.agents]), flush=True)
    broker_key = worker.agents[0].answer.broker_ssh_key.serialize()
    authorized = asyncssh.import_authorized_keys(broker_key)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks = [loop.create_task(_report(worker))]
    running = False
    while line := await reader.readline():
        command = line.strip()
        if command == b"connect" and not running:
            running = True
            tasks += [loop.create_task(a.run(ssl_context, authorized)) for a in worker.agents]
        elif command == b"misbehave":
            worker.misbehave()
        elif command == b"quiesce":
            worker.quiesce()
        worker.changed.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _report(worker: Worker) -> None:
    """Print the status whenever it changed, at most every STATUS_EVERY_S (a rate limit on
    this output, not a wait for anything)."""
    while True:
        await worker.changed.wait()
        worker.changed.clear()
        print("status " + worker.status(), flush=True)
        await asyncio.sleep(STATUS_EVERY_S)


def raise_fd_limit() -> None:
    """Take the hard descriptor limit: thousands of tunnels, or hundreds of sessions with a
    PTY and pipes each, need more than the usual soft 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: Sequence[str] | None = None) -> int:
    """The worker process (started by :class:`Swarm`)."""
    parser = argparse.ArgumentParser(prog="python -m bench.agent_swarm_worker", description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--cert", type=Path, required=True)
    parser.add_argument("--wrong-key", type=int, default=0)
    parser.add_argument("--impostors", type=int, default=0)
    parser.add_argument("--revoked", type=int, default=0)
    parser.add_argument("--redial", choices=REDIALS, default="fast")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="swarm: %(message)s", stream=sys.stderr)
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    raise_fd_limit()
    plan = SwarmPlan(
        size=args.count,
        processes=1,
        wrong_key=args.wrong_key,
        impostors=args.impostors,
        revoked=args.revoked,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            run_worker(args.url, args.token, plan, args.prefix, args.cert.read_text(), args.redial)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
