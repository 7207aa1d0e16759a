"""Running the shell blocks of a Markdown document as a test, in the order written.

A block takes part when the line before its fence is ``<!-- walkthrough -->`` (or
``<!-- walkthrough: where it runs -->``, a label for people). The blocks run in one bash
process (``set -e -o pipefail``), so a variable set in one block is there in the next, and
the first command that fails stops the walkthrough with the command named. Each block's
text goes through a substitution table first (the test's own host, ports and paths for
the documentation's); nothing else is changed.

Two kinds of line are not run by bash but by the test, because they run until stopped:
``secondline serve …`` and ``secondline-agent … run``. The test starts them as processes
(after substitution), waits for the line that says they are ready, and stops them at the
end; their output must hold no traceback either."""

from __future__ import annotations

import asyncio
import re
import shlex
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.processes import stop_process

WAIT = 60.0  # failure bound for one step, never a pause
MARKER = re.compile(
    r"^<!-- walkthrough(?::\s*([^>]*?))?\s*-->\n```(?:sh|bash)\n(.*?)^```", re.M | re.S
)
# Lines the test runs as long-lived processes, and the output that says each is ready.
BROKER_READY = re.compile(rb"secondline: serving https://")
AGENT_READY = re.compile(rb"connected to the broker")
AGENT_ONLINE = re.compile(rb"agent ag-[a-z0-9]{16} \(\S+\) online")
LONG_RUNNING: Sequence[tuple[re.Pattern[str], re.Pattern[bytes]]] = (
    (re.compile(r"^secondline\s.*\bserve\b"), BROKER_READY),
    (re.compile(r"^secondline-agent\s.*\brun\b"), AGENT_READY),
)
DONE = "@@walkthrough-step-done"


@dataclass(frozen=True)
class Block:
    label: str
    text: str
    source: str  # "README.md, block 3", for messages


def blocks(markdown: str, source: str) -> list[Block]:
    """The walkthrough blocks of ``markdown``, in order."""
    return [
        Block((m.group(1) or "").strip(), m.group(2), f"{source}, walkthrough block {i}")
        for i, m in enumerate(MARKER.finditer(markdown), start=1)
    ]


def substitute(text: str, table: Sequence[tuple[str, str]]) -> str:
    """Apply the table in order; a key that is a whole number matches whole numbers only."""
    for old, new in table:
        pattern = rf"\b{old}\b" if old.isdigit() else re.escape(old)
        text = re.sub(pattern, new.replace("\\", "\\\\"), text)
    return text


def _long_running(line: str) -> re.Pattern[bytes] | None:
    command = line.split("#", 1)[0].strip()
    for pattern, ready in LONG_RUNNING:
        if pattern.match(command):
            return ready
    return None


@dataclass
class Step:
    """Shell lines for bash, or one long-running command for the test to start."""

    shell: str = ""
    process: str = ""
    ready: re.Pattern[bytes] | None = None
    source: str = ""


def steps(block: Block, table: Sequence[tuple[str, str]]) -> list[Step]:
    out: list[Step] = []
    shell: list[str] = []
    for line in substitute(block.text, table).splitlines():
        ready = _long_running(line)
        if ready is None:
            shell.append(line)
            continue
        if shell:
            out.append(Step(shell="\n".join(shell) + "\n", source=block.source))
            shell = []
        out.append(Step(process=line, ready=ready, source=block.source))
    if any(line.strip() for line in shell):
        out.append(Step(shell="\n".join(shell) + "\n", source=block.source))
    return out


class WalkthroughFailed(AssertionError):
    """A command of the walkthrough failed or printed a traceback."""


@dataclass
class Background:
    argv: list[str]
    process: asyncio.subprocess.Process
    output: bytearray = field(default_factory=bytearray)
    reader: asyncio.Task[None] | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def read(self) -> None:
        assert self.process.stdout is not None
        while chunk := await self.process.stdout.read(65536):
            self.output += chunk
            self.changed.set()
        self.changed.set()

    async def wait_for(self, ready: re.Pattern[bytes], source: str) -> None:
        async with asyncio.timeout(WAIT):
            while not ready.search(self.output):
                if self.reader is not None and self.reader.done():
                    raise WalkthroughFailed(
                        f"{source}: `{shlex.join(self.argv)}` stopped before it was ready:\n"
                        + self.output.decode(errors="replace")[-3000:]
                    )
                self.changed.clear()
                await self.changed.wait()


