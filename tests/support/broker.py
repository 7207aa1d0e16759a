"""Running the real broker: `secondline init` into a data dir, `secondline serve` as a
process, and the `secondline` CLI as a process, the way an admin would."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from broker.bootstrap import init_data_dir
from tests.support.database import Backend

READY = re.compile(rb"secondline: serving https://[^:]+:(\d+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def init_dir(path: Path, backend: Backend, **settings: object) -> Path:
    https_port, ssh_port = free_port(), free_port()
    merged: dict[str, object] = {
        "listen_host": "127.0.0.1",
        "https_port": https_port,
        "ssh_port": ssh_port,
        **backend.settings(),
        **settings,
    }
    init_data_dir(path, f"https://127.0.0.1:{https_port}", settings=merged)
    return path


def cli_env(data_dir: Path | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECONDLINE_")}
    # Each data dir (or test path) gets its own HOME, so stored logins never leak between them.
    env["HOME"] = f"{data_dir or '/nonexistent'}.home"
    env.pop("XDG_CONFIG_HOME", None)
    env.update(extra)
    return env


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json(self) -> object:
        return json.loads(self.out)


def secondline(
    *args: str,
    data_dir: Path | None = None,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
) -> CliResult:
    """Run the `secondline` CLI as a process (with --data-dir first when given)."""
    argv = [sys.executable, "-m", "broker.cli.main"]
    if data_dir is not None:
        argv += ["--data-dir", str(data_dir)]
    proc = subprocess.run(
        [*argv, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env or cli_env(data_dir),
        timeout=60,
        check=False,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@dataclass
class BrokerProcess:
    data_dir: Path
    process: asyncio.subprocess.Process
    https_port: int = 0
    output: list[bytes] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _reader: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    def start_reading(self) -> None:
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        # Keep draining output so the pipe never fills and blocks the broker.
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self.output.append(line)
            self._changed.set()
        self._changed.set()

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.returncode is None:
            self.process.send_signal(sig)
        async with asyncio.timeout(30):
            code = await self.process.wait()
        if self._reader is not None:
            await self._reader
        return code

    async def wait_for_line(self, pattern: bytes, start: int = 0) -> bytes:
        """Wait until a line of the broker's output matches; fail if it exits first."""
        async with asyncio.timeout(30):
            index = start
            while True:
                while index < len(self.output):
                    line = self.output[index]
                    index += 1
                    if re.search(pattern, line):
                        return line
                if self._reader is not None and self._reader.done():
                    raise AssertionError(b"broker exited: " + b"".join(self.output[-30:]))
                self._changed.clear()
                await self._changed.wait()


async def start_broker(data_dir: Path, *extra_args: str) -> BrokerProcess:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "broker.cli.main",
        "--data-dir",
        str(data_dir),
        "serve",
        *extra_args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=cli_env(data_dir),
    )
    broker = BrokerProcess(data_dir, proc)
    broker.start_reading()
    line = await broker.wait_for_line(READY.pattern)
    match = READY.search(line)
    assert match is not None
    broker.https_port = int(match.group(1))
    return broker
