"""Targets: each is one way for a staff member to reach a shell with the OpenSSH client.

A target prepares what it needs in `setup()`, says how to start a session with
`ssh_argv()`, and removes everything in `teardown()`. Targets that are a broker also
implement `BrokerTarget` (its pid, a restart, a swarm of simulated agents) for the
broker-only scenarios. Adding a target is one small class.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from bench.child_process import ManagedProcess
from bench.metrics import FILE_PARTS, LOADED_PARTS, TargetKey
from bench.openssh import ClientConfig, PrivateSshd, keygen, login_user

SESSION_ONLY = frozenset({"open_prompt", "exec_true", "echo_latency", *LOADED_PARTS})
THROUGHPUT = frozenset({"pty_throughput", "raw_throughput"})


@runtime_checkable
class Target(Protocol):
    """One way to reach a shell; every scenario talks to targets only through this."""

    key: TargetKey
    label: str
    allocates_pty: bool
    """True when ``ssh_argv(..., tty=True)`` allocates the session's PTY itself (ssh -tt);
    False when the caller must run the argv on a PTY of its own (the floor)."""

    def supports(self, scenario: str) -> bool:
        """Tell whether `scenario` (or ``echo_loaded``) makes sense for this target."""
        ...

    async def setup(self) -> None:
        """Start what the target needs; raise TargetUnavailable with a one-line reason."""
        ...

    def ssh_argv(self, command: str | None, tty: bool) -> list[str]:
        """Return the argv that opens a session running `command` (a shell if None)."""
        ...

    async def teardown(self) -> None:
        """Stop every process and remove every file `setup()` made."""
        ...


@runtime_checkable
class AgentSwarm(Protocol):
    """`size` simulated agents, each a separate process, enrolled with a broker.

    Spawning them is the broker team's part (see `SecondlineTarget.swarm_factory`);
    the bench only measures around these calls.
    """

    size: int

    async def spawn(self) -> None:
        """Start the processes, enrolled but not yet connected."""
        ...

    async def connect(self) -> None:
        """Tell every agent to connect now, and return at once."""
        ...

    async def online(self) -> int:
        """Return how many of the swarm's agents the broker reports online."""
        ...

    async def close(self) -> None:
        """Stop every agent process."""
        ...


@runtime_checkable
class BrokerTarget(Target, Protocol):
    """A target with a broker process the bench can observe and restart."""

    def broker_pid(self) -> int:
        """Return the pid of the broker process (memory and CPU are read from /proc)."""
        ...

    async def restart_broker(self) -> None:
        """Stop the broker and start it again on the same ports and data; return when ready."""
        ...

    async def wait_agent_online(self) -> None:
        """Return once the target's own agent is online (after a restart it comes back
        by its reconnect backoff, seconds later than the broker)."""
        ...

    def agent_swarm(self, size: int) -> AgentSwarm | str:
        """Return a swarm of `size` simulated agents, or why there is none yet."""
        ...


@dataclass(frozen=True)
class Workspace:
    """The bench's temp dir and the staff identity every OpenSSH target accepts."""

    root: Path
    identity: Path
    public_key: str
    kex: str | None

    @classmethod
    async def create(cls, root: Path, kex: str | None) -> Workspace:
        """Make the staff key pair under `root`."""
        identity = root / "staff_ed25519"
        public_key = await keygen(identity, "secondline-bench-staff")
        return cls(root=root, identity=identity, public_key=public_key, kex=kex)

    def directory(self, name: str) -> Path:
        """Return a fresh subdirectory for one target."""
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path


class FloorTarget:
    """A local shell in a PTY: no network, only the kernel's PTY and a process."""

    key: TargetKey = "floor"
    label = "floor"
    allocates_pty = False

    def supports(self, scenario: str) -> bool:
        """The floor has an echo and a PTY, not a login or a network."""
        return scenario in {"echo_latency", "pty_throughput"}

    async def setup(self) -> None:
        """Nothing to start."""

    def ssh_argv(self, command: str | None, tty: bool) -> list[str]:
        """Run `command` with the local sh (the caller supplies the PTY)."""
        return ["sh", "-c", command] if command is not None else ["bash", "--norc", "-i"]

    async def teardown(self) -> None:
        """Nothing to stop."""