class Walkthrough:
    """One bash process the blocks run in, plus the long-running processes they start."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.cwd = cwd
        self.env = env
        self.shell: asyncio.subprocess.Process | None = None
        self.background: list[Background] = []
        self.stdout = bytearray()
        self.stderr = bytearray()
        self._err_reader: asyncio.Task[None] | None = None
        self._count = 0

    async def __aenter__(self) -> Walkthrough:
        self.shell = await asyncio.create_subprocess_exec(
            "bash", "--noprofile", "--norc",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, cwd=self.cwd, env=self.env,
        )  # fmt: skip
        self._err_reader = asyncio.get_running_loop().create_task(self._read_stderr())
        await self._send(
            "set -e -o pipefail\n"
            "trap 'echo \"walkthrough: exit status $? from: $BASH_COMMAND\" >&2' ERR\n"
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        # Every process is ended and waited for, also when one outlasts its bound (that
        # one is killed); the first such failure is raised once all are gone.
        failed: list[BaseException] = []
        for bg in reversed(self.background):
            try:
                await stop_process(bg.process, signal.SIGTERM, WAIT)
                if bg.reader is not None:
                    await bg.reader
            except Exception as error:  # raised below, after the others
                failed.append(error)
        if self.shell is not None:
            if self.shell.returncode is None:
                assert self.shell.stdin is not None
                self.shell.stdin.close()  # bash ends after the command it runs
            try:
                await stop_process(self.shell, None, WAIT)
                if self._err_reader is not None:
                    await self._err_reader
            except Exception as error:  # raised below
                failed.append(error)
        if failed:
            raise failed[0]

    async def _read_stderr(self) -> None:
        assert self.shell is not None
        assert self.shell.stderr is not None
        while chunk := await self.shell.stderr.read(65536):
            self.stderr += chunk

    async def _send(self, text: str) -> None:
        assert self.shell is not None
        assert self.shell.stdin is not None
        self.shell.stdin.write(text.encode())
        await self.shell.stdin.drain()

    async def run(self, step: Step) -> None:
        if step.process:
            await self._start(step)
            return
        self._count += 1
        script = self.cwd / f".walkthrough-{self._count}.sh"
        script.write_text(step.shell)
        mark = len(self.stderr)
        # stdin from /dev/null: a command that reads its input gets none, not the script.
        await self._send(f"source {shlex.quote(str(script))} </dev/null\necho {DONE}\n")
        assert self.shell is not None
        assert self.shell.stdout is not None
        async with asyncio.timeout(WAIT):
            while DONE.encode() + b"\n" not in self.stdout:
                chunk = await self.shell.stdout.read(65536)
                if not chunk:
                    await self.shell.wait()
                    raise WalkthroughFailed(
                        f"{step.source}: a command failed\n--- the lines run:\n{step.shell}"
                        f"--- stderr:\n{self.stderr[mark:].decode(errors='replace')[-3000:]}"
                    )
                self.stdout += chunk
        del self.stdout[: self.stdout.index(DONE.encode() + b"\n") + len(DONE) + 1]
        printed = self.stderr[mark:].decode(errors="replace")
        if "Traceback" in printed:
            raise WalkthroughFailed(f"{step.source}: a traceback:\n{printed[-3000:]}")

    async def _start(self, step: Step) -> None:
        argv = shlex.split(step.process, comments=True)
        if any("$" in a for a in argv):
            raise WalkthroughFailed(f"{step.source}: `{step.process}` uses shell variables")
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL, cwd=self.cwd, env=self.env,
        )  # fmt: skip
        bg = Background(argv, proc)
        bg.reader = asyncio.get_running_loop().create_task(bg.read())
        self.background.append(bg)
        assert step.ready is not None
        await bg.wait_for(step.ready, step.source)
        if step.ready is AGENT_READY:
            # The agent is connected; the broker marks it online a moment later. Commands
            # after this line (an `ssh` to the machine) need that: wait for it too.
            for broker in self.background[:-1]:
                if BROKER_READY.search(broker.output):
                    await broker.wait_for(AGENT_ONLINE, step.source)

    def tracebacks(self) -> list[str]:
        """The long-running processes whose output holds a traceback."""
        return [shlex.join(bg.argv) for bg in self.background if b"Traceback" in bytes(bg.output)]
