"""The capacity test's load: many OpenSSH clients on PTYs, each typing and timing its echo.

The typists share the machine's two cores with what they measure, so they cost as little
as they can per keystroke: each :class:`TypingSession` is driven by callbacks on the
event loop (its PTY's reader times the echo and schedules the next key), with no task,
future or timeout per keystroke. The first version awaited a future under
``asyncio.timeout`` and slept between keys, which woke a coroutine twice per keystroke.

:func:`typing_load` also reports what the load itself cost (:class:`TypingLoad`): the
CPU of the bench process and of its ssh clients while they typed, and of the broker, so
a capacity figure says whether it was the broker or the load generator that ran out of
machine. Before the sessions open, and again before they type, it waits until the broker
is quiet (:func:`wait_quiet`): a broker still finishing the previous scenario's sessions
(50 streamed transcripts sealed and rendered into ticket notes) took a core while the
first step typed, and the step measured that, not the typing.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import random
import resource
import time
from dataclasses import dataclass
from typing import Final

from bench import MeasurementError
from bench.procfs import cpu_seconds, processes_cpu_seconds
from bench.pty_process import KEYS, PtyProcess
from bench.session_scenarios import ECHO_COMMAND, READY
from bench.settings import Settings
from bench.targets import BrokerTarget, Target

ECHO_GIVE_UP_S: Final = 5.0
SESSION_OPEN_TIMEOUT_S: Final = 60.0
#: The broker is quiet when it used less than this share of a core over QUIET_WINDOW_S.
QUIET_CORES: Final = 0.05
QUIET_WINDOW_S: Final = 1.0
#: The longest the bench waits for a quiet broker before it types anyway.
QUIET_GIVE_UP_S: Final = 60.0


class TypingSession:
    """One interactive session: a typist on the event loop and its echo times."""

    def __init__(self, argv: list[str], rng: random.Random) -> None:
        self._pty = PtyProcess(argv)
        os.set_blocking(self._pty.fd, False)
        self._loop = asyncio.get_running_loop()
        self._rng = rng
        self._seen = bytearray()
        self.ready: asyncio.Future[None] = self._loop.create_future()
        self.latencies_ms: list[float] = []
        # The key whose echo is awaited, when it was written, and the give-up timer.
        self._awaited: bytes | None = None
        self._sent_ns = 0
        self._give_up: asyncio.TimerHandle | None = None
        self._next_key: asyncio.TimerHandle | None = None
        self._typing: asyncio.Future[None] | None = None
        self._deadline = 0.0
        self._interval = 0.0
        self._index = 0
        self._loop.add_reader(self._pty.fd, self._on_readable)

    @property
    def pid(self) -> int:
        """The ssh client's pid."""
        return self._pty.process.pid

    def _on_readable(self) -> None:
        try:
            data = os.read(self._pty.fd, 65536)
        except BlockingIOError:
            return
        except OSError as error:
            if error.errno != errno.EIO:
                raise
            data = b""
        now = time.perf_counter_ns()
        if not data:
            self._ended()
            return
        if not self.ready.done():
            self._seen += data
            if READY in self._seen:
                self.ready.set_result(None)
            del self._seen[: -len(READY)]
            return
        if self._awaited is not None and self._awaited in data:
            self._record((now - self._sent_ns) / 1e6)

    def _ended(self) -> None:
        self._loop.remove_reader(self._pty.fd)
        self._cancel_timers()
        failure = MeasurementError(f"session ended: {self._pty.describe_tail()!r}")
        for future in (self.ready, self._typing):
            if future is not None and not future.done():
                future.set_exception(failure)

    def _record(self, latency_ms: float) -> None:
        """The awaited echo came (or was given up): note it, and pace the next key."""
        self._awaited = None
        if self._give_up is not None:
            self._give_up.cancel()
            self._give_up = None
        self.latencies_ms.append(latency_ms)
        # Pacing a typist between keystrokes, not waiting for a state.
        pause = self._interval * self._rng.uniform(0.5, 1.5)
        self._next_key = self._loop.call_later(pause, self._type_key)

    def _gave_up(self) -> None:
        self._give_up = None
        if self._awaited is not None:
            self._record(ECHO_GIVE_UP_S * 1e3)

    def _type_key(self) -> None:
        self._next_key = None
        if self._loop.time() >= self._deadline:
            if self._typing is not None and not self._typing.done():
                self._typing.set_result(None)
            return
        at = self._index % len(KEYS)
        self._index += 1
        self._awaited = KEYS[at : at + 1]
        self._sent_ns = time.perf_counter_ns()
        os.write(self._pty.fd, self._awaited)
        self._give_up = self._loop.call_later(ECHO_GIVE_UP_S, self._gave_up)

    async def type_until(self, deadline: float, interval: float) -> None:
        """Type one key every ~`interval` s (±50 %) after each echo until `deadline` (loop
        time), timing each echo; an echo not back within 5 s counts as 5 s."""
        self._deadline, self._interval = deadline, interval
        self._index = self._rng.randrange(len(KEYS))
        self._typing = self._loop.create_future()
        self._type_key()
        await self._typing

    def _cancel_timers(self) -> None:
        for handle in (self._give_up, self._next_key):
            if handle is not None:
                handle.cancel()
        self._give_up = self._next_key = None

    def close(self) -> None:
        """Stop reading and end the ssh client (call on the loop's thread)."""
        self._cancel_timers()
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self._pty.fd)

    def end(self) -> None:
        """End the ssh client (blocking: run in a worker thread after :meth:`close`)."""
        self._pty.close(grace=2.0)


