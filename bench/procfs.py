"""A process's resident memory and CPU seconds, read from /proc.

The parsers are pure (tested on sample text); the readers are one `read_text` each.
Figures cover the process and its descendants, so a broker that forks workers is
counted whole (shared pages are then counted once per process: an upper bound).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from bench import MeasurementError

PROC = Path("/proc")


def parse_vmrss_kib(status_text: str) -> int:
    """Return VmRSS in KiB from the text of /proc/PID/status."""
    for line in status_text.splitlines():
        if line.startswith("VmRSS:"):
            fields = line.split()
            if len(fields) >= 2 and fields[1].isdigit():
                return int(fields[1])
    raise ValueError("no VmRSS line (a kernel thread or a zombie has no resident memory)")


def _fields_after_comm(stat_text: str) -> list[str]:
    # The command name is in parentheses and may itself hold spaces or ')'.
    closing = stat_text.rfind(")")
    if closing < 0:
        raise ValueError("not the text of /proc/PID/stat")
    return stat_text[closing + 1 :].split()


def parse_cpu_ticks(stat_text: str) -> int:
    """Return utime + stime + cutime + cstime, in clock ticks, from /proc/PID/stat text.

    The children's part covers only children that exited and were waited for, so
    summing it over a live process tree counts every CPU second once.
    """
    fields = _fields_after_comm(stat_text)
    # Fields 14 to 17 of proc(5); the list starts at field 3 (state).
    return sum(int(value) for value in fields[11:15])


def parse_ppid(stat_text: str) -> int:
    """Return the parent pid from the text of /proc/PID/stat."""
    return int(_fields_after_comm(stat_text)[1])


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def process_tree(pid: int) -> list[int]:
    """Return `pid` and every live descendant of it."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        text = _read(entry / "stat")
        if text is None:
            continue
        try:
            children.setdefault(parse_ppid(text), []).append(int(entry.name))
        except (ValueError, IndexError):
            continue
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(children.get(current, ()))
    return tree


def rss_kib(pid: int) -> int:
    """Return the resident memory of `pid` and its descendants, in KiB."""
    total = 0
    found = False
    for member in process_tree(pid):
        text = _read(PROC / str(member) / "status")
        if text is None:
            continue
        try:
            total += parse_vmrss_kib(text)
        except ValueError:
            continue
        found = found or member == pid
    if not found:
        raise MeasurementError(f"process {pid} is gone; cannot read its memory")
    return total


def cpu_seconds(pid: int) -> float:
    """Return the user + system CPU seconds of `pid` and its descendants, live or reaped."""
    ticks = 0
    found = False
    for member in process_tree(pid):
        text = _read(PROC / str(member) / "stat")
        if text is None:
            continue
        ticks += parse_cpu_ticks(text)
        found = found or member == pid
    if not found:
        raise MeasurementError(f"process {pid} is gone; cannot read its CPU time")
    return ticks / os.sysconf("SC_CLK_TCK")


def processes_cpu_seconds(pids: Iterable[int]) -> float:
    """Return the CPU seconds of the live processes among `pids` (no descendants; one
    that is gone counts 0): the bench's own ssh clients, read before they are closed."""
    ticks = 0
    for pid in pids:
        text = _read(PROC / str(pid) / "stat")
        if text is not None:
            ticks += parse_cpu_ticks(text)
    return ticks / os.sysconf("SC_CLK_TCK")
