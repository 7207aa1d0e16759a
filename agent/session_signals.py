"""Signals to every process of a session (found through ``/proc``), and signal names."""

from __future__ import annotations

import asyncio
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


def scan_sessions(proc: str = "/proc") -> dict[int, list[int]]:
    """Pids of every live process (zombies excluded), by session id: one pass over
    ``/proc``, which reads one file per process on the machine."""
    sessions: dict[int, list[int]] = {}
    try:
        entries = os.listdir(proc)
    except OSError:
        return sessions
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"{proc}/{name}/stat", "rb") as handle:
                parsed = parse_proc_stat(handle.read())
        except OSError:
            continue
        if parsed is not None and parsed.state not in "ZX":
            sessions.setdefault(parsed.session, []).append(parsed.pid)
    return sessions


class _ScanPerLoopTurn:
    """One scan of ``/proc`` shared by every caller in the same event-loop turn.

    When a busy tunnel closes, fifty sessions end in the same turn and each asks several
    times who is left in its session: a scan each (tens of milliseconds with a few
    hundred processes on a loaded machine) held the agent's event loop for seconds, long
    enough for its WebSocket keepalive to give up on a healthy broker. A turn's callers
    share one scan; the next turn scans afresh, so a process killed in this turn is seen
    gone in the next."""

    def __init__(self) -> None:
        self._proc = ""
        self._sessions: dict[int, list[int]] | None = None

    def sessions(self, proc: str) -> dict[int, list[int]]:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a plain call): scan every time
            return scan_sessions(proc)
        if self._sessions is None or self._proc != proc:
            self._sessions, self._proc = scan_sessions(proc), proc
            loop.call_soon(self._forget)
        return self._sessions

    def _forget(self) -> None:
        self._sessions = None


_SCANS: Final = _ScanPerLoopTurn()


def session_members(session_id: int, proc: str = "/proc") -> list[int]:
    """Pids of the live processes (zombies excluded) whose session is ``session_id``."""
    return list(_SCANS.sessions(proc).get(session_id, ()))


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
