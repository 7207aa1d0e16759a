"""A swarm of simulated agents in worker processes, for the benchmark and the fault tests.

Every simulated agent is really enrolled through ``POST /agent/v1/enroll`` and keeps a real
tunnel up (real TLS, WebSocket and SSH handshake; :mod:`bench.agent_swarm_worker` says how
it retries). :class:`Swarm` drives the worker processes from the parent: ``spawn`` (enroll),
``connect``, ``misbehave``, ``quiesce``, ``wait_until(predicate)`` over the summed
:class:`SwarmStatus`, ``close``; :func:`broker_call` is one REST call as the admin.

Some agents can be told to present bad credentials (docs/protocol.md: the agent presents
its id in the ``X-Secondline-Agent`` header of the upgrade, then its host key in the SSH
handshake). Roles are fixed at enrollment and take effect on ``misbehave``, which also
starts a new phase (fresh tallies, every waiting agent dials at once):

- ``wrong_key``: its own id, but a host key it did not enroll with;
- ``impostor``: a valid upgrade for an agent id it does not own (a good agent's of the
  same worker), with its own enrolled key;
- ``revoked``: behaves well; whoever runs the swarm revokes it through the API;
- ``good``: behaves well.

``quiesce`` stops every agent that is not good once it has been refused in the current
phase (one still waiting for its turn is refused first), so that the tallies are final.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import ssl
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal, cast

import aiohttp

from agent.reaping import reap
from bench import MeasurementError

Role = Literal["good", "wrong_key", "impostor", "revoked"]
ROLES: Final[tuple[Role, ...]] = ("good", "wrong_key", "impostor", "revoked")
ENROLL_TIMEOUT_S: Final = 600.0
#: A roster line holds every agent of a worker.
LINE_LIMIT: Final = 16 * 1024 * 1024


# -- the plan (pure) -------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SwarmPlan:
    """How many agents, in how many processes, and how many of each bad role."""

    size: int
    processes: int = 4
    wrong_key: int = 0
    impostors: int = 0
    revoked: int = 0

    def shares(self) -> list[SwarmPlan]:
        """One plan per worker: agents and each role spread as evenly as possible."""
        workers = max(1, min(self.processes, self.size))

        def part(total: int, index: int) -> int:
            return total // workers + (1 if index < total % workers else 0)

        plans = [
            SwarmPlan(
                size=part(self.size, i),
                processes=1,
                wrong_key=part(self.wrong_key, i),
                impostors=part(self.impostors, i),
                revoked=part(self.revoked, i),
            )
            for i in range(workers)
        ]
        for plan in plans:
            plan.roles()  # refuse an impossible plan before any process starts
        return plans

    def roles(self) -> list[tuple[Role, int | None]]:
        """Each agent's role and, for an impostor, the index of the agent it claims to be."""
        bad = self.wrong_key + self.impostors + self.revoked
        good = self.size - bad
        if min(self.size, self.wrong_key, self.impostors, self.revoked) < 0 or good < 0:
            raise ValueError("a swarm cannot hold more bad agents than agents")
        if self.impostors > good:
            raise ValueError("every impostor needs a good agent of its own to claim")
        roles: list[tuple[Role, int | None]] = [("wrong_key", None)] * self.wrong_key
        roles += [("impostor", bad + i) for i in range(self.impostors)]
        roles += [("revoked", None)] * self.revoked
        roles += [("good", None)] * good
        return roles


@dataclass(frozen=True, slots=True)
class SwarmAgent:
    """One enrolled agent of the swarm, as the parent knows it."""

    name: str
    agent_id: str
    role: Role
    fingerprint: str  # of the key it enrolled with
    bad_fingerprint: str = ""  # of the key a wrong_key agent presents instead
    claims: str = ""  # the agent id an impostor presents instead of its own


