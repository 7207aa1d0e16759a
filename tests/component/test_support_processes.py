"""The suite's own harness: a child whose bound expires is killed and waited for before the
TimeoutError reaches the test (tests/support/processes.py), so it cannot outlive the test.

A bound of zero expires at the first wait: the timeout path without any time passing.
"""

from __future__ import annotations

import asyncio
import signal

import pytest

from tests.support.processes import communicate, stop_process


async def never_ending() -> asyncio.subprocess.Process:
    """A child that runs until it is killed and ignores SIGTERM, with its output piped.

    It is returned once it says it ignores SIGTERM: a signal sent before the shell's trap
    is set would end it (a clean-clone CI run saw -15 where the test expected a kill).
    """
    proc = await asyncio.create_subprocess_exec(
        "sh",
        "-c",
        "trap '' TERM; echo ignoring; exec tail -f /dev/null",
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    async with asyncio.timeout(30):
        assert await proc.stdout.readline() == b"ignoring\n"
    return proc


async def test_communicate_past_its_bound_kills_and_reaps() -> None:
    """communicate() past its bound raises TimeoutError with the child killed and reaped."""
    proc = await never_ending()
    with pytest.raises(TimeoutError):
        await communicate(proc, 0)
    assert proc.returncode == -signal.SIGKILL


async def test_stop_of_a_child_that_ignores_the_signal_kills_and_reaps() -> None:
    """stop_process() of a child that outlasts its bound raises TimeoutError with it killed."""
    proc = await never_ending()
    with pytest.raises(TimeoutError):
        await stop_process(proc, signal.SIGTERM, 0)
    assert proc.returncode == -signal.SIGKILL


async def test_stop_returns_the_exit_status() -> None:
    """stop_process() of a child that ends at the signal returns its status."""
    proc = await asyncio.create_subprocess_exec("tail", "-f", "/dev/null")
    assert await stop_process(proc) == -signal.SIGTERM
