"""Scenarios every target runs: open a prompt, run `true`, echo keystrokes, stream output.

Each scenario interleaves its repetitions across targets (B, A, Secondline, B, A, …) so
that a burst of noise on this shared machine hits every target alike. The timed part of
each sample runs in a worker thread with blocking calls (see `pty_process`).
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Final, TypeVar

from bench import BenchError, MeasurementError
from bench.child_process import ManagedProcess
from bench.metrics import TargetKey, loaded_part
from bench.pty_process import PtyProcess, read_to_eof, widen_pipe
from bench.results import Figure, Outcome, median_figure
from bench.settings import Settings
from bench.stats import megabytes_per_second, percentile
from bench.targets import Target

logger = logging.getLogger(__name__)

PROMPT: Final = b"BENCH$ "
PROMPT_COMMAND: Final = "env PS1='BENCH$ ' HISTFILE=/dev/null bash --norc -i"
READY: Final = b"BENCH-READY"
ECHO_COMMAND: Final = "stty raw -echo; echo BENCH-READY; exec cat"
# Each stream waits for one byte on stdin after its marker, so every handshake is done
# before any output competes with the next one for the CPU.
STREAM_COMMAND: Final = "echo BENCH-STREAMING >&2; head -c 1 >/dev/null; exec yes"
OPEN_TIMEOUT_S: Final = 30.0
ECHO_TIMEOUT_S: Final = 10.0

Sample = TypeVar("Sample")


async def interleave(
    targets: Sequence[Target], runs: int, sample: Callable[[Target], Awaitable[Sample]]
) -> tuple[dict[TargetKey, list[Sample]], dict[TargetKey, str]]:
    """Take `runs` samples of each target in round-robin order.

    A target whose sample fails is dropped from the remaining rounds; its reason is kept.
    """
    samples: dict[TargetKey, list[Sample]] = {target.key: [] for target in targets}
    failures: dict[TargetKey, str] = {}
    for _ in range(runs):
        for target in targets:
            if target.key in failures:
                continue
            try:
                samples[target.key].append(await sample(target))
            except BenchError as error:
                failures[target.key] = str(error)
            except Exception as error:  # a scenario boundary: report, keep measuring others
                logger.exception("sample on %s failed", target.label)
                failures[target.key] = f"{type(error).__name__}: {error}"
    return samples, failures


def _outcomes(
    scenario: str,
    samples: dict[TargetKey, list[Sample]],
    failures: dict[TargetKey, str],
    figures: Callable[[list[Sample]], tuple[Figure, ...]],
) -> list[Outcome]:
    outcomes = []
    for key, taken in samples.items():
        if key in failures:
            outcomes.append(Outcome.failed(scenario, key, failures[key]))
        else:
            outcomes.append(Outcome.ok(scenario, key, *figures(taken)))
    return outcomes


def time_open_prompt(argv: list[str]) -> float:
    """Return ms from starting `argv` in a PTY to the first prompt."""
    session = PtyProcess(argv)
    try:
        seen = session.read_until(PROMPT, OPEN_TIMEOUT_S)
        return (seen - session.started_ns) / 1e6
    finally:
        session.close(goodbye=b"exit\n")


def time_exec(argv: list[str]) -> float:
    """Return ms from starting `argv` (no PTY) to its exit; it must exit 0."""
    start = time.perf_counter_ns()
    done = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
    )
    elapsed = (time.perf_counter_ns() - start) / 1e6
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines() or ["no message"]
        raise MeasurementError(f"exited {done.returncode}: {lines[-1]}")
    return elapsed


def echo_session(argv: list[str], keystrokes: int, warmup: int, budget_s: float) -> list[float]:
    """Open a session running `cat` in raw mode and return each keystroke's echo in µs."""
    session = PtyProcess(argv)
    try:
        session.read_until(READY, OPEN_TIMEOUT_S)
        return session.echo_round_trips(keystrokes, warmup, ECHO_TIMEOUT_S, budget_s)
    finally:
        session.close()


