"""The desktop lookup's `loginctl` is reaped when the task running it is cancelled, as
happens whenever a request is decided or a session ends; so is any child ``reap`` ends.

Each test runs its scenario in an event loop of its own and then collects garbage: a child
left unwaited would be finalised as "still running" there, an error under the suite's
warnings-as-errors, instead of in some later test on the same worker.
"""

from __future__ import annotations

import asyncio
import gc
import os
import stat
from collections.abc import Callable, Coroutine
from pathlib import Path

import pytest

from agent.desktop import find_desktop
from agent.reaping import reap

WAIT = 20.0  # failure bound, never a pause


def stand_in(path: Path, pid_fifo: Path) -> Path:
    """A program that reports its pid through ``pid_fifo`` and then never answers."""
    os.mkfifo(pid_fifo)
    path.write_text(f"#!/bin/sh\necho $$ > {pid_fifo}\nexec tail -f /dev/null\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def cancel_once_started(
    start: Callable[[], Coroutine[object, object, object]], pid_fifo: Path
) -> int:
    """Run ``start`` in a fresh loop, cancel it once the stand-in runs, close the loop,
    collect garbage; the stand-in's pid."""

    async def scenario() -> int:
        task = asyncio.get_running_loop().create_task(start())
        try:
            async with asyncio.timeout(WAIT):
                # Opening the FIFO waits for the stand-in to write its pid: the event.
                pid = int(await asyncio.to_thread(pid_fifo.read_text))
        except TimeoutError:
            # Free the thread still opening the FIFO, or the loop could never close.
            os.close(os.open(pid_fifo, os.O_WRONLY | os.O_NONBLOCK))
            raise
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(WAIT):
                await task
        return pid

    pid = asyncio.run(scenario())
    gc.collect()
    return pid


def gone(pid: int) -> bool:
    """Whether ``pid`` has exited and been reaped (a zombie still answers signal 0)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.skipif(os.geteuid() != 0, reason="the desktop lookup asks loginctl only as root")
def test_a_cancelled_desktop_lookup_reaps_loginctl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelling the desktop lookup while loginctl runs kills and waits for loginctl."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_in(bin_dir / "loginctl", tmp_path / "pid")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    pid = cancel_once_started(lambda: find_desktop({}), tmp_path / "pid")
    assert gone(pid)


def test_reap_finishes_the_wait_through_a_second_cancel() -> None:
    """A cancel arriving while reap waits is raised only after the child is reaped."""

    async def scenario() -> tuple[int, int | None]:
        proc = await asyncio.create_subprocess_exec("sleep", "60")
        task = asyncio.get_running_loop().create_task(reap(proc))
        await asyncio.sleep(0)  # one step of the task: it has sent SIGKILL and waits
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(WAIT):
                await task
        return proc.pid, proc.returncode

    pid, code = asyncio.run(scenario())
    gc.collect()
    assert code == -9
    assert gone(pid)
