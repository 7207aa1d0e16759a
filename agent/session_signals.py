"""Signals to every process of a session (found through ``/proc``), and signal names."""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass
from typing import Final

#: Signals a client may send to a session (RFC 4254 names, without SIG).
ALLOWED_SIGNALS: Final = {
    "HUP": signal.SIGHUP,
    "INT": signal.SIGINT,
    "QUIT": signal.SIGQUIT,
    "TERM": signal.SIGTERM,
    "KILL": signal.SIGKILL,
    "USR1": signal.SIGUSR1,
    "USR2": signal.SIGUSR2,
    "ALRM": signal.SIGALRM,
}


@dataclass(frozen=True, slots=True)
class ProcStat:
    """The fields of ``/proc/PID/stat`` the agent needs."""

    pid: int
    state: str
    pgrp: int
    session: int


def parse_proc_stat(data: bytes) -> ProcStat | None:
    """Parse ``/proc/PID/stat`` (the command name may hold spaces and parentheses)."""
    head, sep, tail = data.rpartition(b")")
    if not sep:
        return None
    pid_text = head.split(b" (", 1)[0]
    fields = tail.split()
    try:
        return ProcStat(
            pid=int(pid_text),
            state=fields[0].decode("ascii", "replace"),
            pgrp=int(fields[2]),
            session=int(fields[3]),
        )
    except (ValueError, IndexError):
        return None


def session_members(session_id: int, proc: str = "/proc") -> list[int]:
    """Pids of the live processes (zombies excluded) whose session is ``session_id``."""
    members: list[int] = []
    try:
        entries = os.listdir(proc)
    except OSError:
        return members
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"{proc}/{name}/stat", "rb") as handle:
                parsed = parse_proc_stat(handle.read())
        except OSError:
            continue
        if parsed is not None and parsed.session == session_id and parsed.state not in "ZX":
            members.append(parsed.pid)
    return members


def signal_session(session_id: int, signum: int) -> int:
    """Send ``signum`` to every process of a session; return how many were signalled."""
    if session_id <= 1:
        return 0  # never a session of ours: 0 would mean our own process group
    count = 0
    # Pid reuse is harmless here: a reused pid would have to lead a session of that id.
    for pid in session_members(session_id):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)
            count += 1
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(session_id, signum)
    return count


def signal_name(returncode: int) -> str:
    """``TERM`` for a process killed by SIGTERM (``returncode`` is minus the signal)."""
    try:
        return signal.Signals(-returncode).name.removeprefix("SIG")
    except ValueError:
        return f"SIG{-returncode}"