@dataclass(frozen=True)
class SwarmStatus:
    """What the workers reported, summed: the phase, agents online and attempts per role.

    ``up`` counts agents whose current tunnel finished its SSH handshake (the broker
    authenticated and registers it); ``online`` those whose current tunnel also served
    ``sl:facts`` (which the broker asks for once a reconnect storm is over);
    ``tally[role][outcome]`` counts attempts started in this phase; ``refused_agents[role]``
    how many agents of the role met at least one refusal; ``active_bad`` how many agents
    that are not good still dial.
    """

    phase: int = 0
    online: Mapping[str, int] = field(default_factory=dict)
    up: Mapping[str, int] = field(default_factory=dict)
    tally: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    refused_agents: Mapping[str, int] = field(default_factory=dict)
    active_bad: int = 0

    def count(self, role: str, outcome: str) -> int:
        return self.tally.get(role, {}).get(outcome, 0)

    def outcomes(self, outcome: str) -> int:
        """Attempts of every role with this outcome."""
        return sum(self.count(role, outcome) for role in ROLES)

    @classmethod
    def total(cls, parts: Sequence[SwarmStatus]) -> SwarmStatus:
        online: Counter[str] = Counter()
        up: Counter[str] = Counter()
        refused: Counter[str] = Counter()
        tally: dict[str, Counter[str]] = {}
        for part in parts:
            online.update(part.online)
            up.update(part.up)
            refused.update(part.refused_agents)
            for role, counts in part.tally.items():
                tally.setdefault(role, Counter()).update(counts)
        return cls(
            phase=min((p.phase for p in parts), default=0),
            online=dict(online),
            up=dict(up),
            tally={role: dict(counts) for role, counts in tally.items()},
            refused_agents=dict(refused),
            active_bad=sum(p.active_bad for p in parts),
        )

    @classmethod
    def parse(cls, text: str) -> SwarmStatus:
        data = json.loads(text)
        return cls(
            phase=int(data["phase"]),
            online={str(k): int(v) for k, v in data["online"].items()},
            up={str(k): int(v) for k, v in data.get("up", {}).items()},
            tally={
                str(role): {str(k): int(v) for k, v in counts.items()}
                for role, counts in data["tally"].items()
            },
            refused_agents={str(k): int(v) for k, v in data["refused_agents"].items()},
            active_bad=int(data["active_bad"]),
        )


# -- the parent: worker processes and their summed status -----------------------------------


class _WorkerProcess:
    """One worker process as the parent sees it: its roster, its last status, its stderr."""

    def __init__(self, process: asyncio.subprocess.Process, notify: Callable[[], None]) -> None:
        self.process = process
        self.roster: list[SwarmAgent] | None = None
        self.status = SwarmStatus()
        self.stderr: list[str] = []
        self.done = False
        self._notify = notify
        assert process.stdout is not None
        assert process.stderr is not None
        self._readers = [
            asyncio.create_task(self._read(process.stdout)),
            asyncio.create_task(self._drain(process.stderr)),
        ]

    async def _read(self, stream: asyncio.StreamReader) -> None:
        try:
            while line := await stream.readline():
                kind, _, text = line.decode(errors="replace").partition(" ")
                if kind == "status":
                    self.status = SwarmStatus.parse(text)
                elif kind == "roster":
                    self.roster = [SwarmAgent(**entry) for entry in json.loads(text)]
                self._notify()
        finally:
            self.done = True
            self._notify()

    async def _drain(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            self.stderr = [*self.stderr[-19:], line.decode(errors="replace").rstrip()]

    async def send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command.encode() + b"\n")
        await self.process.stdin.drain()

    async def stop(self, grace: float) -> None:
        """Close the worker's input (its signal to end); past ``grace`` seconds, or when
        the stop is cancelled, kill it and wait for it."""
        if self.process.stdin is not None and not self.process.stdin.is_closing():
            self.process.stdin.close()
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self.process.wait()
        finally:
            await reap(self.process)
            for reader in self._readers:
                reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)