def _session_argv(
    config: ClientConfig, route: list[str], command: str | None, tty: bool
) -> list[str]:
    return config.argv(
        *route,
        *(["-tt"] if tty else []),
        f"{login_user()}@127.0.0.1",
        *([command] if command is not None else []),
    )


class DirectTarget:
    """B: staff log in directly to the machine's own sshd."""

    key: TargetKey = "B"
    label = "B direct"
    allocates_pty = True

    def __init__(self, workspace: Workspace) -> None:
        self._workspace = workspace
        directory = workspace.directory("direct")
        self._sshd = PrivateSshd("machine", directory / "sshd", workspace.public_key)
        self._config = ClientConfig(directory, workspace.identity, workspace.kex)

    def supports(self, scenario: str) -> bool:
        """Every session scenario applies; there is no broker."""
        return scenario in SESSION_ONLY | THROUGHPUT | FILE_PARTS

    async def setup(self) -> None:
        """Start the machine's sshd and pin its host key."""
        await self._sshd.start()
        self._config.trust_port(self._sshd.port, self._sshd.host_public_key)

    def ssh_argv(self, command: str | None, tty: bool) -> list[str]:
        """``ssh -p PORT user@127.0.0.1``."""
        return _session_argv(self._config, ["-p", str(self._sshd.port)], command, tty)

    async def teardown(self) -> None:
        """Stop the sshd."""
        await self._sshd.stop()


class ReverseTunnelTarget:
    """A: the machine keeps ``ssh -N -R`` open to a bastion; staff use ``ssh -J bastion``."""

    key: TargetKey = "A"
    label = "A reverse tunnel"
    allocates_pty = True

    def __init__(self, workspace: Workspace) -> None:
        self._workspace = workspace
        directory = workspace.directory("tunnel")
        self._machine = PrivateSshd("machine", directory / "machine", workspace.public_key)
        self._bastion = PrivateSshd("bastion", directory / "bastion", workspace.public_key)
        self._config = ClientConfig(directory, workspace.identity, workspace.kex)
        self._tunnel: ManagedProcess | None = None
        self._port = 0

    def supports(self, scenario: str) -> bool:
        """Every session scenario applies; the bastion is stock sshd, not our broker."""
        return scenario in SESSION_ONLY | THROUGHPUT | FILE_PARTS

    async def setup(self) -> None:
        """Start both sshds and the machine's tunnel; return once the bastion listens for it."""
        await self._machine.start()
        await self._bastion.start()
        self._config.add_host("bastion", self._bastion.port)
        self._config.trust("bastion", self._bastion.host_public_key)
        # Port 0: the bastion picks a free port and ssh prints it, which is also the
        # event that proves the forward is listening.
        self._tunnel = await ManagedProcess.start(
            "reverse tunnel",
            self._config.argv(
                "-N",
                "-o",
                "ExitOnForwardFailure=yes",
                "-o",
                "LogLevel=INFO",
                "-R",
                f"0:127.0.0.1:{self._machine.port}",
                "bastion",
            ),
        )
        allocated = await self._tunnel.wait_for_line(
            r"Allocated port (\d+) for remote forward", 30.0
        )
        self._port = int(allocated.group(1))
        self._config.trust_port(self._port, self._machine.host_public_key)

    def ssh_argv(self, command: str | None, tty: bool) -> list[str]:
        """``ssh -J bastion -p TUNNEL_PORT user@127.0.0.1``."""
        return _session_argv(self._config, ["-J", "bastion", "-p", str(self._port)], command, tty)

    async def teardown(self) -> None:
        """Stop the tunnel and both sshds."""
        if self._tunnel is not None:
            await self._tunnel.stop()
        await self._bastion.stop()
        await self._machine.stop()
