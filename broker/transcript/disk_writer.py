"""The transcript recorders' disk work, off the event loop: a few long-lived writer threads.

A recorder's flush writes (``writev``, the chain file) and its seal (``fsync``, signing)
used to run on the event loop, so one slow or stalled disk stalled every session of the
broker. :class:`DiskWriter` runs them on at most :data:`WRITER_THREADS` threads that live
as long as there is work (each leaves after :data:`IDLE_EXIT` seconds without any, so an
idle broker keeps no thread awake); ``writev`` releases the GIL, so the relay goes on on
the loop meanwhile, on the other core when there is one. The events' encoding and digests
stay on the loop (``TranscriptRecorder.prepare_flush``): a job that hashed each event
would trade the GIL with the loop around every event.

Jobs of one recorder (its *key*) run one at a time and in the order given, whatever thread
takes them; the keys with work take turns. A recorder whose disk stalls holds one thread;
the others go on while one is left. How much a session may give its recorder meanwhile is
the hub's bound (``HubLimits.recorder_high``): past it the session stops reading its agent
channel, and SSH flow control holds the rest on the agent's side.

Each job costs one hand-over each way (a condition's notify, and the loop's self-pipe
through ``call_soon_threadsafe``), at most once per flush: once per MiB of output or per
second, not per chunk.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import weakref
from collections.abc import Callable, Hashable
from typing import Final, TypeVar

T = TypeVar("T")

# Threads at most: a disk that stalls holds one; more would only contend for two cores.
WRITER_THREADS: Final = 4
# Seconds a thread waits for work before it leaves (a new job starts one again).
IDLE_EXIT: Final = 10.0

_Job = tuple[Callable[[], object], "asyncio.Future[object]", asyncio.AbstractEventLoop]


class DiskWriter:
    """Run blocking jobs on a few threads, one job per key at a time, in order."""

    def __init__(self, threads: int = WRITER_THREADS, idle_exit: float = IDLE_EXIT) -> None:
        if threads < 1 or idle_exit <= 0:
            raise ValueError("a DiskWriter needs at least one thread and a positive idle_exit")
        self._max_threads = threads
        self._idle_exit = idle_exit
        self._changed = threading.Condition()
        self._jobs: dict[Hashable, collections.deque[_Job]] = {}  # keys with work, queued
        self._ready: collections.deque[Hashable] = collections.deque()  # not being run
        self._threads = 0
        self._idle = 0

    @classmethod
    def for_loop(cls, loop: asyncio.AbstractEventLoop | None = None) -> DiskWriter:
        """The writer of ``loop`` (the running one by default), shared by its sessions."""
        loop = loop or asyncio.get_running_loop()
        writer = _BY_LOOP.get(loop)
        if writer is None:
            writer = _BY_LOOP[loop] = cls()
        return writer

    def run(self, key: Hashable, job: Callable[[], T]) -> asyncio.Future[T]:
        """Queue ``job`` behind ``key``'s earlier jobs; its result (or exception) comes
        back on the running loop. Cancelling the future does not stop a job begun."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._changed:
            queue = self._jobs.get(key)
            if queue is None:
                queue = self._jobs[key] = collections.deque()
                self._ready.append(key)
            queue.append((job, future, loop))  # type: ignore[arg-type]
            if self._idle:
                self._changed.notify()
            elif self._threads < self._max_threads:
                self._threads += 1
                name = f"transcript-writer-{id(self):x}"
                threading.Thread(target=self._work, name=name, daemon=True).start()
        return future

    @property
    def threads(self) -> int:
        """Threads running now (for tests and the bench)."""
        return self._threads

    def _work(self) -> None:
        while True:
            with self._changed:
                while not self._ready:
                    self._idle += 1
                    woken = self._changed.wait(self._idle_exit)
                    self._idle -= 1
                    if not woken and not self._ready:
                        self._threads -= 1
                        return
                key = self._ready.popleft()
                job, future, loop = self._jobs[key][0]
            try:
                result = job()
            except BaseException as exc:  # handed to whoever awaits the job
                _post(loop, future, None, exc)
            else:
                _post(loop, future, result, None)
            with self._changed:
                queue = self._jobs[key]
                queue.popleft()
                if queue:
                    self._ready.append(key)  # its next job, after the other keys' turns
                else:
                    del self._jobs[key]


def _post(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[object],
    result: object,
    exc: BaseException | None,
) -> None:
    def settle() -> None:
        if future.cancelled():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)

    # The loop may have closed meanwhile (RuntimeError): then nobody waits for it any more.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(settle)


_BY_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, DiskWriter] = (
    weakref.WeakKeyDictionary()
)