def pty_throughput_sample(argv: list[str], at_least: int, stall_s: float) -> float:
    """Return MB/s read from a PTY the bench owns, first byte to last, while `argv` prints."""
    session = PtyProcess(argv)
    try:
        transfer = session.read_to_eof(stall_s)
    finally:
        status = session.close()
    if status != 0 or transfer.byte_count < at_least or transfer.seconds <= 0.0:
        raise MeasurementError(
            f"read {transfer.byte_count} bytes (expected ≥ {at_least}), exit status {status}"
        )
    return megabytes_per_second(transfer.byte_count, transfer.seconds)


def pipe_throughput_sample(
    argv: list[str], expected: int, stall_s: float, *, exact: bool = True
) -> float:
    """Return MB/s read from `argv`'s stdout pipe, first byte to last.

    With `exact`, exactly `expected` bytes must arrive; otherwise at least that many.
    """
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None
    assert process.stderr is not None
    try:
        widen_pipe(process.stdout.fileno())
        transfer = read_to_eof(process.stdout.fileno(), stall_s)
        status = process.wait(OPEN_TIMEOUT_S)
        message = process.stderr.read().decode(errors="replace").strip()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()
    complete = transfer.byte_count == expected if exact else transfer.byte_count >= expected
    if status != 0 or not complete or transfer.seconds <= 0.0:
        raise MeasurementError(
            f"read {transfer.byte_count} bytes (expected {'' if exact else '≥ '}{expected}), "
            f"exit status {status}: {message}"
        )
    return megabytes_per_second(transfer.byte_count, transfer.seconds)


async def open_prompt(targets: Sequence[Target], settings: Settings) -> list[Outcome]:
    """`ssh -tt` start → first prompt, median of `settings.runs`."""

    async def sample(target: Target) -> float:
        return await asyncio.to_thread(time_open_prompt, target.ssh_argv(PROMPT_COMMAND, tty=True))

    taken, failed = await interleave(targets, settings.runs, sample)
    return _outcomes("open_prompt", taken, failed, lambda ms: (median_figure("open_prompt", ms),))


async def exec_true(targets: Sequence[Target], settings: Settings) -> list[Outcome]:
    """`ssh host true` start → exit, median of `settings.runs`."""

    async def sample(target: Target) -> float:
        return await asyncio.to_thread(time_exec, target.ssh_argv("true", tty=False))

    taken, failed = await interleave(targets, settings.runs, sample)
    return _outcomes("exec_true", taken, failed, lambda ms: (median_figure("exec_true", ms),))


def _echo_figures(prefix: str, sessions: list[list[float]]) -> tuple[Figure, ...]:
    pooled = [latency for session in sessions for latency in session]
    detail = {
        f"session{index}_p{pct}": percentile(session, pct)
        for index, session in enumerate(sessions)
        for pct in (50, 99)
    }
    # Fewer keystrokes than asked means the session ran out of its time budget.
    detail.update(
        {
            f"session{index}_keystrokes": float(len(session))
            for index, session in enumerate(sessions)
        }
    )
    return (
        Figure(
            metric=f"{prefix}_p50",
            value=percentile(pooled, 50),
            samples=tuple(pooled),
            detail=detail,
        ),
        Figure(metric=f"{prefix}_p99", value=percentile(pooled, 99)),
    )


@asynccontextmanager
async def streaming(target: Target, count: int, concurrency: int) -> AsyncIterator[None]:
    """Keep `count` sessions printing `yes` through `target` (output to /dev/null).

    Each session is open once it printed its marker on stderr; at most `concurrency`
    handshakes are in flight, below sshd's default MaxStartups of 10. Then all start
    printing at once.
    """
    streams: list[ManagedProcess] = []
    gate = asyncio.Semaphore(concurrency)

    async def start(index: int) -> None:
        async with gate:
            stream = await ManagedProcess.start(
                f"stream {index}",
                target.ssh_argv(STREAM_COMMAND, tty=False),
                discard_stdout=True,
                with_stdin=True,
            )
            streams.append(stream)
            await stream.wait_for_line("BENCH-STREAMING", OPEN_TIMEOUT_S)

    try:
        started = await asyncio.gather(*(start(i) for i in range(count)), return_exceptions=True)
        errors = [error for error in started if isinstance(error, BaseException)]
        if errors:
            raise MeasurementError(f"{len(errors)} of {count} streams did not start: {errors[0]}")
        for stream in streams:
            await stream.write(b"g")
        yield
    finally:
        await asyncio.gather(*(stream.stop() for stream in streams), return_exceptions=True)


