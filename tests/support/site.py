"""A real broker site for end-to-end tests: `secondline serve`, really enrolled
`secondline-agent run` processes, the real OpenSSH client (`/usr/bin/ssh -F /dev/null`, its
own key, a known_hosts file holding the gateway's key, StrictHostKeyChecking=yes,
BatchMode=yes), and the helpers the e2e tests share. The `site` fixture is in
tests/e2e/conftest.py."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from agent.reaping import reap
from tests.support.broker import BrokerProcess, CliResult, cli_env, secondline
from tests.support.processes import communicate, stop_process

WAIT = 30.0  # failure bound for waits, never a pause
SSH = "/usr/bin/ssh"
ASCIINEMA = str(Path(sys.executable).parent / "asciinema")
SESSION_ID = re.compile(r"s-[A-Za-z0-9]{22}")


def ok(result: CliResult) -> str:
    assert result.code == 0, (result.code, result.out, result.err)
    return result.out.strip()


def agent_cli(state: Path, *args: str) -> CliResult:
    proc = subprocess.run(
        [sys.executable, "-m", "agent", *args, "--state-dir", str(state)],
        capture_output=True,
        text=True,
        env=cli_env(state),
        timeout=60,
        check=False,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


#: The sites made during the running test; the e2e tests' fixture closes them at its end,
#: so an agent or ssh a failed test left running is killed and waited for there.
_OPEN: list[Site] = []


@dataclass
class Site:
    """A broker with customer acme, staff bob (level 2, SSH key), agent web01 running, and a
    ticket escalated to level 2 and assigned to bob, plus what OpenSSH needs."""

    broker: BrokerProcess
    tmp: Path
    key: Path
    known_hosts: Path
    ticket: str = ""
    agent_state: Path | None = None
    agent: asyncio.subprocess.Process | None = None
    #: What the test started besides ``agent`` (ssh clients, more agents): reaped at its end.
    children: list[asyncio.subprocess.Process] = field(default_factory=list)

    def __post_init__(self) -> None:
        _OPEN.append(self)

    @property
    def data_dir(self) -> Path:
        return self.broker.data_dir

    @property
    def ssh_port(self) -> int:
        text = (self.data_dir / "secondline.toml").read_text()
        found = re.search(r"^ssh_port = (\d+)$", text, re.MULTILINE)
        assert found is not None
        return int(found.group(1))

    def admin(self, *args: str) -> CliResult:
        return secondline(*args, data_dir=self.data_dir)

    def ssh_argv(self, user: str, *extra: str, key: Path | None = None) -> list[str]:
        return [
            SSH,
            "-F",
            "/dev/null",
            "-p",
            str(self.ssh_port),
            "-i",
            str(key or self.key),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            *extra,
            f"{user}@127.0.0.1",
        ]

    async def ssh(
        self, user: str, *args: str, key: Path | None = None, options: tuple[str, ...] = ()
    ) -> CliResult:
        """Run `ssh` to the end; its exit status, stdout and stderr."""
        argv = self.ssh_argv(user, *options, key=key)
        proc = await asyncio.create_subprocess_exec(
            *argv[:-1],
            argv[-1],
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=cli_env(self.tmp),
        )
        out, err = await communicate(proc, WAIT)
        assert proc.returncode is not None
        return CliResult(
            proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")
        )

    async def interactive(self, user: str, *extra: str) -> Terminal:
        argv = self.ssh_argv(user, "-tt", *extra)
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=cli_env(self.tmp),
        )
        self.children.append(proc)
        return Terminal(proc)

    async def close(self) -> None:
        """Kill and wait for the agent and the children that still run (a test that failed
        midway; a test that ends well has ended them)."""
        for proc in [*self.children, *([self.agent] if self.agent is not None else [])]:
            await reap(proc)


async def close_sites() -> None:
    """Close every site made since the last call (see ``_OPEN``)."""
    while _OPEN:
        await _OPEN.pop().close()


class Terminal:
    """`ssh -tt` with its input and output in the test's hands."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.out = bytearray()

    def type(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())

    async def expect(self, pattern: bytes) -> None:
        assert self.proc.stdout is not None
        async with asyncio.timeout(WAIT):
            while pattern not in self.out:
                chunk = await self.proc.stdout.read(65536)
                if not chunk:
                    raise AssertionError(f"EOF before {pattern!r}: {bytes(self.out)[-400:]!r}")
                self.out += chunk

    async def expect_in_order(self, *patterns: bytes) -> None:
        """Wait until the output holds ``patterns`` one after the other."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(WAIT):
            while not _in_order(bytes(self.out), patterns):
                chunk = await self.proc.stdout.read(65536)
                if not chunk:
                    raise AssertionError(f"EOF before {patterns!r}: {bytes(self.out)[-400:]!r}")
                self.out += chunk

    async def finish(self) -> tuple[int, str]:
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        async with asyncio.timeout(WAIT):
            self.out += await self.proc.stdout.read()
            err = await self.proc.stderr.read()
            code = await self.proc.wait()
        return code, err.decode(errors="replace")


def _in_order(data: bytes, patterns: tuple[bytes, ...]) -> bool:
    start = 0
    for pattern in patterns:
        found = data.find(pattern, start)
        if found < 0:
            return False
        start = found + len(pattern)
    return True


def asciinema_cat(cast: Path) -> bytes:
    """What `asciinema cat` prints for a recording."""
    return subprocess.run(
        [ASCIINEMA, "cat", str(cast)], capture_output=True, check=True, timeout=WAIT
    ).stdout


def keygen(path: Path) -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test", "-f", str(path)],
        check=True,
    )
    return path


async def start_agent(site: Site, name: str, consent: str) -> Path:
    token = ok(site.admin("token", "create", "--customer", "acme", "--consent", consent))
    state = site.tmp / f"agent-{name}"
    ok(agent_cli(state, "enroll", site.broker.url, token, "--name", name))
    await run_agent(site, state, name)
    return state


async def run_agent(site: Site, state: Path, name: str) -> None:
    mark = len(site.broker.output)
    site.agent_state = state
    if site.agent is not None:
        site.children.append(site.agent)  # an earlier agent of the test, reaped with it
    site.agent = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent",
        "run",
        "--state-dir",
        str(state),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env=cli_env(state),
    )
    pattern = rb"agent ag-[a-z0-9]{16} \(" + name.encode() + rb"\) online"
    await site.broker.wait_for_line(pattern, mark)


async def stop_agent(site: Site) -> None:
    if site.agent is not None:
        await stop_process(site.agent, signal.SIGTERM, WAIT)


def new_ticket(site: Site, agent: str) -> str:
    """A ticket created at level 1, escalated to level 2 by level 1, assigned to bob."""
    lena = ok(site.admin("user", "token", "lena"))
    ref = ok(
        secondline(
            "--token", lena, "ticket", "create", "--title", "Printer queue stuck",
            "--customer", "acme", "--agent", agent, data_dir=site.data_dir,
        )
    )  # fmt: skip
    ref = ref if ref.startswith("T-") else f"T-{ref}"
    ok(
        secondline(
            "--token", lena, "ticket", "escalate", ref, "--to", "2",
            "--reason", "needs a shell", data_dir=site.data_dir,
        )
    )  # fmt: skip
    ok(site.admin("ticket", "assign", ref, "bob"))
    return ref


def ticket_json(site: Site, ref: str) -> dict[str, object]:
    data = json.loads(ok(site.admin("ticket", "show", ref, "--json")))
    assert isinstance(data, dict)
    return data


async def wait_note(site: Site, ref: str, session_id: str, mark: int) -> dict[str, object]:
    """The session's note on the ticket, delivered within five seconds of the session's
    end (``mark``: the broker's output line count when it ended)."""
    async with asyncio.timeout(5.0):
        await site.broker.wait_for_line(
            b"session " + session_id.encode() + b": note delivered to " + ref.encode(), mark
        )
    notes = ticket_json(site, ref)["notes"]
    assert isinstance(notes, list)
    return dict(next(n for n in notes if session_id in n["text"]))


def notes_of(site: Site, ref: str, session_id: str) -> list[dict[str, object]]:
    """The notes on ticket ``ref`` that name ``session_id``."""
    notes = ticket_json(site, ref)["notes"]
    assert isinstance(notes, list)
    return [dict(n) for n in notes if session_id in str(n["text"])]


async def assert_noted_once(site: Site, ref: str, session_id: str) -> None:
    """The session's note is on ticket ``ref`` exactly once, also after another outbox
    pass: a later session on ``ref`` (the agent must be online) ends and its own note is
    delivered; a second copy of the first, due in the outbox, would have gone out in that
    pass or before it (due notes go out oldest first)."""
    mark = len(site.broker.output)
    later = await site.ssh(ref, 'echo "$SL_SESSION"')
    assert later.code == 0, later
    later_id = later.out.strip()
    assert SESSION_ID.fullmatch(later_id), later.out
    assert later_id != session_id
    await site.broker.wait_for_line(
        b"session " + later_id.encode() + b": note delivered to " + ref.encode(), mark
    )
    assert len(notes_of(site, ref, later_id)) == 1
    assert len(notes_of(site, ref, session_id)) == 1


def session_ids(text: str) -> list[str]:
    return SESSION_ID.findall(text)


def sessions_of(site: Site, ref: str) -> list[dict[str, object]]:
    data = json.loads(ok(site.admin("session", "list", "--ticket", ref, "--json")))
    assert isinstance(data, list)
    return data


async def read_stderr_until(proc: asyncio.subprocess.Process, pattern: bytes) -> bytes:
    assert proc.stderr is not None
    seen = b""
    async with asyncio.timeout(WAIT):
        while pattern not in seen:
            line = await proc.stderr.readline()
            assert line, f"stderr ended before {pattern!r}: {seen!r}"
            seen += line
    return seen


async def spawn_ssh(site: Site, user: str, command: str) -> asyncio.subprocess.Process:
    argv = site.ssh_argv(user)
    proc = await asyncio.create_subprocess_exec(
        *argv,
        command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_env(site.tmp),
    )
    site.children.append(proc)
    return proc


def staffed_site(broker: BrokerProcess, tmp: Path) -> Site:
    """``broker`` with customer acme and its staff lena (level 1) and bob (level 2, with an
    SSH key), bob's known_hosts naming the gateway's host key."""
    d = broker.data_dir
    key = keygen(tmp / "bob_ed25519")
    ok(secondline("customer", "add", "acme", data_dir=d))
    ok(secondline("user", "add", "lena", "--role", "level1", "--customer", "acme", data_dir=d))
    ok(
        secondline(
            "user", "add", "bob", "--role", "level2", "--customer", "acme",
            "--ssh-key", f"{key}.pub", data_dir=d,
        )
    )  # fmt: skip
    host_key = (d / "keys" / "ssh_host_ed25519.pub").read_text().split()
    s = Site(broker, tmp, key, tmp / "known_hosts")
    s.known_hosts.write_text(f"[127.0.0.1]:{s.ssh_port} {host_key[0]} {host_key[1]}\n")
    return s
