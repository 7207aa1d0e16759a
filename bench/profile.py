"""``--profile`` (``make bench PROFILE=1``): a flame graph of each broker per scenario.

While the throughput and loaded-echo scenarios run, ``py-spy record`` samples every broker
target's ``secondline serve`` process from outside (``--nonblocking``: the broker is never
paused, no code runs inside it) and writes speedscope JSON to the results directory,
``profile-<scenario>-<target>.speedscope.json``; open it at https://www.speedscope.app or
with ``py-spy``'s own viewer. Sampling costs the machine some CPU, so a profiled run's
figures are not compared with an unprofiled run's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Final

from bench.settings import Settings
from bench.targets import BrokerTarget, Target

logger = logging.getLogger(__name__)

PROFILED: Final = frozenset({"echo_latency", "raw_throughput", "cpu_per_gb_recorded"})
SAMPLES_PER_S: Final = 100
STOP_WAIT_S: Final = 30.0


def py_spy() -> str | None:
    """The py-spy command of this virtualenv (a bench dependency), or on PATH."""
    beside_python = Path(sys.executable).parent / "py-spy"
    return str(beside_python) if beside_python.exists() else shutil.which("py-spy")


def profile_path(settings: Settings, scenario: str, target: Target) -> Path:
    """Where the flame graph of `target`'s broker during `scenario` goes."""
    return settings.results_dir / f"profile-{scenario}-{target.key}.speedscope.json"


@contextlib.asynccontextmanager
async def profiling(
    settings: Settings, scenario: str, targets: Sequence[Target]
) -> AsyncIterator[list[Path]]:
    """Sample the brokers among `targets` while the body runs, if asked for this scenario."""
    brokers = [target for target in targets if isinstance(target, BrokerTarget)]
    command = py_spy()
    if not settings.profile or scenario not in PROFILED or not brokers:
        yield []
        return
    if command is None:
        logger.warning("no py-spy: install the bench extras (make install); not profiling")
        yield []
        return
    settings.results_dir.mkdir(parents=True, exist_ok=True)
    samplers: list[tuple[asyncio.subprocess.Process, Path]] = []
    for target in brokers:
        path = profile_path(settings, scenario, target)
        process = await asyncio.create_subprocess_exec(
            command,
            "record",
            "--pid",
            str(target.broker_pid()),
            "--format",
            "speedscope",
            "--output",
            str(path),
            "--rate",
            str(SAMPLES_PER_S),
            "--nonblocking",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        samplers.append((process, path))
    try:
        yield [path for _, path in samplers]
    finally:
        for process, path in samplers:
            await _stop(process, path)


async def _stop(process: asyncio.subprocess.Process, path: Path) -> None:
    """Stop one sampler the way it writes its file: SIGINT, then wait."""
    if process.returncode is None:
        process.send_signal(signal.SIGINT)
    try:
        async with asyncio.timeout(STOP_WAIT_S):
            await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()
    if await asyncio.to_thread(path.exists):
        logger.info("profile written: %s", path)
    else:
        logger.warning("py-spy wrote no profile (exit %s): %s", process.returncode, path)
