"""Private OpenSSH servers and client configuration for the baselines.

Every sshd the bench starts listens on 127.0.0.1 on a free high port with its own config,
host key, authorized_keys and pid file under the bench's temp dir; the system's sshd and
its config are never used. Every client runs with the bench's own ssh_config (`-F`), its
own identity and known_hosts, `StrictHostKeyChecking yes` and `BatchMode yes`.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import os
import shutil
import socket
import subprocess
from contextlib import suppress
from pathlib import Path
from typing import Final

from agent.ssh_server import sftp_server_path
from bench import MeasurementError, SshdMissing
from bench.child_process import ManagedProcess, run_command

logger = logging.getLogger(__name__)

SSHD: Final = Path("/usr/sbin/sshd")
PRIVSEP_DIR: Final = Path("/run/sshd")
POLICY_RC_D: Final = Path("/usr/sbin/policy-rc.d")
READY_TIMEOUT_S: Final = 15.0


def ensure_openssh() -> None:
    """Install openssh-server with apt-get when sshd is missing (root only).

    A temporary policy-rc.d (exit 101, Debian's "action forbidden") keeps the package's
    maintainer scripts from starting the system sshd on port 22 during the install.
    """
    if SSHD.exists() and shutil.which("ssh") and shutil.which("ssh-keygen"):
        return
    if os.geteuid() != 0:
        raise SshdMissing(
            f"{SSHD} is not installed and the bench is not root: run "
            "`apt-get install --no-install-recommends openssh-server` as root, then `make bench`"
        )
    if shutil.which("apt-get") is None:
        raise SshdMissing(f"{SSHD} is not installed and there is no apt-get: install OpenSSH")
    print(f"bench: {SSHD} is missing; installing openssh-server with apt-get", flush=True)
    wrote_policy = False
    if not POLICY_RC_D.exists():
        POLICY_RC_D.write_text(
            "#!/bin/sh\n# written by Secondline's bench during apt-get\nexit 101\n"
        )
        POLICY_RC_D.chmod(0o755)
        wrote_policy = True
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "openssh-server"],
            check=True,
            env=env,
        )
    except subprocess.CalledProcessError as error:
        raise SshdMissing(f"apt-get failed ({error.returncode}); install openssh-server") from None
    finally:
        if wrote_policy:
            POLICY_RC_D.unlink()
    if not SSHD.exists():
        raise SshdMissing(f"openssh-server is installed but {SSHD} is still missing")


def free_port() -> int:
    """Return a loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def keygen(path: Path, comment: str) -> str:
    """Create an Ed25519 key pair at `path` and return the public key line."""
    await run_command(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)]
    )
    return path.with_suffix(".pub").read_text().strip()


def login_user() -> str:
    """The account the baselines log in to: the one running the bench."""
    return getpass.getuser()


def openssh_version() -> str:
    """Return the OpenSSH client's version line, e.g. ``OpenSSH_9.2p1 Debian-2+deb12u6``."""
    try:
        done = subprocess.run(["ssh", "-V"], capture_output=True, text=True, check=False)
    except OSError:
        return "not installed"
    return (done.stderr or done.stdout).strip().split(",")[0]


class ClientConfig:
    """An ssh_config file and known_hosts of the bench's own, for one target."""

    def __init__(self, directory: Path, identity: Path, kex: str | None) -> None:
        self.path = directory / "ssh_config"
        self.known_hosts = directory / "known_hosts"
        self.known_hosts.touch()
        # -J hands only -F (not -i or -o) to the jump ssh, so everything lives in this file.
        lines = [
            "Host *",
            f"  IdentityFile {identity}",
            "  IdentitiesOnly yes",
            f"  UserKnownHostsFile {self.known_hosts}",
            "  GlobalKnownHostsFile /dev/null",
            "  StrictHostKeyChecking yes",
            "  UpdateHostKeys no",
            "  BatchMode yes",
            f"  User {login_user()}",
            "  LogLevel ERROR",
            "  ConnectTimeout 30",
        ]
        if kex:
            lines.append(f"  KexAlgorithms {kex}")
        self.path.write_text("\n".join(lines) + "\n")

    def add_host(self, alias: str, port: int) -> None:
        """Name `alias` as 127.0.0.1:`port`, its key pinned under the alias."""
        block = f"Host {alias}\n  HostName 127.0.0.1\n  Port {port}\n  HostKeyAlias {alias}\n"
        # Host blocks must precede "Host *" to win; rewrite with the block first.
        self.path.write_text(block + self.path.read_text())

    def trust(self, host_pattern: str, public_key: str) -> None:
        """Pin `public_key` for `host_pattern` (``[127.0.0.1]:PORT`` or an alias)."""
        with self.known_hosts.open("a") as known:
            known.write(f"{host_pattern} {public_key}\n")

    def trust_port(self, port: int, public_key: str) -> None:
        """Pin `public_key` for 127.0.0.1:`port`."""
        self.trust(f"[127.0.0.1]:{port}", public_key)

    def argv(self, *options: str) -> list[str]:
        """Return ``ssh -F CONFIG`` followed by `options`."""
        return ["ssh", "-F", str(self.path), *options]


