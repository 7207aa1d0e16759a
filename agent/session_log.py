"""The local session log (``sessions.jsonl``) and the registry of live channels.

Every consent decision, channel start and channel end is appended as one JSON line, so
the machine keeps its own record of who worked on it, for which ticket, and when. The
log never holds commands or terminal bytes (they may carry secrets); the broker's
transcript is the full record.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from agent.protocol import SessionEnv, iso_utc, sanitize_text
from agent.sftp_activity import FileActivity

logger = logging.getLogger(__name__)

ChannelKind = Literal["shell", "exec", "sftp"]
EndedBy = Literal["exit", "broker", "end_user", "disconnect"]
COMMAND_SHOWN_MAX: Final = 200


class SessionLog:
    """Appends records to ``sessions.jsonl`` (0600); a full disk is logged, not fatal."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, record: dict[str, object]) -> None:
        """Append one record as a JSON line."""
        line = json.dumps(record, separators=(",", ":")).encode() + b"\n"
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        except OSError as exc:
            logger.warning("cannot append to the session log %s: %s", self.path, exc.strerror)


def read_session_log(path: Path, limit: int) -> list[dict[str, object]]:
    """The last ``limit`` well-formed records of a session log (damaged lines skipped)."""
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        return []
    records: list[dict[str, object]] = []
    for line in lines[-limit:] if limit else []:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


@dataclass(eq=False, kw_only=True)
class LiveChannel:
    """A shell or command running for a session."""

    env: SessionEnv
    kind: ChannelKind
    command: str | None
    login_user: str
    started_at: float
    close: Callable[[], None] = field(repr=False)
    ended_by: EndedBy | None = None
    # A file session: what its sftp-server reported doing (agent.sftp_activity).
    files: FileActivity | None = None

    def to_dict(self) -> dict[str, object]:
        """The JSON shape shown by ``secondline-agent sessions``."""
        return {
            "session": self.env.session,
            "staff": self.env.staff,
            "staff_level": self.env.staff_level,
            "ticket": self.env.ticket,
            "ticket_title": self.env.ticket_title,
            "kind": self.kind,
            "command": None
            if self.command is None
            else sanitize_text(self.command, COMMAND_SHOWN_MAX),
            "login_user": self.login_user,
            "started_at": iso_utc(self.started_at),
            **({"files": self.files.to_dict()} if self.files is not None else {}),
        }


class SessionRegistry:
    """The live channels of the agent, and their records in the session log."""

    def __init__(self, log: SessionLog, clock: Callable[[], float]) -> None:
        self._log = log
        self._clock = clock
        self._live: list[LiveChannel] = []
        self._listeners: list[Callable[[], None]] = []

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after every start and end of a channel (the desktop indicator)."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()

    def started(self, channel: LiveChannel) -> None:
        """Record a channel whose process runs."""
        self._live.append(channel)
        self._changed()
        self._log.append(
            {
                "event": "start",
                "session": channel.env.session,
                "kind": channel.kind,
                "staff": channel.env.staff,
                "staff_level": channel.env.staff_level,
                "ticket": channel.env.ticket,
                "ticket_title": channel.env.ticket_title,
                "login_user": channel.login_user,
                "at": iso_utc(channel.started_at),
            }
        )

    def ended(self, channel: LiveChannel, *, ended_by: EndedBy, returncode: int | None) -> None:
        """Record the end of a channel (only its first end counts)."""
        if channel not in self._live:
            return
        self._live.remove(channel)
        record: dict[str, object] = {
            "event": "end",
            "session": channel.env.session,
            "kind": channel.kind,
            "ended_by": channel.ended_by or ended_by,
            "at": iso_utc(self._clock()),
        }
        if returncode is not None:
            record["exit_status" if returncode >= 0 else "exit_signal"] = abs(returncode)
        if channel.files is not None:  # the machine's own record of the files moved
            record["files"] = channel.files.to_dict()
        self._log.append(record)
        self._changed()

    def consent(self, record: dict[str, object]) -> None:
        """Record a consent decision."""
        self._log.append({"event": "consent", **record})

    def live(self) -> list[LiveChannel]:
        """The running channels, oldest first."""
        return list(self._live)

    def end_session(self, session: str) -> int:
        """Close every channel of ``session`` on behalf of the end user; return how many."""
        closing = [channel for channel in self._live if channel.env.session == session]
        for channel in closing:
            channel.ended_by = "end_user"
            channel.close()
        return len(closing)