async def echo_latency(targets: Sequence[Target], settings: Settings) -> list[Outcome]:
    """Keystroke echo p50/p99, idle and while 1, 10 and 50 sessions stream (STREAM_COUNTS;
    every target at one count before the next count)."""

    def session(keystrokes: int) -> Callable[[Target], Awaitable[list[float]]]:
        def run(target: Target) -> Awaitable[list[float]]:
            argv = target.ssh_argv(ECHO_COMMAND, tty=True)
            return asyncio.to_thread(
                echo_session, argv, keystrokes, settings.echo_warmup, settings.echo_budget_s
            )

        return run

    taken, failed = await interleave(
        targets, settings.echo_sessions, session(settings.echo_keystrokes)
    )
    outcomes = _outcomes("echo_latency", taken, failed, lambda s: _echo_figures("echo_idle", s))
    for count in settings.stream_counts:
        part = loaded_part(count)
        for target in targets:
            if not target.supports(part):
                continue
            outcomes += await _loaded_echo(target, count, part, settings, session)
    return outcomes


async def _loaded_echo(
    target: Target,
    count: int,
    part: str,
    settings: Settings,
    session: Callable[[int], Callable[[Target], Awaitable[list[float]]]],
) -> list[Outcome]:
    logger.info("echo under load on %s: starting %d streams", target.label, count)
    try:
        began = time.monotonic()
        async with streaming(target, count, settings.start_concurrency):
            logger.info("%d streams running after %.1f s", count, time.monotonic() - began)
            loaded, broke = await interleave(
                [target], settings.echo_sessions, session(settings.loaded_keystrokes)
            )
    except BenchError as error:
        loaded, broke = {target.key: []}, {target.key: str(error)}
    return _outcomes(part, loaded, broke, lambda s: _echo_figures(part, s))


async def pty_throughput(targets: Sequence[Target], settings: Settings) -> list[Outcome]:
    """MB/s the client reads from `head -c N /dev/zero | base64` run on a remote PTY."""
    command = f"head -c {settings.pty_bytes} /dev/zero | base64"

    async def sample(target: Target) -> float:
        argv = target.ssh_argv(command, tty=True)
        if not target.allocates_pty:
            return await asyncio.to_thread(
                pty_throughput_sample, argv, settings.pty_bytes, settings.stall_s
            )
        # The remote PTY is the one measured; the staff member's own terminal is on
        # their machine, so here the client writes to a pipe instead of a second PTY
        # that would take CPU from the relay on this one machine.
        return await asyncio.to_thread(
            partial(pipe_throughput_sample, argv, settings.pty_bytes, settings.stall_s, exact=False)
        )

    taken, failed = await interleave(targets, settings.throughput_runs, sample)
    return _outcomes(
        "pty_throughput", taken, failed, lambda rates: (median_figure("pty_throughput", rates),)
    )


async def raw_throughput(targets: Sequence[Target], settings: Settings) -> list[Outcome]:
    """MB/s the client reads without a PTY from `head -c N /dev/zero`."""
    command = f"head -c {settings.raw_bytes} /dev/zero"

    async def sample(target: Target) -> float:
        argv = target.ssh_argv(command, tty=False)
        return await asyncio.to_thread(
            pipe_throughput_sample, argv, settings.raw_bytes, settings.stall_s
        )

    taken, failed = await interleave(targets, settings.throughput_runs, sample)
    return _outcomes(
        "raw_throughput", taken, failed, lambda rates: (median_figure("raw_throughput", rates),)
    )
