"""Files through each target (issue 19): SFTP throughput each way with the real OpenSSH
`sftp`, and another session's typing while a large download runs through the same path.

Every target reaches the same machine (this one) as the same account, so one sparse source
file serves all; its bytes go to and come from ``/dev/null``, so the disk is not measured.
On Secondline the typing session and the transfer go through the same agent and its one
tunnel: the worst case for a transfer crowding out keystrokes.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Final

from bench import MeasurementError
from bench.child_process import ManagedProcess
from bench.results import Figure, Outcome, median_figure
from bench.session_scenarios import ECHO_COMMAND, _echo_figures, _outcomes, echo_session, interleave
from bench.settings import Settings
from bench.stats import megabytes_per_second
from bench.targets import Target

logger = logging.getLogger(__name__)

SOURCE_NAME: Final = "sftp-source.bin"
START_TIMEOUT_S: Final = 30.0


def sftp_argv(ssh_argv: Sequence[str], batch: Path) -> list[str]:
    """The target's ``ssh [options] DEST`` as ``sftp -b BATCH [options] DEST`` (sftp spells
    the port ``-P``; ``-F``, ``-i``, ``-J`` and ``-o`` are the same)."""
    if not ssh_argv or ssh_argv[0] != "ssh":
        raise MeasurementError(f"this target is not reached with ssh: {ssh_argv[:1]}")
    options = ["-P" if arg == "-p" else arg for arg in ssh_argv[1:]]
    return ["sftp", "-b", str(batch), *options]


def _source(directory: Path, size: int) -> Path:
    """A sparse file of `size` bytes (zeros read at memory speed on the machine side)."""
    path = directory / SOURCE_NAME
    with open(path, "wb") as fh:
        fh.truncate(size)
    return path


def _batch(directory: Path, name: str, line: str) -> Path:
    path = directory / f"sftp-{name}.batch"
    path.write_text(line + "\n")
    return path


async def _timed_sftp(argv: list[str]) -> float:
    """Run one sftp batch; seconds from start to exit (connection setup included)."""
    began = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await process.communicate()
    seconds = time.perf_counter() - began
    if process.returncode != 0:
        lines = err.decode(errors="replace").strip().splitlines() or ["no message"]
        raise MeasurementError(f"sftp exited {process.returncode}: {lines[-1]}")
    return seconds


def _median(name: str, rates: list[float]) -> tuple[Figure, ...]:
    return (median_figure(name, rates),)


async def sftp_throughput(targets: Sequence[Target], settings: Settings) -> list[Outcome]:
    """MB/s of `sftp get` and `sftp put` of `settings.sftp_bytes`, each way interleaved."""
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="secondline-bench-sftp-") as temp:
        directory = Path(temp)
        source = await asyncio.to_thread(_source, directory, settings.sftp_bytes)
        get = _batch(directory, "get", f"get {source} /dev/null")
        put = _batch(directory, "put", f"put {source} /dev/null")
        for name, batch in (("sftp_download", get), ("sftp_upload", put)):

            async def sample(target: Target, batch: Path = batch) -> float:
                argv = sftp_argv(target.ssh_argv(None, tty=False), batch)
                return megabytes_per_second(settings.sftp_bytes, await _timed_sftp(argv))

            taken, failed = await interleave(targets, settings.throughput_runs, sample)
            outcomes += _outcomes(name, taken, failed, partial(_median, name))
    return outcomes


async def sftp_echo(targets: Sequence[Target], settings: Settings) -> list[Outcome]:
    """Keystroke echo p50/p99 of a session while `sftp get` moves `settings.sftp_load_bytes`
    through the same target; a transfer that ends before the typing does fails the sample
    (the figure would not be under load)."""

    async def sample(target: Target, batch: Path) -> list[float]:
        transfer = await ManagedProcess.start(
            f"sftp load on {target.label}",
            ["stdbuf", "-oL", *sftp_argv(target.ssh_argv(None, tty=False), batch)],
        )
        try:
            # sftp echoes each batch line as it starts it (stdbuf: line by line on a pipe).
            await transfer.wait_for_line("^sftp> get ", START_TIMEOUT_S)
            latencies = await asyncio.to_thread(
                echo_session,
                target.ssh_argv(ECHO_COMMAND, tty=True),
                settings.loaded_keystrokes,
                settings.echo_warmup,
                settings.echo_budget_s,
            )
            if transfer.returncode is not None:
                raise MeasurementError(
                    "the transfer ended before the typing did; raise sftp_load_bytes"
                )
            return latencies
        finally:
            await transfer.stop()

    with tempfile.TemporaryDirectory(prefix="secondline-bench-sftp-") as temp:
        directory = Path(temp)
        source = await asyncio.to_thread(_source, directory, settings.sftp_load_bytes)
        batch = _batch(directory, "load", f"get {source} /dev/null")
        taken, failed = await interleave(
            targets, settings.echo_sessions, lambda target: sample(target, batch)
        )
    return _outcomes("sftp_echo", taken, failed, lambda s: _echo_figures("sftp_echo", s))
