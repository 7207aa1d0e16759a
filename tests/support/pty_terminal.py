"""A program on a real pseudo-terminal, as a person's terminal runs it: the terminal is the
program's controlling tty, so OpenSSH reads passwords and keyboard-interactive answers (the
SSH second factor's code prompt) from it. Output arrives through the event loop's reader on
the master side; tests wait for what they expect to appear, never for a time."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import subprocess
import termios
from collections.abc import Sequence
from typing import Self

WAIT = 30.0  # failure bound for waits, never a pause


def _controlling_tty() -> None:
    # In the child: a new session whose controlling terminal is the pty on stdin.
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class PtyTerminal:
    def __init__(self, proc: subprocess.Popen[bytes], master: int) -> None:
        self.proc = proc
        self.master = master
        self.out = bytearray()
        self.closed = False
        self._changed = asyncio.Event()
        asyncio.get_running_loop().add_reader(master, self._read)

    @classmethod
    def spawn(cls, argv: Sequence[str], env: dict[str, str]) -> Self:
        master, slave = pty.openpty()
        proc = subprocess.Popen(
            list(argv),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            preexec_fn=_controlling_tty,  # the pty becomes its controlling terminal
            close_fds=True,
        )
        os.close(slave)
        return cls(proc, master)

    def _read(self) -> None:
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: the program and its terminal are gone
            chunk = b""
        if chunk:
            self.out += chunk
        else:
            self.closed = True
            asyncio.get_running_loop().remove_reader(self.master)
        self._changed.set()

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    async def expect(self, *patterns: bytes, start: int = 0) -> int:
        """Wait until one of ``patterns`` appears after offset ``start``; returns where it
        ends."""
        try:
            async with asyncio.timeout(WAIT):
                while True:
                    for pattern in patterns:
                        found = self.out.find(pattern, start)
                        if found >= 0:
                            return found + len(pattern)
                    if self.closed:
                        raise AssertionError(f"closed before {patterns!r}: {bytes(self.out)!r}")
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"no {patterns!r} in {bytes(self.out)!r}") from None

    async def finish(self) -> int:
        """Wait for the program to end and its output to drain; its exit status."""
        async with asyncio.timeout(WAIT):
            while not self.closed:
                self._changed.clear()
                await self._changed.wait()
            code = await asyncio.to_thread(self.proc.wait)
        return code

    def close(self) -> None:
        if not self.closed:
            asyncio.get_running_loop().remove_reader(self.master)
            self.closed = True
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)
