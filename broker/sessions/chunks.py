"""Work over every live session, in chunks with the event loop's I/O in between.

The session manager's once-a-second tick visits every live session, and a tick may start
the session's recorder flush (a task writing to disk on the next loop turn). Visited in
one go, a few hundred typing sessions made one burst of ticks and then one of flushes,
and every keystroke that arrived meanwhile waited behind all of them: py-spy of the
broker with 200 typing sessions (docs/benchmarks.md, "Typing sessions") put 5 % of its
samples in those flushes, tens of milliseconds each second on a busy machine, which is
where a 99th percentile lives. :func:`in_chunks` yields to the loop after every
:data:`CHUNK` items, so sockets are read and the flushes started so far run in between.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Final, TypeVar

#: Items handled between two looks at the sockets: a sixteenth of 256 sessions' ticks
#: and flushes, a few milliseconds at most.
CHUNK: Final = 16

Item = TypeVar("Item")


async def in_chunks(
    items: Iterable[Item], step: Callable[[Item], None], chunk: int = CHUNK
) -> None:
    """Call ``step`` on each item, yielding to the event loop after every ``chunk``."""
    if chunk <= 0:
        raise ValueError("a chunk holds at least one item")
    for index, item in enumerate(items, start=1):
        step(item)
        if index % chunk == 0:
            await asyncio.sleep(0)  # one loop turn: I/O and what the chunk started
