"""Long-lived helper processes of the bench (sshd, tunnels, the broker, the agent).

`ManagedProcess` drains the child's output into a short history, lets the caller wait
for a line that proves readiness, and stops the child on teardown. `run_command` runs a
short command and turns a failure into a one-line reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
from collections import deque
from collections.abc import Mapping, Sequence

from agent.reaping import reap
from bench import MeasurementError

logger = logging.getLogger(__name__)

HISTORY_LINES = 50


class ManagedProcess:
    """A child process whose stdout and stderr lines the bench watches."""

    def __init__(self, name: str, process: asyncio.subprocess.Process) -> None:
        self.name = name
        self._process = process
        self._lines: deque[str] = deque(maxlen=HISTORY_LINES)
        self._total = 0
        self._changed = asyncio.Condition()
        self._readers = [
            asyncio.create_task(self._drain(stream), name=f"{name}-drain")
            for stream in (process.stdout, process.stderr)
            if stream is not None
        ]

    @classmethod
    async def start(
        cls,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        discard_stdout: bool = False,
        with_stdin: bool = False,
    ) -> ManagedProcess:
        """Start `argv` with piped output (stdout to /dev/null if asked).

        Its stdin is /dev/null unless `with_stdin`, for `write()`.
        """
        logger.debug("starting %s: %s", name, " ".join(argv))
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if with_stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL if discard_stdout else asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )
        return cls(name, process)

    @property
    def pid(self) -> int:
        """The child's pid."""
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        """The exit status, or None while it runs."""
        return self._process.returncode

    def last_line(self) -> str:
        """Return the last non-empty output line, for error messages."""
        for line in reversed(self._lines):
            if line.strip():
                return line.strip()
        return "no output"

    async def _drain(self, stream: asyncio.StreamReader) -> None:
        while True:
            raw = await stream.readline()
            if not raw:
                break
            async with self._changed:
                self._lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._total += 1
                self._changed.notify_all()
        async with self._changed:
            self._changed.notify_all()

    def _finished_reading(self) -> bool:
        return all(reader.done() for reader in self._readers)

    async def wait_for_line(self, pattern: str, wait_s: float) -> re.Match[str]:
        """Return the first match of `pattern` in a line printed from now on or before.

        Raises MeasurementError when the child closes its output first or `wait_s` passes.
        """
        regex = re.compile(pattern)
        checked = self._total - len(self._lines)

        def scan() -> re.Match[str] | None:
            nonlocal checked
            fresh = self._total - checked
            checked = self._total
            for line in list(self._lines)[-fresh:] if fresh else ():
                found = regex.search(line)
                if found:
                    return found
            return None

        try:
            async with asyncio.timeout(wait_s), self._changed:
                while True:
                    found = scan()
                    if found:
                        return found
                    if self._finished_reading():
                        raise MeasurementError(
                            f"{self.name} ended before printing /{pattern}/: {self.last_line()}"
                        )
                    await self._changed.wait()
        except TimeoutError:
            raise MeasurementError(
                f"{self.name} did not print /{pattern}/ within {wait_s:.0f} s: {self.last_line()}"
            ) from None

    async def write(self, data: bytes) -> None:
        """Write `data` to the child's stdin (started `with_stdin`)."""
        if self._process.stdin is None:
            raise RuntimeError(f"{self.name} was started without a stdin pipe")
        self._process.stdin.write(data)
        await self._process.stdin.drain()

    async def wait_exit(self) -> int:
        """Wait for the child to exit and return its status."""
        return await self._process.wait()

    async def stop(self, grace: float = 5.0) -> None:
        """Send SIGTERM to the child's process group, then SIGKILL after `grace` seconds.

        Cancelled meanwhile (a bench interrupted in its teardown), it kills the group at
        once and waits for the child before the cancel goes on: no child outlives it.
        """
        try:
            if self._process.returncode is None:
                # The child leads its own session: end its helpers (ProxyJump, workers) too.
                self._signal_group(signal.SIGTERM)
                try:
                    async with asyncio.timeout(grace):
                        await self._process.wait()
                except TimeoutError:
                    logger.warning("%s ignored SIGTERM for %.0f s; killing it", self.name, grace)
        finally:
            if self._process.returncode is None:
                self._signal_group(signal.SIGKILL)
            await reap(self._process)
            for reader in self._readers:
                reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, sig)


async def run_command(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    wait_s: float = 60.0,
    label: str | None = None,
) -> str:
    """Run a short command and return its stdout; a failure raises a one-line reason.

    `label` names the command in that reason (default: the program and its first argument).
    """
    name = label or " ".join([os.path.basename(argv[0]), *argv[1:2]])
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(env) if env is not None else None,
        )
    except OSError as error:
        raise MeasurementError(f"`{name}` cannot start: {error.strerror}") from None
    try:
        async with asyncio.timeout(wait_s):
            out, err = await process.communicate()
    except TimeoutError:
        raise MeasurementError(f"`{name}` did not finish within {wait_s:.0f} s") from None
    finally:
        # Also on a cancel (a test's bound, Ctrl-C): the command never outlives its caller.
        await reap(process)
    if process.returncode != 0:
        lines = [line for line in err.decode(errors="replace").splitlines() if line.strip()]
        last = lines[-1].strip() if lines else "no message"
        raise MeasurementError(f"`{name}` exited {process.returncode}: {last}")
    return out.decode(errors="replace")
