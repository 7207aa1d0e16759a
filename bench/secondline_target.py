"""The Secondline target: staff reach the agent through the broker's SSH gateway.

Setup follows PRODUCT.md's command-line contract only (`secondline init`, `serve`,
`customer add`, `user add`, `token create`, `ticket create`, `ticket assign`, and
`secondline-agent enroll` / `run`), so the bench measures what an admin would run.
Until those commands work, `setup()` raises TargetUnavailable with a one-line reason and
every Secondline figure is reported as skipped, never estimated.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Final

from bench import BenchError, MeasurementError, TargetUnavailable
from bench.child_process import ManagedProcess, run_command
from bench.metrics import BROKER_SCENARIOS, FILE_PARTS, LOADED_PARTS, TargetKey
from bench.openssh import ClientConfig, free_port, wait_port
from bench.targets import SESSION_ONLY, THROUGHPUT, AgentSwarm, Workspace

AGENT_NAME: Final = "bench-agent"
CUSTOMER: Final = "acme"
STAFF_USER: Final = "bench"
READY_TIMEOUT_S: Final = 60.0
RECORDING_SENSITIVE: Final = frozenset(
    {"echo_latency", *LOADED_PARTS, "raw_throughput", "cpu_per_gb_recorded"}
)
TOKEN_RE: Final = re.compile(r"^sle1\.[a-z0-9]{12}\.[A-Za-z0-9]{32}\.[0-9a-f]{64}$")
TICKET_RE: Final = re.compile(r"^(?:T-)?([0-9]{1,12})$")
HOST_KEY_RE: Final = re.compile(
    r"^\[127\.0\.0\.1\]:[0-9]{1,5} (ssh-ed25519|ecdsa-sha2-nistp256) [A-Za-z0-9+/=]{1,1024}$"
)

SwarmFactory = Callable[["SecondlineTarget", int], AgentSwarm]


def parse_token(stdout: str) -> str:
    """Return the enrollment token printed alone by `secondline token create`."""
    token = stdout.strip()
    if not TOKEN_RE.fullmatch(token):
        raise MeasurementError("`secondline token create` did not print a sle1 enrollment token")
    return token


def parse_ticket_id(stdout: str) -> str:
    """Return ``T-<n>`` from the id printed alone by `secondline ticket create`."""
    found = TICKET_RE.fullmatch(stdout.strip())
    if found is None:
        raise MeasurementError("`secondline ticket create` did not print a ticket id like T-1042")
    return f"T-{found.group(1)}"


def agent_is_online(listing: str, name: str) -> bool:
    """Tell whether `secondline agent list --json` shows agent `name` online.

    Accepts a JSON list of agents or an object holding one under ``agents`` or
    ``items``; an agent is online when ``online`` is true or its ``state``/``status``
    is ``online``.
    """
    try:
        document = json.loads(listing)
    except json.JSONDecodeError:
        return False
    if isinstance(document, dict):
        document = document.get("agents", document.get("items", []))
    if not isinstance(document, list):
        return False
    for agent in document:
        if not isinstance(agent, dict) or agent.get("name") != name:
            continue
        if agent.get("online") is True:
            return True
        if "online" in (agent.get("state"), agent.get("status")):
            return True
    return False


def pinned_host_keys(text: str) -> list[str]:
    """Return the well-formed known_hosts lines of ``text``, each checked strictly."""
    return [line for line in text.splitlines() if HOST_KEY_RE.fullmatch(line.strip())]


def _program(name: str) -> str:
    beside_python = Path(sys.executable).parent / name
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which(name)
    if found is None:
        raise TargetUnavailable(f"no `{name}` command: install the project (`make install`)")
    return found


class SecondlineTarget:
    """Staff run ``ssh -p GATEWAY T-<n>@127.0.0.1``; the broker relays to the agent."""

    key: TargetKey = "secondline"
    label = "Secondline"
    allocates_pty = True

    def __init__(
        self,
        workspace: Workspace,
        *,
        max_sessions: int = 10,
        swarm_factory: SwarmFactory | None = None,
    ) -> None:
        self._workspace = workspace
        self._swarm_factory = swarm_factory
        self._max_sessions = max_sessions
        self.directory = workspace.directory(self.key)
        self.data_dir = self.directory / "data"
        self.state_dir = self.directory / "agent"
        home = self.directory / "home"
        home.mkdir(exist_ok=True)
        # Stored staff credentials and SECONDLINE_* variables win over --data-dir, so the
        # bench hides the real ones behind a HOME of its own.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SECONDLINE_")}
        self.env.update(
            HOME=str(home),
            XDG_CONFIG_HOME=str(home / ".config"),
            XDG_STATE_HOME=str(home / ".local/state"),
            XDG_CACHE_HOME=str(home / ".cache"),
        )
        self.https_port = 0
        self.ssh_port = 0
        self._ticket = ""
        self._broker: ManagedProcess | None = None
        self._agent: ManagedProcess | None = None
        self._config = ClientConfig(self.directory, workspace.identity, workspace.kex)

    @property
    def broker_url(self) -> str:
        """The broker's HTTPS URL (console, API, agent enrollment and tunnel)."""
        return f"https://127.0.0.1:{self.https_port}"

    def supports(self, scenario: str) -> bool:
        """Every scenario applies to the broker."""
        return scenario in SESSION_ONLY | THROUGHPUT | FILE_PARTS | set(BROKER_SCENARIOS)

    async def setup(self) -> None:
        """Bootstrap a broker, a level-2 user, an enrolled agent and an assigned ticket."""
        try:
            await self._setup()
        except (BenchError, OSError, TimeoutError) as error:
            await self.teardown()
            reason = str(error) or type(error).__name__
            raise TargetUnavailable(f"secondline broker not available ({reason})") from None

    async def _setup(self) -> None:
        self.https_port, self.ssh_port = free_port(), free_port()
        secondline = _program("secondline")
        # --data-dir is given as the global option (before the command), the form every
        # admin command uses; PRODUCT.md also lists `init --data-dir`, which the CLI may
        # not take after the command.
        await run_command(
            [secondline, "--data-dir", str(self.data_dir), "init", "--public-url", self.broker_url],
            env=self.env,
            label="secondline init",
        )
        await self._start_broker()
        await self.admin("customer", "add", CUSTOMER)
        await self.admin(
            "user",
            "add",
            STAFF_USER,
            "--role",
            "level2",
            "--ssh-key",
            str(self._workspace.identity.with_suffix(".pub")),
            "--customer",
            CUSTOMER,
        )
        token = parse_token(
            await self.admin("token", "create", "--customer", CUSTOMER, "--consent", "unattended")
        )
        agent = _program("secondline-agent")
        await run_command(
            [
                agent,
                "enroll",
                self.broker_url,
                token,
                "--state-dir",
                str(self.state_dir),
                "--name",
                AGENT_NAME,
            ],
            env=self.env,
            label="secondline-agent enroll",
        )
        self._agent = await ManagedProcess.start(
            "secondline-agent run", [agent, "run", "--state-dir", str(self.state_dir)], env=self.env
        )
        await self.wait_agent_online()
        self._ticket = parse_ticket_id(
            await self.admin(
                "ticket",
                "create",
                "--title",
                "Benchmark",
                "--customer",
                CUSTOMER,
                "--agent",
                AGENT_NAME,
                "--level",
                "2",
            )
        )
        await self.admin("ticket", "assign", self._ticket, STAFF_USER)
        # The gateway's host key is read from the data dir this bench initialised, as
        # `secondline known-hosts` does: ssh-keyscan offers no strict key exchange, which the
        # gateway refuses (Terrapin), and reading the file trusts nothing on first use.
        pub = (self.data_dir / "keys" / "ssh_host_ed25519.pub").read_text(encoding="ascii")
        lines = pinned_host_keys(f"[127.0.0.1]:{self.ssh_port} {' '.join(pub.split()[:2])}")
        if not lines:
            raise MeasurementError("the broker's data dir holds no well-formed Ed25519 host key")
        for line in lines:
            pattern, public_key = line.split(" ", 1)
            self._config.trust(pattern, public_key)

    async def admin(self, *args: str) -> str:
        """Run ``secondline --data-dir D --url URL ARGS...`` and return its stdout.

        --url because the data dir names the configured HTTPS port, not the one `serve`
        was given on its command line; token and CA certificate still come from D.
        """
        words = [arg for arg in args[:2] if not arg.startswith("-")]
        return await run_command(
            [
                _program("secondline"),
                "--data-dir",
                str(self.data_dir),
                "--url",
                self.broker_url,
                *args,
            ],
            env=self.env,
            label=" ".join(["secondline", *words]),
        )

    def _serve_program(self) -> list[str]:
        return [_program("secondline")]

    async def _start_broker(self) -> None:
        self._broker = await ManagedProcess.start(
            "secondline serve",
            [
                *self._serve_program(),
                "--data-dir",
                str(self.data_dir),
                "serve",
                "--https-port",
                str(self.https_port),
                "--ssh-port",
                str(self.ssh_port),
            ],
            # The per-staff session limit and the SSH second factor are policy, not
            # performance: the bench's one staff member holds the loaded-echo streams and
            # the capacity test's sessions, and signs in with BatchMode (no code prompt).
            env={
                **self.env,
                "SECONDLINE_MAX_SESSIONS_PER_STAFF": str(self._max_sessions),
                "SECONDLINE_SSH_SECOND_FACTOR": "off",
            },
        )
        await wait_port(self.https_port, READY_TIMEOUT_S, alive=self._broker)
        await wait_port(self.ssh_port, READY_TIMEOUT_S, alive=self._broker)

    async def wait_agent_online(self) -> None:
        """Return once the broker lists the bench's agent online."""
        # The CLI is the contract; there is no event to subscribe to, so ask again with
        # a growing pause until the broker lists the agent online.
        pause = 0.05
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                while not agent_is_online(await self.admin("agent", "list", "--json"), AGENT_NAME):
                    if self._agent is not None and self._agent.returncode is not None:
                        raise MeasurementError(
                            f"secondline-agent run exited {self._agent.returncode}: "
                            f"{self._agent.last_line()}"
                        )
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 1.0)
        except TimeoutError:
            raise MeasurementError(
                f"agent {AGENT_NAME} not online within {READY_TIMEOUT_S:.0f} s"
            ) from None

    def ssh_argv(self, command: str | None, tty: bool) -> list[str]:
        """``ssh -p GATEWAY -i KEY T-<n>@127.0.0.1``."""
        return self._config.argv(
            "-p",
            str(self.ssh_port),
            "-i",
            str(self._workspace.identity),
            *(["-tt"] if tty else []),
            f"{self._ticket}@127.0.0.1",
            *([command] if command is not None else []),
        )

    def broker_pid(self) -> int:
        """The pid of `secondline serve`."""
        if self._broker is None:
            raise MeasurementError("the broker is not running")
        return self._broker.pid

    async def restart_broker(self) -> None:
        """Stop `secondline serve` and start it again on the same ports and data dir."""
        if self._broker is not None:
            await self._broker.stop()
        await self._start_broker()

    def agent_swarm(self, size: int) -> AgentSwarm | str:
        """Return the broker team's swarm of `size` simulated agents, or why there is none."""
        if self._swarm_factory is None:
            return (
                "no simulated-agent swarm yet "
                "(plug one in with SecondlineTarget(swarm_factory=...))"
            )
        return self._swarm_factory(self, size)

    async def teardown(self) -> None:
        """Stop the agent and the broker."""
        if self._agent is not None:
            await self._agent.stop()
            self._agent = None
        if self._broker is not None:
            await self._broker.stop()
            self._broker = None


class UnrecordedTarget(SecondlineTarget):
    """The same broker, run by ``python -m bench.unrecorded_broker``: every session's
    recorder is a no-op, so beside Secondline it shows what recording costs."""

    key: TargetKey = "unrecorded"
    label = "Secondline, no-op recorder"

    def supports(self, scenario: str) -> bool:
        """The figures recording can move: echo, loaded echo, throughput, CPU per GB."""
        return scenario in RECORDING_SENSITIVE

    def _serve_program(self) -> list[str]:
        return [sys.executable, "-m", "bench.unrecorded_broker"]
