"""Unit tests of the pure parts of session processes: modes, /proc parsing, environment."""

from __future__ import annotations

import asyncio
import os
import signal
import struct
import termios
from pathlib import Path
from typing import cast

from agent.login import LoginAccount, session_environment
from agent.protocol import SessionEnv
from agent.session_signals import parse_proc_stat, session_members, signal_name, signal_session
from agent.terminal_modes import PtyRequest, TermAttrs, apply_terminal_modes


def _attrs() -> TermAttrs:
    return [0, 0, 0, termios.ECHO | termios.ICANON, 38400, 38400, [b"\x00"] * 32]


def test_terminal_modes_set_chars_and_flags() -> None:
    """RFC 4254 opcodes set control characters and flags; unknown opcodes are ignored."""
    result = apply_terminal_modes(_attrs(), {3: 0x7F, 4: 255, 53: 0, 36: 1, 200: 1})
    chars = cast(list[bytes], result[6])
    assert chars[termios.VERASE] == b"\x7f"
    assert chars[termios.VKILL] == b"\x00"  # 255 means disabled
    assert isinstance(result[3], int)
    assert not result[3] & termios.ECHO
    assert result[3] & termios.ICANON
    assert isinstance(result[0], int)
    assert result[0] & termios.ICRNL


def test_winsize_is_clamped() -> None:
    """Window sizes are packed as rows, cols, pixels, each clamped to 16 bits."""
    request = PtyRequest(term="xterm", cols=100_000, rows=40, pixel_width=-1)
    assert struct.unpack("HHHH", request.winsize()) == (40, 0xFFFF, 0, 0)


def test_proc_stat_parsing() -> None:
    """The pid, state, group and session are read even from odd command names."""
    parsed = parse_proc_stat(b"123 (we ird) (name)) S 1 123 456 34816 0 0")
    assert parsed is not None
    assert (parsed.pid, parsed.state, parsed.pgrp, parsed.session) == (123, "S", 123, 456)
    assert parse_proc_stat(b"garbage") is None
    assert parse_proc_stat(b"1 (x) S") is None


def test_session_members_finds_our_own_session() -> None:
    """The test's own process is found in its session; session 0 and 1 are never signalled."""
    assert os.getpid() in session_members(os.getsid(0))
    assert signal_session(0, signal.SIGHUP) == 0
    assert signal_session(1, signal.SIGHUP) == 0


def test_signal_names() -> None:
    """Negative return codes map to RFC 4254 signal names."""
    assert signal_name(-signal.SIGTERM) == "TERM"
    assert signal_name(-signal.SIGKILL) == "KILL"
    assert signal_name(-200) == "SIG200"


def test_session_environment_is_clean() -> None:
    """Only login variables, the session's identifiers and a safe locale reach the shell."""
    login_shell = "/bin/bash"
    account = LoginAccount(
        name="support", uid=1000, gid=1000, groups=(1000,), home="/home/support",
        shell=login_shell,
    )  # fmt: skip
    env = SessionEnv(session="s-" + "D" * 22, staff="alice", staff_level=2, ticket="T-5")
    result = session_environment(
        account,
        env,
        term="xterm",
        inherited={"LANG": "de_DE.UTF-8", "TZ": "Europe/Berlin", "LC_ALL": "$(x)", "PATH": "/x"},
    )
    assert result["USER"] == result["LOGNAME"] == "support"
    assert result["PATH"].startswith("/usr/local/bin")
    assert (result["LANG"], result["TZ"], result["TERM"]) == (
        "de_DE.UTF-8",
        "Europe/Berlin",
        "xterm",
    )
    assert "LC_ALL" not in result
    assert result["SL_TICKET"] == "T-5"
    assert "SL_TICKET_TITLE" not in result


def test_login_account_of_the_agent_itself() -> None:
    """Without login_user the agent's own account is used and no switch happens."""
    account = LoginAccount.resolve(None, "/bin/sh")
    assert account.uid == os.geteuid()
    assert not account.switches_user
    assert account.shell == "/bin/sh"


def test_unknown_login_user_is_refused() -> None:
    """A login_user that does not exist is a SpawnError saying what to change."""
    import pytest

    from agent.errors import SpawnError

    with pytest.raises(SpawnError, match="does not exist"):
        LoginAccount.resolve("no-such-user-here", None)


def test_one_proc_scan_serves_a_whole_event_loop_turn(tmp_path: Path) -> None:
    """Sessions that end in the same event-loop turn share one scan of /proc (fifty of
    them once held the agent's loop for seconds); the next turn scans again."""
    proc = tmp_path / "proc"

    def process(pid: int, session: int) -> None:
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "stat").write_bytes(f"{pid} (sh) S 1 {pid} {session} 0".encode())

    process(10, 10)
    process(11, 10)

    async def turns() -> tuple[list[int], list[int], list[int]]:
        first = session_members(10, str(proc))
        process(12, 10)  # appears within the same turn: not seen until the next
        same_turn = session_members(10, str(proc))
        loop = asyncio.get_running_loop()
        next_turn: asyncio.Future[None] = loop.create_future()
        loop.call_soon(loop.call_soon, next_turn.set_result, None)  # after the cache's end
        await next_turn
        return first, same_turn, session_members(10, str(proc))

    first, same_turn, next_turn = asyncio.run(turns())
    assert sorted(first) == sorted(same_turn) == [10, 11]
    assert sorted(next_turn) == [10, 11, 12]
    assert session_members(99, str(proc)) == []
