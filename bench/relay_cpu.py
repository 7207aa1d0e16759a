"""CPU per GB of every process a relayed transfer goes through, two code trees alternately.

`python -m bench.relay_cpu [--mb 300] [--rounds 3] [--compare SRC] [--unrecorded]` starts
a broker and an agent of its own (the bench's :class:`SecondlineTarget`) and relays
``head -c N /dev/zero`` through the gateway without a PTY, ``--rounds`` times, printing
for each transfer the MB/s and the CPU seconds per GB (``utime + stime`` from
``/proc/PID/stat``, without reaped children: ``head`` is the agent's child) of the broker,
the agent and the ``ssh`` client (its rusage), with the load average at its start.

``--compare SRC`` starts a second broker and agent whose ``broker`` and ``agent``
packages come from the source tree SRC (another checkout, put first on their
``PYTHONPATH``) and alternates the two, transfer by transfer, so that the machine's load
falls on both alike; ``--unrecorded`` adds the no-op recorder's broker
(:class:`UnrecordedTarget`) of each tree. Before each transfer the broker must be quiet
(under 5 % of a core for half a second): the previous session's ticket note is written
after it ends and would otherwise be counted against the next transfer.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bench import BenchError
from bench.pty_process import read_to_eof, widen_pipe
from bench.secondline_target import SecondlineTarget, UnrecordedTarget
from bench.targets import Workspace

logger = logging.getLogger(__name__)

QUIET_SHARE: Final = 0.05
QUIET_WINDOW_S: Final = 0.5
QUIET_MAX_S: Final = 30.0
STALL_S: Final = 15.0


def own_cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` itself (all its threads, no children), in seconds."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rfind(")") + 1 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Sample:
    """One transfer through one broker."""

    label: str
    load: float
    mb_per_s: float
    broker_s_per_gb: float
    agent_s_per_gb: float
    client_s_per_gb: float


@dataclass
class Tree:
    """One broker and agent, of one code tree and one recorder."""

    label: str
    target: SecondlineTarget

    @property
    def agent_pid(self) -> int:
        agent = self.target._agent  # the bench's own target: its agent process
        if agent is None:
            raise BenchError("the agent is not running")
        return agent.pid


async def wait_quiet(pid: int) -> None:
    """Return once `pid` used under QUIET_SHARE of a core for QUIET_WINDOW_S."""
    deadline = time.monotonic() + QUIET_MAX_S
    while time.monotonic() < deadline:
        before = own_cpu_seconds(pid)
        await asyncio.sleep(QUIET_WINDOW_S)
        if own_cpu_seconds(pid) - before < QUIET_SHARE * QUIET_WINDOW_S:
            return
    logger.warning("broker %d not quiet after %.0f s", pid, QUIET_MAX_S)


def transfer(tree: Tree, size: int) -> Sample:
    """Relay `size` bytes of zeros through `tree` and measure every process's CPU."""
    argv = tree.target.ssh_argv(f"head -c {size} /dev/zero", tty=False)
    broker, agent = tree.target.broker_pid(), tree.agent_pid
    load = os.getloadavg()[0]
    broker_before, agent_before = own_cpu_seconds(broker), own_cpu_seconds(agent)
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert process.stdout is not None
    try:
        widen_pipe(process.stdout.fileno())
        moved = read_to_eof(process.stdout.fileno(), STALL_S)
    except BaseException:
        # A stalled or failed read: the client is ended and reaped before the error goes on.
        process.kill()
        process.wait()
        raise
    finally:
        process.stdout.close()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = status
    broker_s = own_cpu_seconds(broker) - broker_before
    agent_s = own_cpu_seconds(agent) - agent_before
    if status != 0 or moved.byte_count != size:
        raise BenchError(f"{tree.label}: {moved.byte_count} of {size} bytes, status {status}")
    gigabytes = size / 1e9
    return Sample(
        label=tree.label,
        load=load,
        mb_per_s=size / 1e6 / moved.seconds,
        broker_s_per_gb=broker_s / gigabytes,
        agent_s_per_gb=agent_s / gigabytes,
        client_s_per_gb=(usage.ru_utime + usage.ru_stime) / gigabytes,
    )


def _print(sample: Sample) -> None:
    print(
        f"{sample.label:24} load {sample.load:5.1f}  {sample.mb_per_s:6.1f} MB/s  "
        f"broker {sample.broker_s_per_gb:5.2f}  agent {sample.agent_s_per_gb:5.2f}  "
        f"ssh {sample.client_s_per_gb:5.2f} s/GB",
        flush=True,
    )


def _summary(samples: list[Sample], labels: list[str]) -> None:
    print("medians:")
    for label in labels:
        mine = [s for s in samples if s.label == label]
        if not mine:
            continue
        print(
            f"{label:24} {statistics.median(s.mb_per_s for s in mine):6.1f} MB/s  "
            f"broker {statistics.median(s.broker_s_per_gb for s in mine):5.2f}  "
            f"agent {statistics.median(s.agent_s_per_gb for s in mine):5.2f}  "
            f"ssh {statistics.median(s.client_s_per_gb for s in mine):5.2f} s/GB  "
            f"({len(mine)} transfers)"
        )


async def run(args: argparse.Namespace) -> None:
    """Set the trees up, alternate the transfers, tear down."""
    root = Path(tempfile.mkdtemp(prefix="relay-cpu-"))
    sources: list[tuple[str, str | None]] = [("this", None)]
    if args.compare:
        sources.append(("compare", args.compare))
    trees: list[Tree] = []
    try:
        for name, source in sources:
            kinds: list[type[SecondlineTarget]] = [SecondlineTarget]
            if args.unrecorded:
                kinds.append(UnrecordedTarget)
            for kind in kinds:
                directory = root / f"{name}-{kind.key}"
                directory.mkdir()
                workspace = await Workspace.create(directory, None)
                target = kind(workspace)
                if source is not None:
                    path = os.environ.get("PYTHONPATH")
                    target.env["PYTHONPATH"] = source + (os.pathsep + path if path else "")
                await target.setup()
                trees.append(Tree(f"{name} {kind.key}", target))
        samples: list[Sample] = []
        for _ in range(args.rounds):
            for tree in trees:
                await wait_quiet(tree.target.broker_pid())
                sample = await asyncio.to_thread(transfer, tree, args.mb * 1_000_000)
                _print(sample)
                samples.append(sample)
        _summary(samples, [tree.label for tree in trees])
    finally:
        for tree in trees:
            await tree.target.teardown()
        # Every transfer's transcript is kept by its broker: 1.3 GB per recorded GB of
        # zeros, tens of GB after a few runs of a few GB each.
        await asyncio.to_thread(shutil.rmtree, root, True)


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=300, help="MB per transfer")
    parser.add_argument("--rounds", type=int, default=3, help="transfers per broker")
    parser.add_argument("--compare", help="another source tree, alternated with this one")
    parser.add_argument("--unrecorded", action="store_true", help="add no-op recorder brokers")
    args = parser.parse_args()
    if args.compare:
        args.compare = os.path.abspath(args.compare)
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
