"""How the broker and the agent have Python's cyclic garbage collector run.

Both are long-lived event loops that relay keystrokes: a collection stops the loop, and
every keystroke arriving meanwhile waits for it. What a collection costs is the objects it
walks. Measured with ``gc.callbacks`` while the capacity test typed in 300 sessions
(docs/benchmarks.md, "Typing sessions"), the broker's full collections walked 176,000
objects that start-up made (modules, the SQL compiler's caches, asyncssh's and aiohttp's
tables; the agent's 42,000), which no collection ever frees, on top of each session's
own, and took half a second each on the shared machine; young collections over 1 ms came
six or seven times in 8 s of typing.

:func:`settle_after_startup` is called once, when start-up is done (the broker listens;
the agent has read its settings and is about to dial): what exists then is moved out of
the collector's sight (``gc.freeze``), so that no later collection walks it again, and the
young generation is collected every :data:`YOUNG_THRESHOLD` net allocations instead of
CPython's 700, so that a keystroke's short-lived objects (packets, frames, callbacks,
freed by their reference counts anyway) are walked fourteen times less often. Full
collections still run, on what the sessions made; cyclic garbage still goes, a little
later.
"""

from __future__ import annotations

import gc
from typing import Final

#: Net container allocations between young collections (CPython's default is 700).
YOUNG_THRESHOLD: Final = 10_000


def settle_after_startup() -> None:
    """Freeze what start-up made and space the young collections out.

    Once per process, before any connection: a connection's objects frozen with the rest
    would never be collected if they ended as a cycle."""
    # Collect first: garbage left by start-up (import-time cycles, the first connection's
    # handshake) would otherwise be frozen with the rest and kept for the process's life.
    gc.collect()
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
