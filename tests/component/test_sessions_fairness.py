"""Fairness through the broker: one session streaming without pause does not hold back
another's echo on the same agent, and the broker's line for each session stays bounded
(broker.sessions.output_turns; the agent's own send queue: test_agent_send_turns.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path

import asyncssh
import pytest

from broker.sessions.channel_windows import ChannelWindows, window_for
from broker.sessions.hub_agent import AGENT_WINDOW_MIN
from broker.sessions.output_turns import OutputTurns
from tests.component.test_sessions_harness import WAIT, world

pytestmark = [
    pytest.mark.postgres,
    # broker.agents.tokens (another part, in progress) still calls Result.tuples().
    pytest.mark.filterwarnings("ignore:The Result.tuples:DeprecationWarning"),
]

# Lines shorter than one SSH packet: every chunk of the stream holds its channel and waits
# for its turn, so the hold and the bound are exercised whatever the machine's speed.
HIGH = 8 * 1024
LOW = 4 * 1024


async def read_until(stream: asyncssh.SSHReader[bytes], wanted: bytes, seen: bytearray) -> None:
    async with asyncio.timeout(WAIT):
        while wanted not in seen:
            chunk = await stream.read(4096)
            if not chunk:
                raise AssertionError(f"EOF before {wanted!r}: {bytes(seen)[-200:]!r}")
            seen += chunk
    del seen[: seen.index(wanted) + len(wanted)]


async def on_a_loop_turn(holds: Callable[[], bool]) -> None:
    """Wait until ``holds()``, looked at on every event-loop turn (the hub's state has no
    event of its own to wait for)."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def check() -> None:
        if done.done():
            return
        if holds():
            done.set_result(None)
        else:
            loop.call_soon(check)

    check()
    try:
        async with asyncio.timeout(WAIT):
            await done
    finally:
        done.cancel()


def every_loop_turn(look: Callable[[], None]) -> Callable[[], None]:
    """Call ``look`` now and on every event-loop turn after it, until the returned function
    is called (a peak that lasts one turn is seen)."""
    loop = asyncio.get_running_loop()
    looking = True

    def turn() -> None:
        look()
        if looking:
            loop.call_soon(turn)

    def stop() -> None:
        nonlocal looking
        looking = False

    turn()
    return stop


async def test_keystrokes_are_echoed_through_the_broker_while_another_session_streams(
    data_dir: Path, tmp_path: Path
) -> None:
    turns = OutputTurns.for_loop()
    turns.high, turns.low = HIGH, LOW
    async with world(data_dir, tmp_path) as w:
        conn = await w.ssh()
        stream = await conn.create_process("exec cat /dev/zero", encoding=None)
        received = 0
        more = asyncio.Event()

        async def drain() -> None:
            nonlocal received
            while chunk := await stream.stdout.read(1 << 16):
                received += len(chunk)
                more.set()

        async def streamed(at_least: int) -> None:
            async with asyncio.timeout(WAIT):
                while received < at_least:
                    more.clear()
                    await more.wait()

        drainer = asyncio.create_task(drain())
        try:
            await streamed(1 << 20)
            echo = await conn.create_process(
                "stty raw -echo; echo ready; exec cat", term_type="xterm", encoding=None
            )
            seen = bytearray()
            await read_until(echo.stdout, b"ready\n", seen)
            hubs = list(w.runtime.manager.live.values())
            assert len(hubs) == 2
            # The most asyncssh held for a paused channel (its private buffer), looked at
            # on every event-loop turn while the keys are typed and the stream goes on.
            kept = 0

            def sample() -> None:
                nonlocal kept
                for hub in hubs:
                    if hub._chan is not None:
                        kept = max(kept, sum(len(data) for data, _ in hub._chan._recv_buf))

            stop = every_loop_turn(sample)
            for key in b"keystrokes":
                echo.stdin.write(bytes([key]))
                await read_until(echo.stdout, bytes([key]), seen)
                assert stream.exit_status is None
            await streamed(received + (4 << 20))  # still streaming after the last echo
            stop()
            # Two sessions on one tunnel (not measured in this harness: a LAN's floor)
            # get its floor each; the stream had the largest window while it was alone,
            # and the agent was never granted more than that.
            assert window_for(AGENT_WINDOW_MIN, 2, 2) == AGENT_WINDOW_MIN
            for hub in hubs:
                assert hub._chan is not None
                assert hub._chan.get_recv_window() == AGENT_WINDOW_MIN
            peak = ChannelWindows.for_loop().peak
            assert peak == window_for(AGENT_WINDOW_MIN, 1, 1)
            assert kept <= peak
            assert turns.direct > 0  # the echoes went ahead, handled at once
            assert turns.peak >= turns.high  # the stream's line filled: the bound was tested
            assert turns.peak <= turns.bound(peak)
            echo.close()
        finally:
            stream.close()
            drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError, asyncssh.Error):
                await drainer
            conn.close()


