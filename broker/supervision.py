"""Long-lived tasks, supervised: every one named, its failure logged, all ended at stop.

A feature keeps one :class:`Supervisor` for the time it runs (opened in its cleanup
context) and starts its background work in it, never with a bare ``create_task``:

- :meth:`Supervisor.keep` runs a loop for as long as the feature runs (the presence writer,
  the connector sync, the outbox). When the loop dies with an exception, the line says which
  task and whom it was about, and :class:`OnFailure` decides what follows: ``RESTART`` runs
  it again after a pause that doubles from ``first_delay`` up to ``most_delay`` (a loop
  that ran longer than ``most_delay`` starts counting again), for work whose state lives
  outside the loop and survives it; ``STOP`` takes the feature down: its other loops are
  cancelled and ``on_down`` is told why, for work that cannot be picked up halfway. Each
  caller says in a comment why it chose.
- :meth:`Supervisor.spawn` runs one piece of work to its end, even when the request that
  started it is cancelled (an audit write of a refusal); a failure is logged the same way.

:meth:`Supervisor.stop` sets :attr:`Supervisor.stopping` (a loop that watches it may end
at the end of its round, within ``grace`` seconds), cancels the loops still running, waits
for the spawned work to finish (callers bound that wait with ``asyncio.timeout``) and
returns when every task has ended. All of it
runs in one :class:`asyncio.TaskGroup`, held by the supervisor's own task so that starting
and stopping may happen in different tasks (aiohttp's start-up and clean-up do); nothing
started here outlives :meth:`stop`.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Final

from broker.log_context import ContextLogger

log = logging.getLogger(__name__)

#: A loop's first restart waits this long; every failure in a row doubles it ...
FIRST_DELAY_S: Final = 1.0
#: ... up to this.
MOST_DELAY_S: Final = 60.0

Work = Coroutine[object, object, object]


class OnFailure(enum.Enum):
    """What a kept loop's death with an exception leads to."""

    RESTART = "restart"
    STOP = "stop"


def restart_delay(failures: int, first: float, most: float) -> float:
    """The pause before the restart after ``failures`` failures in a row (pure)."""
    if failures <= 0 or first <= 0:
        return 0.0
    return float(min(most, first * 2 ** min(failures - 1, 32)))


@dataclass(frozen=True)
class _Request:
    name: str
    run: Callable[[], Coroutine[object, object, None]]
    #: The spawned work (None for a loop): closed unrun when it cannot start.
    work: Work | None
    #: Cancelled at stop (loops, and work that only makes sense while the feature runs).
    cancel_at_stop: bool