@dataclass(frozen=True)
class TypingLoad:
    """What one step of typing sessions measured."""

    latencies_ms: list[float]
    seconds: float
    """From the first key to the last echo."""
    generator_cpu_s: float
    """CPU of the bench process and its ssh clients meanwhile: the load generator's."""
    broker_cpu_s: float | None
    """CPU of the broker process meanwhile (a cluster's first node); None: no broker."""
    quiet_wait_s: float = 0.0
    """Seconds spent waiting for a quiet broker before opening and before typing."""

    def per_key_ms(self, cpu_s: float) -> float:
        """``cpu_s`` spread over the keystrokes, in milliseconds."""
        return cpu_s * 1e3 / max(1, len(self.latencies_ms))


async def wait_quiet(pid: int) -> float:
    """Wait until process ``pid`` used under :data:`QUIET_CORES` of a core over one
    :data:`QUIET_WINDOW_S`; return the seconds waited (about :data:`QUIET_GIVE_UP_S` when
    it never was, and the step goes on)."""
    start = time.monotonic()
    while True:
        before = cpu_seconds(pid)
        # CPU time is only seen over an interval: there is no event for "idle" to wait on.
        await asyncio.sleep(QUIET_WINDOW_S)
        waited = time.monotonic() - start
        if cpu_seconds(pid) - before < QUIET_CORES * QUIET_WINDOW_S or waited >= QUIET_GIVE_UP_S:
            return waited


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def typing_load(target: Target, sessions: int, settings: Settings) -> TypingLoad:
    """Open `sessions` typing sessions at once, type for the step's seconds, and return
    every echo latency with what the typing cost."""
    rng = random.Random(sessions)
    opened: list[TypingSession] = []
    gate = asyncio.Semaphore(settings.start_concurrency)

    async def open_one() -> None:
        async with gate:
            session = TypingSession(target.ssh_argv(ECHO_COMMAND, tty=True), rng)
            opened.append(session)
            async with asyncio.timeout(SESSION_OPEN_TIMEOUT_S):
                await session.ready

    broker_pid = target.broker_pid() if isinstance(target, BrokerTarget) else None
    quiet = await wait_quiet(broker_pid) if broker_pid is not None else 0.0
    try:
        results = await asyncio.gather(
            *(open_one() for _ in range(sessions)), return_exceptions=True
        )
        errors = [result for result in results if isinstance(result, BaseException)]
        if errors:
            raise MeasurementError(
                f"{len(errors)} of {sessions} sessions did not open: {errors[0]!r}"
            )
        if broker_pid is not None:
            quiet += await wait_quiet(broker_pid)
        clients = [session.pid for session in opened]
        generator = _own_cpu_seconds() + processes_cpu_seconds(clients)
        broker = cpu_seconds(broker_pid) if broker_pid is not None else 0.0
        start = time.monotonic()
        deadline = asyncio.get_running_loop().time() + settings.step_seconds
        await asyncio.gather(
            *(session.type_until(deadline, settings.typing_interval_s) for session in opened)
        )
        seconds = time.monotonic() - start
        generator = _own_cpu_seconds() + processes_cpu_seconds(clients) - generator
        broker_s = cpu_seconds(broker_pid) - broker if broker_pid is not None else None
        return TypingLoad(
            latencies_ms=[latency for session in opened for latency in session.latencies_ms],
            seconds=seconds,
            generator_cpu_s=generator,
            broker_cpu_s=broker_s,
            quiet_wait_s=quiet,
        )
    finally:
        for session in opened:
            session.close()
        await asyncio.gather(
            *(asyncio.to_thread(session.end) for session in opened), return_exceptions=True
        )
