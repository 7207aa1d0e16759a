"""The commands that ask the running agent over its control socket: ``status``,
``sessions``, and ``end``, ``approve`` and ``deny`` of a session."""

from __future__ import annotations

import json
import sys
from typing import TextIO

from agent.cli import PROG
from agent.control import ControlRequest, call_agent
from agent.errors import ControlError
from agent.protocol import SESSION_ID_RE, STAFF_NAME_RE, sanitize_text
from agent.state import StatePaths, load_enrolled_state, read_private


def show_status(paths: StatePaths, *, as_json: bool) -> int:
    state = load_enrolled_state(paths)
    try:
        status = call_agent(paths.control_sock, ControlRequest("status"))
    except ControlError as exc:
        if "not running" not in str(exc):
            raise
        status = _last_status(paths)
    if as_json:
        print(json.dumps(status, indent=2))
        return 0
    out = sys.stdout
    out.write(f"agent:    {state.name} ({state.agent_id}) of customer {state.customer}")
    out.write(f", consent {state.consent}\n")
    out.write(f"broker:   {state.broker_url}\n")
    if not status.get("running"):
        out.write(f"state:    not running; start it with: {PROG} run\n")
        return 0
    since = status.get("since")
    if status.get("connected"):
        out.write(f"state:    connected since {since}\n")
    else:
        error = status.get("last_error") or "not connected yet"
        out.write(f"state:    disconnected since {since} ({error})\n")
    out.write(
        f"sessions: {status.get('live_sessions', 0)} running, "
        f"{status.get('pending_requests', 0)} waiting for approval\n"
    )
    return 0


def _last_status(paths: StatePaths) -> dict[str, object]:
    try:
        data = json.loads(read_private(paths.status_json, 64 * 1024))
    except (FileNotFoundError, ValueError):
        data = {}
    status = data if isinstance(data, dict) else {}
    status["running"] = False
    status["connected"] = False
    return status


def show_sessions(paths: StatePaths, *, as_json: bool) -> int:
    result = call_agent(paths.control_sock, ControlRequest("sessions"))
    if as_json:
        print(json.dumps(result, indent=2))
        return 0
    live = _list(result, "live")
    pending = _list(result, "pending")
    if not live and not pending:
        print("no sessions are running or waiting for approval")
        return 0
    if live:
        print("RUNNING")
        for item in live:
            detail = f"{_text(item, 'kind')} as {_text(item, 'login_user')}"
            _print_session(sys.stdout, item, f"{detail} since {_text(item, 'started_at')}")
            files = item.get("files") if isinstance(item, dict) else None
            if isinstance(files, dict):
                print(f"    {_files_line(files)}")
    if pending:
        print("WAITING FOR APPROVAL")
        for item in pending:
            _print_session(
                sys.stdout,
                item,
                f"asked {_text(item, 'requested_at')}, times out {_text(item, 'deadline')}",
            )
    return 0


def _files_line(files: dict[str, object]) -> str:
    """A file session's activity, as its sftp-server reported it."""
    line = (
        f"files: {_text(files, 'files_written')} written ({_text(files, 'bytes_written')} "
        f"bytes), {_text(files, 'files_read')} read ({_text(files, 'bytes_read')} bytes), "
        f"{_text(files, 'changes')} changed"
    )
    last = _text(files, "last_file")
    return line if last == "-" else f"{line}, last {last}"


def _list(result: dict[str, object], key: str) -> list[object]:
    value = result.get(key)
    return value if isinstance(value, list) else []


def _text(item: object, key: str) -> str:
    value = item.get(key) if isinstance(item, dict) else None
    return sanitize_text(str(value), 200) if value is not None else "-"


def _print_session(out: TextIO, item: object, detail: str) -> None:
    title = _text(item, "ticket_title")
    ticket = _text(item, "ticket") + (f" {title!r}" if title not in ("-", "") else "")
    role = f", {_text(item, 'role')}" if _text(item, "role") != "-" else ""
    who = f"{_text(item, 'staff')} (level {_text(item, 'staff_level')}{role})"
    out.write(f"  {_text(item, 'session')}  {who}  ticket {ticket}  {detail}\n")


def session_command(paths: StatePaths, op: str, session: str, staff: str | None) -> int:
    if SESSION_ID_RE.fullmatch(session) is None:
        raise ControlError(
            f"{sanitize_text(session, 40)!r} is not a session id (they look like s- and 22 "
            f"letters or digits); list them with: {PROG} sessions"
        )
    if staff is not None and STAFF_NAME_RE.fullmatch(staff) is None:
        raise ControlError(
            f"{sanitize_text(staff, 40)!r} is not a staff member's name; "
            f"list who asks with: {PROG} sessions"
        )
    request = ControlRequest(
        "end" if op == "end" else "approve" if op == "approve" else "deny", session, staff
    )
    result = call_agent(paths.control_sock, request)
    if op == "end":
        ended = result.get("ended", 0)
        print(
            f"ended session {session}"
            + (f" ({ended} channels)" if isinstance(ended, int) and ended > 1 else "")
        )
    else:
        who = f"{_text(result, 'staff')} ({_text(result, 'role')})"
        what = "withdrawn" if result.get("withdrawn") is True else _text(result, "decision")
        print(f"session {session}: {who} {what}")
    return 0