class Supervisor:
    """The background tasks of one feature (see the module docstring)."""

    def __init__(
        self,
        name: str,
        *,
        logger: ContextLogger | None = None,
        on_down: Callable[[str], None] | None = None,
        first_delay: float = FIRST_DELAY_S,
        most_delay: float = MOST_DELAY_S,
    ) -> None:
        self.name = name
        self.log = logger or ContextLogger(log)
        self._on_down = on_down
        self._first_delay = first_delay
        self._most_delay = most_delay
        self._group: asyncio.TaskGroup | None = None
        self._runner: asyncio.Task[None] | None = None
        self._queued: list[_Request] = []
        self._to_cancel: set[asyncio.Task[None]] = set()  # loops, and cancel_at_stop work
        self._tasks: set[asyncio.Task[None]] = set()
        #: Set once the queued tasks are in the group (or the group is gone).
        self._entered = asyncio.Event()
        #: Set when stop begins: a loop may watch it to end between two rounds.
        self.stopping = asyncio.Event()
        self._stop = asyncio.Event()  # the runner's signal: set by stop() alone
        self._grace = 0.0
        self._ended = False
        #: Why the feature is down (a STOP loop failed), or None while it is not.
        self.down: str | None = None

    # -- starting --------------------------------------------------------------------------

    def start(self) -> None:
        """Open the task group (idempotent; the first keep or spawn does it too)."""
        if self._runner is None and not self._ended:
            self._runner = asyncio.get_running_loop().create_task(
                self._run(), name=f"{self.name}: supervisor"
            )

    async def open(self) -> None:
        """Start, and return once the task group is open: from then on :meth:`spawn`
        hands back the task at once."""
        self.start()
        await self._entered.wait()

    def keep(
        self,
        name: str,
        loop: Callable[[], Work],
        *,
        on_failure: OnFailure,
        logger: ContextLogger | None = None,
    ) -> None:
        """Run ``loop()`` until stop; on failure restart it or stop the feature."""
        where = logger or self.log

        async def kept() -> None:
            await self._keep(name, loop, on_failure, where)

        self._request(_Request(name, kept, work=None, cancel_at_stop=True))

    def spawn(
        self,
        name: str,
        work: Work,
        *,
        logger: ContextLogger | None = None,
        cancel_at_stop: bool = False,
    ) -> asyncio.Task[None] | None:
        """Run ``work`` to its end in the background; a failure is logged, never raised.
        Stop waits for it, or with ``cancel_at_stop`` cancels it (work that only makes
        sense while the feature runs, such as starting a session for a connection).

        Returns its task, for a caller that may have to cancel it (a connection that went),
        or None when it waits for the group to open or was refused."""
        where = logger or self.log

        async def spawned() -> None:
            try:
                await work
            except Exception:  # a task boundary: nobody awaits this work, so say it here
                where.exception("%s failed", name)

        return self._request(_Request(name, spawned, work=work, cancel_at_stop=cancel_at_stop))

    def _request(self, request: _Request) -> asyncio.Task[None] | None:
        # Stopping: a new loop would only be cancelled; spawned work still runs while the
        # group waits for the rest, and is refused once the group has ended.
        if self._ended or (self.stopping.is_set() and request.work is None):
            self._refuse(request)
            return None
        self.start()
        if self._group is None:
            self._queued.append(request)
            return None
        return self._create(request)

    def _create(self, request: _Request) -> asyncio.Task[None] | None:
        assert self._group is not None
        run = request.run()
        try:
            task = self._group.create_task(run, name=f"{self.name}: {request.name}")
        except RuntimeError:  # the group finished its last task a moment ago
            run.close()
            self._refuse(request)
            return None
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        work = request.work
        if work is not None:
            # Cancelled before its first step, the wrapper never awaits the work: close it,
            # or it is reported as never awaited (closing a finished one does nothing).
            task.add_done_callback(lambda _task: work.close())
        if request.cancel_at_stop:
            self._to_cancel.add(task)
            task.add_done_callback(self._to_cancel.discard)
        return task

    def _refuse(self, request: _Request) -> None:
        """Say that ``request`` will not run, and close its work so nothing is left
        un-awaited."""
        if request.work is not None:
            request.work.close()
        self.log.warning("%s not started: %s has stopped", request.name, self.name)

    # -- running ---------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                for request in self._queued:
                    self._create(request)
                self._queued.clear()
                self._entered.set()
                await self._stop.wait()
                if self._grace > 0 and self._to_cancel:
                    await asyncio.wait(list(self._to_cancel), timeout=self._grace)
                for task in list(self._to_cancel):
                    task.cancel()
                # Leaving the block waits for every task: the loops end cancelled, the
                # spawned work ends by itself.
        finally:
            self._ended = True
            self._group = None
            self._entered.set()

    async def _keep(
        self,
        name: str,
        loop: Callable[[], Work],
        on_failure: OnFailure,
        where: ContextLogger,
    ) -> None:
        clock = asyncio.get_running_loop().time
        failures = 0
        while True:
            began = clock()
            try:
                await loop()
                return  # the loop decided it is done: nothing to restart
            except Exception as exc:  # a task boundary: the loop's own errors end here
                if on_failure is OnFailure.STOP:
                    where.exception("%s failed; %s is down", name, self.name)
                    self._take_down(f"{name} failed ({type(exc).__name__})")
                    return
                if clock() - began >= self._most_delay:
                    failures = 0
                failures += 1
                delay = restart_delay(failures, self._first_delay, self._most_delay)
                # The traceback once; while it keeps failing, one line per try.
                if failures == 1:
                    where.exception("%s failed; restarting in %.0f s", name, delay)
                else:
                    where.error(
                        "%s failed again (%s, %d in a row); restarting in %.0f s",
                        name,
                        type(exc).__name__,
                        failures,
                        delay,
                    )
            await asyncio.sleep(delay)

    def _take_down(self, why: str) -> None:
        self.down = why
        current = asyncio.current_task()
        for task in list(self._to_cancel):
            if task is not current:
                task.cancel()
        if self._on_down is not None:
            try:
                self._on_down(why)
            except Exception:  # a task boundary: the other tasks must still end
                self.log.exception("telling %s that it is down failed", self.name)

    # -- stopping --------------------------------------------------------------------------

    async def stop(self, *, grace: float = 0.0) -> None:
        """Let the loops end by themselves for ``grace`` seconds, cancel the rest, wait for
        the spawned work; return when all have ended."""
        self._grace = grace
        self.stopping.set()
        self._stop.set()
        if self._runner is not None:
            await asyncio.shield(self._runner)
        self._ended = True

    async def idle(self) -> None:
        """Return when the spawned work running now has ended (the loops go on)."""
        if self._runner is not None:
            await self._entered.wait()  # work handed in before the group opened
        spawned = [task for task in self._tasks if task not in self._to_cancel]  # awaited ones
        if spawned:
            await asyncio.wait(spawned)

    @property
    def stopped(self) -> bool:
        """Whether stop has begun (or ended)."""
        return self._ended or self.stopping.is_set()

    @property
    def running(self) -> int:
        """How many tasks run now (loops and spawned work)."""
        return len(self._tasks)

    async def __aenter__(self) -> Supervisor:
        await self.open()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()