class Swarm:
    """The worker processes of one swarm, driven from the parent (see the module doc)."""

    def __init__(
        self,
        *,
        url: str,
        cert: Path,
        plan: SwarmPlan,
        make_token: Callable[[int], Awaitable[str]],
        env: Mapping[str, str] | None = None,
        prefix: str = "",
        redial: Literal["agent", "fast"] = "fast",
    ) -> None:
        self.plan = plan
        #: How agents redial after a failed dial or a dropped tunnel (bench.agent_swarm_worker).
        self.redial = redial
        self.prefix = prefix or f"sim{random.randrange(10**6):06d}"
        self._url = url
        self._cert = cert
        self._make_token = make_token
        self._env = dict(env) if env is not None else None
        self._workers: list[_WorkerProcess] = []
        self._changed = asyncio.Event()

    async def __aenter__(self) -> Swarm:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    @property
    def roster(self) -> list[SwarmAgent]:
        """Every enrolled agent of the swarm (after :meth:`spawn`)."""
        return [agent for w in self._workers for agent in (w.roster or ())]

    def worker_pids(self) -> list[int]:
        """The worker processes' ids (the bench reads their CPU time)."""
        return [w.process.pid for w in self._workers]

    def status(self) -> SwarmStatus:
        """The workers' last reports, summed."""
        return SwarmStatus.total([w.status for w in self._workers])

    async def spawn(self, wait_s: float = ENROLL_TIMEOUT_S) -> None:
        """Start the workers; return once every agent is enrolled."""
        token = await self._make_token(self.plan.size)
        for index, share in enumerate(self.plan.shares()):
            argv = [
                sys.executable, "-m", "bench.agent_swarm_worker", "--url", self._url,
                "--token", token, "--count", str(share.size), "--prefix",
                f"{self.prefix}-{index}", "--cert", str(self._cert),
                "--wrong-key", str(share.wrong_key), "--impostors", str(share.impostors),
                "--revoked", str(share.revoked), "--redial", self.redial,
            ]  # fmt: skip
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self._env,
                limit=LINE_LIMIT,
                start_new_session=True,
            )
            self._workers.append(_WorkerProcess(process, self._notify))
        await self._wait(
            lambda: all(w.roster is not None for w in self._workers), wait_s, "enrolled"
        )

    async def _command(self, command: str) -> None:
        for process in self._workers:
            await process.send(command)

    async def connect(self) -> None:
        """Tell every agent to connect now (returns at once)."""
        await self._command("connect")

    async def misbehave(self, wait_s: float = 30.0) -> SwarmStatus:
        """Start a new phase (fresh tallies, bad credentials, everyone dials now)."""
        phase = self.status().phase + 1
        await self._command("misbehave")
        return await self.wait_until(lambda s: s.phase >= phase, wait_s, f"phase {phase}")

    async def quiesce(self, wait_s: float = 120.0) -> SwarmStatus:
        """Stop the agents that are not good (each once refused in this phase); return the
        tallies once all of them stopped."""
        await self._command("quiesce")
        return await self.wait_until(lambda s: s.active_bad == 0, wait_s, "bad agents stopped")

    async def wait_until(
        self, predicate: Callable[[SwarmStatus], bool], wait_s: float, what: str
    ) -> SwarmStatus:
        """The summed status once ``predicate`` holds for it (MeasurementError after
        ``wait_s`` or when a worker ends)."""
        found: list[SwarmStatus] = []

        def check() -> bool:
            found[:] = [self.status()]
            return predicate(found[0])

        await self._wait(check, wait_s, what)
        return found[0]

    async def _wait(self, ready: Callable[[], bool], wait_s: float, what: str) -> None:
        try:
            async with asyncio.timeout(wait_s):
                while True:
                    changed = self._changed
                    if ready():
                        return
                    for w in self._workers:
                        if w.done:
                            raise MeasurementError(
                                f"a swarm worker ended before {what}: {w.stderr[-3:]}"
                            )
                    await changed.wait()
        except TimeoutError:
            raise MeasurementError(
                f"the swarm did not reach {what} within {wait_s:.0f} s: {self.status()}"
            ) from None

    async def close(self, grace: float = 10.0) -> None:
        """Stop every worker (end of input, then a kill after ``grace``)."""
        workers, self._workers = self._workers, []
        await asyncio.gather(*(w.stop(grace) for w in workers))


async def broker_call(
    url: str, cert: Path, token: str, method: str, path: str, body: object | None = None
) -> tuple[int, object]:
    """One REST call to the broker (``/api/v1`` + path) as the holder of ``token``; the
    status and the decoded JSON answer (None when there is none)."""
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session,
        session.request(method, url + "/api/v1" + path, json=body, headers=headers) as response,
    ):
        data = await response.json() if response.content_type == "application/json" else None
        return response.status, cast(object, data)
