"""The supervisor of long-lived tasks and the logger that names whom a line is about: loops
restarted or the feature taken down, spawned work run to its end, every task ended at stop,
every failure logged with its task's name and context."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging

import pytest

from broker.log_context import ContextLogger, context_logger
from broker.supervision import OnFailure, Supervisor, restart_delay

NAME = "broker.test_supervision"


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger=NAME)
    caplog.set_level(logging.DEBUG, logger="broker.supervision")
    return caplog


def test_restart_delays_double_up_to_the_bound() -> None:
    """The pause before a restart doubles with every failure in a row, up to the bound."""
    assert [restart_delay(n, 1.0, 60.0) for n in range(9)] == [0, 1, 2, 4, 8, 16, 32, 60, 60]
    assert restart_delay(10_000, 1.0, 60.0) == 60.0
    assert restart_delay(3, 0.0, 60.0) == 0.0


def test_a_line_names_session_agent_and_staff(logs: pytest.LogCaptureFixture) -> None:
    """The context comes first on the line and as record fields; the peer only stands in
    while there is no session."""
    conn = context_logger(NAME, peer="192.0.2.7")
    conn.info("authenticating %s", "alice")
    session = conn.bind(session="s-1", agent="ag-x", staff="alice")
    session.warning("tick failed")
    assert [r.getMessage() for r in logs.records] == [
        "[peer=192.0.2.7] authenticating alice",
        "[session=s-1 agent=ag-x staff=alice] tick failed",
    ]
    assert logs.records[1].__dict__["session"] == "s-1"
    assert logs.records[1].__dict__["peer"] == "192.0.2.7"
    assert logs.records[1].funcName == "test_a_line_names_session_agent_and_staff"


def test_odd_values_cannot_break_a_line(logs: pytest.LogCaptureFixture) -> None:
    """A "%" in a value survives %-formatting, with or without arguments; a line break or a
    very long value is made harmless."""
    zoned = context_logger(NAME, peer="fe80::1%eth0")
    zoned.info("with %d argument", 1)
    zoned.info("without arguments")
    ContextLogger(logging.getLogger(NAME), staff="eve\nINFO forged" + "x" * 100).info("hello")
    assert [r.getMessage() for r in logs.records] == [
        "[peer=fe80::1%eth0] with 1 argument",
        "[peer=fe80::1%eth0] without arguments",
        f"[staff=eve?INFO?forged{'x' * 49}] hello",
    ]


async def test_stop_cancels_loops_and_waits_for_them() -> None:
    """A kept loop runs until stop; stop returns only after its clean-up ran."""
    running, cleaned = asyncio.Event(), asyncio.Event()

    async def loop() -> None:
        running.set()
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.set()

    supervisor = Supervisor("feature")
    supervisor.keep("waiter", loop, on_failure=OnFailure.RESTART)
    await running.wait()
    assert supervisor.running == 1
    await supervisor.stop()
    assert cleaned.is_set()
    assert supervisor.running == 0


async def test_a_failing_loop_is_logged_and_restarted(logs: pytest.LogCaptureFixture) -> None:
    """A loop that dies is logged with its name and context, the traceback once, and runs
    again."""
    runs: list[int] = []
    third = asyncio.Event()

    async def loop() -> None:
        runs.append(len(runs))
        if len(runs) < 3:
            raise ValueError("broken round")
        third.set()
        await asyncio.Event().wait()

    logger = context_logger(NAME, agent="ag-1")
    async with Supervisor("feature", first_delay=0.0) as supervisor:
        supervisor.keep("presence writer", loop, on_failure=OnFailure.RESTART, logger=logger)
        await third.wait()
    failures = [r for r in logs.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in failures] == [
        "[agent=ag-1] presence writer failed; restarting in 0 s",
        "[agent=ag-1] presence writer failed again (ValueError, 2 in a row); restarting in 0 s",
    ]
    assert failures[0].exc_info is not None
    assert failures[1].exc_info is None


async def test_a_stop_loop_takes_the_feature_down(logs: pytest.LogCaptureFixture) -> None:
    """A STOP loop that dies cancels the other loops and tells the feature why."""
    sibling_ended = asyncio.Event()
    told: list[str] = []

    async def failing() -> None:
        raise RuntimeError("lost state")

    async def sibling() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            sibling_ended.set()

    supervisor = Supervisor("the gateway", on_down=told.append)
    supervisor.keep("other", sibling, on_failure=OnFailure.RESTART)
    supervisor.keep("flusher", failing, on_failure=OnFailure.STOP)
    await sibling_ended.wait()
    assert told == ["flusher failed (RuntimeError)"]
    assert supervisor.down == "flusher failed (RuntimeError)"
    assert [r.getMessage() for r in logs.records if r.levelno == logging.ERROR] == [
        "flusher failed; the gateway is down"
    ]
    await supervisor.stop()


async def test_spawned_work_outlives_its_caller_and_is_awaited_at_stop(
    logs: pytest.LogCaptureFixture,
) -> None:
    """Work spawned by a request that is then cancelled still runs to its end, stop waits
    for it (it is released only once stop has begun: by the loop stop cancels), and a
    failure is logged with its context."""
    release, spawned = asyncio.Event(), asyncio.Event()
    done: list[str] = []

    async def audit() -> None:
        await release.wait()
        done.append("audited")

    async def failing() -> None:
        raise OSError("disk full")

    async def loop() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            release.set()

    supervisor = Supervisor("agents")
    supervisor.keep("housekeeping", loop, on_failure=OnFailure.RESTART)

    async def request() -> None:
        supervisor.spawn("refusal audit", audit())
        supervisor.spawn("summary", failing(), logger=context_logger(NAME, peer="192.0.2.1"))
        spawned.set()
        await asyncio.Event().wait()

    caller = asyncio.create_task(request())
    await spawned.wait()
    caller.cancel()
    await supervisor.stop()
    assert done == ["audited"]
    assert caller.cancelled()
    assert [r.getMessage() for r in logs.records if r.levelno == logging.ERROR] == [
        "[peer=192.0.2.1] summary failed"
    ]


async def test_work_after_stop_is_refused_and_closed(logs: pytest.LogCaptureFixture) -> None:
    """Work handed in after stop is closed (never left un-awaited) and the refusal logged."""

    async def late() -> None:
        raise AssertionError("must not run")

    supervisor = Supervisor("console")
    await supervisor.stop()
    supervisor.spawn("late write", late())
    supervisor.keep("late loop", late, on_failure=OnFailure.RESTART)
    assert [r.getMessage() for r in logs.records if r.levelno == logging.WARNING] == [
        "late write not started: console has stopped",
        "late loop not started: console has stopped",
    ]
    assert supervisor.running == 0


async def test_a_loop_that_watches_stopping_ends_its_round() -> None:
    """Within the grace period a loop that watches ``stopping`` finishes its round instead
    of being cancelled in the middle of it."""
    finished: list[str] = []
    supervisor = Supervisor("console")

    async def loop() -> None:
        while not supervisor.stopping.is_set():
            await supervisor.stopping.wait()
        finished.append("round finished")

    supervisor.keep("purger", loop, on_failure=OnFailure.RESTART)
    await supervisor.stop(grace=30.0)
    assert finished == ["round finished"]


async def test_idle_waits_for_spawned_work_only() -> None:
    """``idle`` returns once the spawned work has ended, while the loops keep running."""
    release, started = asyncio.Event(), asyncio.Event()
    done: list[str] = []

    async def loop() -> None:
        started.set()
        await release.wait()
        done.append("loop")

    async def work() -> None:
        await started.wait()
        release.set()
        done.append("work")

    async with Supervisor("agents") as supervisor:
        supervisor.keep("loop", loop, on_failure=OnFailure.RESTART)
        supervisor.spawn("work", work())
        await supervisor.idle()
        assert "work" in done
        assert supervisor.running <= 1
        assert not supervisor.stopped
    assert supervisor.stopped


async def test_work_cancelled_at_stop_is_not_waited_for() -> None:
    """Spawned work marked ``cancel_at_stop`` (a connection's start) is cancelled at stop
    instead of awaited, and its task is handed back for the connection to cancel."""
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def opening() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    supervisor = Supervisor("SSH gateway")
    await supervisor.open()
    task = supervisor.spawn("opening a session", opening(), cancel_at_stop=True)
    assert task is not None
    await started.wait()
    await supervisor.stop()
    assert cancelled.is_set()
    assert task.cancelled()


async def test_work_cancelled_before_it_ran_is_closed() -> None:
    """Spawned work whose task is cancelled before its first step is closed, not left
    un-awaited (the connection went before its session began to open)."""
    ran: list[str] = []

    async def opening() -> None:
        ran.append("ran")

    async with Supervisor("SSH gateway") as supervisor:
        work = opening()
        task = supervisor.spawn("opening a session", work, cancel_at_stop=True)
        assert task is not None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert ran == []
    assert inspect.getcoroutinestate(work) == inspect.CORO_CLOSED