class PrivateSshd:
    """An sshd of the bench's own on 127.0.0.1, run in the foreground (``-D -e``)."""

    def __init__(self, name: str, directory: Path, authorized_key: str) -> None:
        self.name = name
        self.directory = directory
        self._authorized_key = authorized_key
        self.port = 0
        self.host_public_key = ""
        self._process: ManagedProcess | None = None

    async def start(self) -> None:
        """Write the config, start sshd and return once it listens."""
        self.directory.mkdir(parents=True, exist_ok=True)
        host_key = self.directory / "ssh_host_ed25519_key"
        self.host_public_key = " ".join((await keygen(host_key, f"bench-{self.name}")).split()[:2])
        authorized = self.directory / "authorized_keys"
        authorized.write_text(self._authorized_key + "\n")
        authorized.chmod(0o600)
        if os.geteuid() == 0:
            PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        home = self.directory / "home"
        home.mkdir(exist_ok=True)
        self.port = free_port()
        config = self.directory / "sshd_config"
        # Everything not listed keeps OpenSSH's defaults, like the PERFORMANCE.md peers.
        config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {host_key}",
                    f"PidFile {self.directory / 'sshd.pid'}",
                    f"AuthorizedKeysFile {authorized}",
                    "UsePAM no",
                    "StrictModes no",
                    "PermitRootLogin prohibit-password",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    "PrintMotd no",
                    "PrintLastLog no",
                    # The login account's dotfiles are not the transport: bash sources
                    # ~/.bashrc even for `ssh host true`, and a slow one (pyenv init) would
                    # add ~100 ms to every baseline. An empty HOME keeps them out.
                    f"SetEnv HOME={home}",
                    # Debian's own sshd_config names it; a file of our own must too. The
                    # same program as the Secondline agent runs, so only the path differs.
                    f"Subsystem sftp {sftp_server_path() or 'internal-sftp'}",
                    "LogLevel INFO",
                ]
            )
            + "\n"
        )
        self._process = await ManagedProcess.start(
            f"sshd {self.name}", [str(SSHD), "-D", "-e", "-f", str(config)]
        )
        await self._process.wait_for_line(r"Server listening on 127\.0\.0\.1 port", READY_TIMEOUT_S)

    @property
    def pid(self) -> int:
        """The listening sshd's pid."""
        if self._process is None:
            raise RuntimeError("sshd is not started")
        return self._process.pid

    async def stop(self) -> None:
        """Stop sshd; sessions still open end with it."""
        if self._process is not None:
            await self._process.stop()
            self._process = None


async def wait_port(port: int, wait_s: float, alive: ManagedProcess | None = None) -> None:
    """Return once 127.0.0.1:`port` accepts a connection.

    There is no event to wait on for a port we do not own, so this retries connecting
    with a short, growing pause, and gives up as soon as `alive` exits.
    """
    pause = 0.01
    async with asyncio.timeout(wait_s):
        while True:
            if alive is not None and alive.returncode is not None:
                raise MeasurementError(
                    f"{alive.name} exited {alive.returncode}: {alive.last_line()}"
                )
            with suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                with suppress(OSError):
                    await writer.wait_closed()
                return
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.2)
