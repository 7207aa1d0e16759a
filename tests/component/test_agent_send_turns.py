"""Fairness on one agent tunnel: a streaming session does not hold back another's echo."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest

from agent.runner import AgentRunner
from tests.component.test_agent_harness import (
    WAIT,
    read_until,
    session_env,
    tunnelled_agent,
)

# A send queue smaller than one quantum: every write of the stream fills it, so each one
# goes through the turns (the default queue is only full when the tunnel is the bottleneck).
SEND_HIGH = 16 * 1024
SEND_LOW = 8 * 1024


@dataclass
class Setup:
    agent: AgentRunner
    conn: asyncssh.SSHClientConnection


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    async with tunnelled_agent(tmp_path, send_high=SEND_HIGH, send_low=SEND_LOW) as t:
        yield Setup(t.agent, t.conn)


async def test_keystrokes_are_echoed_while_another_session_streams(setup: Setup) -> None:
    """With one session streaming without pause, a second session's keystrokes on the
    same tunnel are echoed while the first still streams, and the tunnel's send queue
    filled up but never held more than its bound (agent.send_turns)."""
    stream = await setup.conn.create_process(
        "exec cat /dev/zero", env=session_env(session="s-" + "B" * 22), encoding=None
    )
    received = 0
    more = asyncio.Event()

    async def drain() -> None:
        nonlocal received
        while chunk := await stream.stdout.read(1 << 16):
            received += len(chunk)
            more.set()

    async def streamed(at_least: int) -> None:
        while received < at_least:
            more.clear()
            await more.wait()

    drainer = asyncio.create_task(drain())
    try:
        async with asyncio.timeout(WAIT):
            await streamed(1 << 20)
        echo = await setup.conn.create_process(
            "stty raw -echo; echo ready; exec cat",
            term_type="xterm",
            env=session_env(session="s-" + "C" * 22),
            encoding=None,
        )
        seen = bytearray()
        await read_until(echo.stdout, b"ready\n", seen)
        for key in b"keystrokes":
            echo.stdin.write(bytes([key]))
            await read_until(echo.stdout, bytes([key]), seen)
            assert stream.exit_status is None
        after_echoes = received
        async with asyncio.timeout(WAIT):
            await streamed(after_echoes + (1 << 20))  # still streaming after the last echo
        turns = setup.agent.send_turns
        assert turns.peak >= turns.high  # the queue did fill: the bound was tested
        assert turns.peak <= turns.bound(channels=2)
        echo.close()
    finally:
        stream.close()
        drainer.cancel()
        with contextlib.suppress(asyncio.CancelledError, asyncssh.Error):
            await drainer