async def test_a_staff_client_that_stops_reading_slows_only_its_own_session(
    data_dir: Path, tmp_path: Path
) -> None:
    """The client of a streaming session stops reading: that session is paced down to its
    shell (the hub holds its agent channel), what the broker keeps for it stays bounded,
    and another session's keystrokes are still echoed."""
    turns = OutputTurns.for_loop()
    async with world(data_dir, tmp_path) as w:
        conn = await w.ssh()
        stream = await conn.create_process("exec cat /dev/zero", encoding=None)
        # Read a little, then never again: the client's window closes, the gateway's
        # buffer for it fills, the core pauses the agent channel.
        await stream.stdout.readexactly(1 << 16)
        hubs = list(w.runtime.manager.live.values())
        assert len(hubs) == 1
        streaming = hubs[0]
        await on_a_loop_turn(lambda: "core" in streaming._agent_held)
        try:
            echo = await conn.create_process(
                "stty raw -echo; echo ready; exec cat", term_type="xterm", encoding=None
            )
            seen = bytearray()
            await read_until(echo.stdout, b"ready\n", seen)
            for key in b"keystrokes":
                echo.stdin.write(bytes([key]))
                await read_until(echo.stdout, bytes([key]), seen)
            assert "core" in streaming._agent_held  # still paced: it never read again
            assert stream.exit_status is None
            assert streaming._chan is not None
            window = ChannelWindows.for_loop().peak
            assert sum(len(data) for data, _ in streaming._chan._recv_buf) <= window
            assert turns.waiting(streaming) <= turns.bound(window)
            echo.close()
        finally:
            stream.close()
            conn.close()


async def test_a_streams_window_follows_the_sessions_sharing_its_tunnel(
    data_dir: Path, tmp_path: Path
) -> None:
    """A stream alone on its agent's tunnel gets the largest window; while two more
    sessions share the tunnel its window is the tunnel's floor, and back once they end,
    and the stream goes on through both changes (the agent never sends past what was
    granted: asyncssh would close the channel)."""
    async with world(data_dir, tmp_path) as w:
        conn = await w.ssh()
        stream = await conn.create_process("exec cat /dev/zero", encoding=None)
        received = 0

        async def streamed(more: int) -> None:
            nonlocal received
            goal = received + more
            async with asyncio.timeout(WAIT):
                while received < goal:
                    chunk = await stream.stdout.read(1 << 16)
                    assert chunk, "the stream ended"
                    received += len(chunk)

        await streamed(1 << 20)
        (streaming,) = list(w.runtime.manager.live.values())
        chan = streaming._chan
        assert chan is not None
        alone = window_for(AGENT_WINDOW_MIN, 1, 1)
        assert chan.get_recv_window() == alone
        others = [await conn.create_process("exec cat", encoding=None) for _ in range(2)]
        try:
            await on_a_loop_turn(lambda: len(w.runtime.manager.live) == 3)
            shared = window_for(AGENT_WINDOW_MIN, 3, 3)
            assert shared < alone
            assert chan.get_recv_window() == shared
            await streamed(8 << 20)
        finally:
            for other in others:
                other.close()
        await on_a_loop_turn(lambda: chan.get_recv_window() == alone)
        await streamed(8 << 20)
        assert stream.exit_status is None
        stream.close()
        conn.close()
