"""What one keystroke costs on the agent's tunnel: the packets and messages it sends.

A real agent over a real tunnel on loopback (the harness's broker side is a plain asyncssh
client over the WebSocket). Each WebSocket message reaches the broker's SSH connection as
one ``data_received`` call; the test counts those, and the SSH ignore packets that
asyncssh would otherwise put in front of every packet (agent.ignore_packets).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh
import pytest

from agent.held_reports import HOLD_S
from agent.input_reports import InputReportReader
from tests.component.test_agent_harness import WAIT, session_env, tunnelled_agent
from tests.support.ssh_packets import Arrivals, count_arrivals

KEYS = b"abcdefghijklmnopqrst"


@dataclass
class Counted:
    """The broker's side of the tunnel and what reached it."""

    conn: asyncssh.SSHClientConnection
    arrivals: Arrivals

    @property
    def messages(self) -> int:
        return self.arrivals.messages

    @property
    def ignored(self) -> int:
        return self.arrivals.ignored


@dataclass
class Typist(asyncssh.SSHClientSession[bytes]):
    """A PTY session's client: which tunnel message brought each report and each echo."""

    counted: Counted
    reader: InputReportReader = field(default_factory=InputReportReader)
    output: bytearray = field(default_factory=bytearray)
    #: (message number, what): "report" for an input report, else the output bytes.
    arrivals: list[tuple[int, bytes]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if datatype == asyncssh.EXTENDED_DATA_STDERR:
            reports, other = self.reader.feed(data)
            assert other == b"", other
            self.arrivals += [(self.counted.messages, b"report")] * len(reports)
        else:
            self.output += data
            self.arrivals.append((self.counted.messages, data))
        self.changed.set()

    async def wait_for(self, reports: int, output: bytes) -> None:
        async with asyncio.timeout(WAIT):
            while (
                sum(what == b"report" for _, what in self.arrivals) < reports
                or output not in self.output
            ):
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def counted(tmp_path: Path) -> AsyncIterator[Counted]:
    async with tunnelled_agent(tmp_path) as t:
        yield Counted(t.conn, count_arrivals(t.conn))


def channel_env() -> dict[bytes | str, bytes | str]:
    """The session environment, typed as asyncssh's create_session takes it."""
    return dict(session_env().items())


async def open_typist(counted: Counted) -> tuple[asyncssh.SSHClientChannel[bytes], Typist]:
    typist = Typist(counted)
    chan, _ = await counted.conn.create_session(
        lambda: typist,
        "stty raw -echo; echo ready; exec cat",
        term_type="xterm",
        env=channel_env(),
        encoding=None,
    )
    await typist.wait_for(0, b"ready")
    return chan, typist


async def test_keystrokes_come_without_ignore_packets(counted: Counted) -> None:
    """The agent sends each report and each echo as one SSH packet: no ignore packet in
    front of them (asyncssh sends one before every packet unless told not to)."""
    chan, typist = await open_typist(counted)
    before = counted.ignored
    for number, key in enumerate(KEYS, start=1):
        chan.write(bytes([key]))
        await typist.wait_for(number, KEYS[:number])
    assert counted.ignored == before == 0
    chan.close()


async def test_a_keys_report_leaves_with_its_echo(counted: Counted) -> None:
    """A typed key's input report waits (at most HOLD_S) for the output that follows it
    and leaves in the same tunnel message, just before it: one message per keystroke, not
    two. Whether cat echoes within the hold depends on the machine's load, so this asks it
    of one keystroke in twenty; sent at once, no report ever shares its echo's message."""
    chan, typist = await open_typist(counted)
    start = len(typist.arrivals)
    for number, key in enumerate(KEYS, start=1):
        chan.write(bytes([key]))
        await typist.wait_for(number, KEYS[:number])
    arrivals = typist.arrivals[start:]
    kinds = [b"report" if what == b"report" else b"echo" for _, what in arrivals]
    # Every report still comes before its echo (the broker records the key first).
    assert kinds == [b"report", b"echo"] * len(KEYS)
    together = [
        report == echo for (report, _), (echo, _) in zip(arrivals[::2], arrivals[1::2], strict=True)
    ]
    assert any(together), f"no report shared its echo's message within {HOLD_S * 1000} ms"
    chan.close()


async def test_a_report_without_output_is_sent_after_the_hold(counted: Counted) -> None:
    """Input that prints nothing (the terminal does not echo, the program stays silent)
    is still reported, once the hold ran out."""
    typist = Typist(counted)
    chan, _ = await counted.conn.create_session(
        lambda: typist,
        "stty raw -echo; echo ready; exec cat >/dev/null",
        term_type="xterm",
        env=channel_env(),
        encoding=None,
    )
    await typist.wait_for(0, b"ready")
    chan.write(b"secret")
    await typist.wait_for(1, b"ready")
    assert typist.output == b"ready\n"  # raw: the terminal added no CR, printed nothing more
    chan.close()
