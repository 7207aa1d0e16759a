"""The recorders' writer threads: one key's jobs in order, other keys past a stalled one."""

from __future__ import annotations

import asyncio
import functools
import threading

import pytest

from broker.transcript import DiskWriter

WAIT = 20.0  # failure bound, never a pause


async def test_one_keys_jobs_run_in_order_and_return_their_results() -> None:
    """Jobs of one key run one after another in the order given, whatever thread runs them,
    and each result comes back on the loop."""
    writer = DiskWriter(threads=3)
    seen: list[int] = []
    lock = threading.Lock()

    def job(i: int) -> int:
        with lock:
            seen.append(i)
        return i * i

    futures = [writer.run("a", functools.partial(job, i)) for i in range(200)]
    async with asyncio.timeout(WAIT):
        results = await asyncio.gather(*futures)
    assert results == [i * i for i in range(200)]
    assert seen == list(range(200))


async def test_a_stalled_key_holds_one_thread_and_the_others_go_on() -> None:
    """A key whose job blocks (a stalled disk) delays only its own later jobs: another
    key's jobs finish meanwhile, on another thread."""
    writer = DiskWriter(threads=2)
    stalled = threading.Event()
    go = threading.Event()

    def blocked() -> str:
        stalled.set()
        go.wait(WAIT)
        return "slow"

    slow = writer.run("slow", blocked)
    after = writer.run("slow", lambda: "after")
    async with asyncio.timeout(WAIT):
        await asyncio.to_thread(stalled.wait, WAIT)
        assert await asyncio.gather(*(writer.run("fast", lambda: 1) for _ in range(50))) == [1] * 50
    assert not slow.done()
    assert not after.done()
    go.set()
    async with asyncio.timeout(WAIT):
        assert [await slow, await after] == ["slow", "after"]
    assert writer.threads <= 2


async def test_a_failing_job_raises_where_it_is_awaited() -> None:
    """A job's exception (a full disk) reaches its awaiter; the key's next job still runs."""
    writer = DiskWriter(threads=1)

    def full() -> None:
        raise OSError(28, "No space left on device")

    failing = writer.run("k", full)
    fine = writer.run("k", lambda: "next")
    with pytest.raises(OSError, match="No space"):
        await asyncio.wait_for(failing, WAIT)
    assert await asyncio.wait_for(fine, WAIT) == "next"


async def test_idle_threads_leave() -> None:
    """A writer with nothing to do keeps no thread: each leaves after its idle time."""
    writer = DiskWriter(threads=2, idle_exit=0.05)
    await asyncio.wait_for(writer.run("k", lambda: None), WAIT)
    assert writer.threads >= 1
    mine = [t for t in threading.enumerate() if t.name == f"transcript-writer-{id(writer):x}"]
    assert mine
    for thread in mine:
        await asyncio.to_thread(thread.join, WAIT)
        assert not thread.is_alive()
    assert writer.threads == 0


def test_a_writer_needs_a_thread() -> None:
    """Nonsense sizes are refused."""
    with pytest.raises(ValueError, match="at least one thread"):
        DiskWriter(threads=0)
