"""A real HTTP proxy for the agent's proxy tests: Debian's tinyproxy in the foreground on
a loopback port, with Basic authentication, its log read line by line."""

from __future__ import annotations

import asyncio
import re
import signal
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.broker import free_port
from tests.support.processes import stop_process

WAIT = 30.0
_CONNECT = re.compile(r"Request \(file descriptor \d+\): CONNECT (\S+) HTTP/1\.[01]")


@dataclass
class Tinyproxy:
    """tinyproxy with one user; ``connects`` lists the CONNECT targets it was asked for."""

    work: Path
    user: str = "agent"
    password: str = "pa55word"
    port: int = 0
    lines: list[str] = field(default_factory=list)
    _process: asyncio.subprocess.Process | None = None
    _reader: asyncio.Task[None] | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, password: str | None = None) -> str:
        return f"http://{self.user}:{password or self.password}@127.0.0.1:{self.port}"

    @property
    def connects(self) -> list[str]:
        return [m.group(1) for line in self.lines if (m := _CONNECT.search(line))]

    async def start(self) -> None:
        self.port = free_port()
        self.work.mkdir(parents=True, exist_ok=True)
        conf = self.work / "tinyproxy.conf"
        conf.write_text(
            f"Port {self.port}\nListen 127.0.0.1\nTimeout 600\nLogLevel Info\n"
            f"MaxClients 50\nAllow 127.0.0.1\nBasicAuth {self.user} {self.password}\n"
        )
        self._process = await asyncio.create_subprocess_exec(
            "tinyproxy", "-d", "-c", str(conf),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        self._reader = asyncio.get_running_loop().create_task(self._read())
        try:
            await self.wait_for("Accepting connections")
        except BaseException:
            # A proxy that never got ready is nobody's to stop: end it here.
            await self.stop()
            raise

    async def _read(self) -> None:
        assert self._process is not None
        assert self._process.stdout is not None
        while line := await self._process.stdout.readline():
            self.lines.append(line.decode(errors="replace"))
            self._changed.set()
        self._changed.set()

    async def wait_for(self, text: str) -> None:
        await self.wait_for_count(text, 1)

    async def wait_for_count(self, text: str, count: int) -> None:
        """Until ``count`` lines of the log hold ``text``."""
        async with asyncio.timeout(WAIT):
            while sum(text in line for line in self.lines) < count:
                assert self._process is not None
                if self._process.stdout is not None and self._process.stdout.at_eof():
                    raise AssertionError("tinyproxy ended: " + "".join(self.lines[-10:]))
                self._changed.clear()
                await self._changed.wait()

    async def stop(self) -> None:
        try:
            if self._process is not None:
                await stop_process(self._process, signal.SIGTERM, WAIT)
        finally:
            if self._reader is not None:
                await self._reader
