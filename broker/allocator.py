"""The broker process runs on the C library's allocator, not Python's own (pymalloc).

A broker holds thousands of idle agent tunnels whose long-lived objects were made during
their handshakes, between the handshakes' many short-lived ones. pymalloc carves small
objects out of 16 KiB pools in 1 MiB arenas and gives an arena back only once every object
in it is gone, and nothing of a pool's free space at all: after a reconnect storm most of
the handshakes' freed memory stayed resident, pinned by one live tunnel object here and
there. glibc's heap gives back every whole free page (``malloc_trim``, which the broker
calls once handshakes calm down: :mod:`broker.agents.heap_trim`), so the same storm leaves
8-10 KB less per idle agent resident (docs/benchmarks.md, "Idle memory, third pass"), at
no CPU cost the handshake benchmark could see.

The allocator is chosen when the interpreter starts (``PYTHONMALLOC``), so
:func:`system_malloc_argv` tells ``secondline serve`` to start itself again, with the same
arguments and process id (``exec``), with ``PYTHONMALLOC=malloc`` and, unless it is set,
``MALLOC_ARENA_MAX=1``. Whoever sets ``PYTHONMALLOC`` (``pymalloc`` to keep Python's own,
``malloc_debug`` to debug) is obeyed, and nothing is changed then.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Final

ENV: Final = "PYTHONMALLOC"
SYSTEM: Final = "malloc"
#: glibc's arenas: one, not eight per core. A thread allocating outside the main arena
#: (the database, executor threads) gets an arena of its own, whose pages then hold a few
#: objects each: 2-5 KB more per idle agent at 500 agents. The broker's threads allocate
#: under the GIL nearly always, so they hardly ever wait for the one arena's lock.
ARENAS: Final = ("MALLOC_ARENA_MAX", "1")


def system_malloc_argv(
    environ: Mapping[str, str], orig_argv: Sequence[str]
) -> tuple[list[str], dict[str, str]] | None:
    """The command line and environment to start this process again on the system
    allocator, or None when that is not wanted (the choice is made, or the command line
    cannot be repeated)."""
    if ENV in environ or not orig_argv:
        return None
    name, value = ARENAS
    return list(orig_argv), {name: value, **environ, ENV: SYSTEM}


def use_system_malloc() -> None:
    """Start this process again on the system allocator, unless it runs on it already or
    someone chose an allocator (``PYTHONMALLOC``). Call it before anything else starts
    (threads, files, sockets): ``exec`` keeps open descriptors and nothing else."""
    wanted = system_malloc_argv(os.environ, sys.orig_argv)
    if wanted is None or not sys.executable:
        return
    argv, environ = wanted
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, environ)  # noqa: S606 - this program again, as it was started
