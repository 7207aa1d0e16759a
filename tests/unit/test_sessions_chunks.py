"""The manager's tick visits sessions in chunks, with the event loop's work in between."""

from __future__ import annotations

import asyncio

import pytest

from broker.sessions.chunks import in_chunks


async def test_the_loop_runs_between_chunks_and_every_item_is_visited() -> None:
    """What the loop has to do (a socket read, a flush a tick started) runs after each
    chunk, not after the last item: 40 items in chunks of 16 let it in twice."""
    order: list[str] = []
    loop = asyncio.get_running_loop()

    def step(item: int) -> None:
        order.append(f"item {item}")
        if item % 16 == 1:
            # Work the chunk starts (a flush task): it runs at the next yield.
            loop.call_soon(order.append, f"after {item}")

    await in_chunks(range(1, 41), step, chunk=16)
    assert [entry for entry in order if entry.startswith("item")] == [
        f"item {n}" for n in range(1, 41)
    ]
    assert order.index("after 1") == order.index("item 16") + 1
    assert order.index("after 17") == order.index("item 32") + 1
    assert "after 33" not in order  # the last, partial chunk returns without yielding
    await asyncio.sleep(0)
    assert order[-1] == "after 33"


async def test_a_chunk_holds_at_least_one_item() -> None:
    with pytest.raises(ValueError, match="at least one"):
        await in_chunks([1], lambda item: None, chunk=0)
