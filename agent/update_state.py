"""Where a self-update stands across restarts (``update.json`` in the state dir), and what
a starting agent does about it. Pure: the caller reads the file, the clock and its own
version, and performs what :func:`on_start` returns.

An update is three steps with a restart between each (docs/agent.md, "Updates"):

1. The running version A verifies B, keeps A's own verified package for a rollback,
   writes ``installing`` and hands B to the install command; the service restarts.
2. B starts, finds ``installing`` to itself and watches: once its tunnel is up, it reports
   ``installed`` and forgets the record. If it is not connected ``rollback_after`` seconds
   after the install, it writes ``rolling_back`` and installs A's package again.
3. A starts, finds ``rolling_back`` from itself, reports ``rolled_back`` and keeps the
   record as ``rolled_back``, so B is never offered to the install command again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from enum import Enum
from typing import Final, Literal

from agent.errors import MessageError
from agent.protocol import load_json_object
from agent.release import REPORT_REASON_MAX, VERSION_RE

Phase = Literal["installing", "rolling_back", "rolled_back"]
PHASES: Final = ("installing", "rolling_back", "rolled_back")
UPDATE_JSON_MAX: Final = 4096


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateRecord:
    """``update.json``."""

    phase: Phase
    from_version: str
    to_version: str
    #: When the phase began (seconds since the epoch).
    at: float
    #: Why a rollback happened (reported to the broker).
    reason: str = ""
    #: Whether the broker has been told about the rollback.
    reported: bool = False

    @classmethod
    def parse(cls, data: bytes) -> UpdateRecord:
        obj = load_json_object(data, "update.json", max_bytes=UPDATE_JSON_MAX)
        phase = obj.get("phase")
        if phase not in PHASES:
            raise MessageError("update.json: phase is not one of " + ", ".join(PHASES))
        versions = obj.get("from"), obj.get("to")
        if not all(isinstance(v, str) and VERSION_RE.fullmatch(v) for v in versions):
            raise MessageError("update.json: from and to must be agent versions")
        at, reason, reported = obj.get("at"), obj.get("reason", ""), obj.get("reported", False)
        if not isinstance(at, int | float) or isinstance(at, bool):
            raise MessageError("update.json: at is not a time")
        if not isinstance(reason, str) or len(reason) > REPORT_REASON_MAX:
            raise MessageError("update.json: reason is not a short text")
        if not isinstance(reported, bool):
            raise MessageError("update.json: reported is not true or false")
        return cls(
            phase=phase,
            from_version=str(versions[0]),
            to_version=str(versions[1]),
            at=float(at),
            reason=reason,
            reported=reported,
        )

    def serialize(self) -> bytes:
        body = {
            "phase": self.phase,
            "from": self.from_version,
            "to": self.to_version,
            "at": self.at,
            "reason": self.reason,
            "reported": self.reported,
        }
        return json.dumps(body, indent=2).encode() + b"\n"

    def rolling_back(self, reason: str, now: float) -> UpdateRecord:
        return replace(self, phase="rolling_back", reason=reason[:REPORT_REASON_MAX], at=now)

    def rolled_back(self) -> UpdateRecord:
        return replace(self, phase="rolled_back", reported=True)


class Start(Enum):
    """What a starting agent does about ``update.json``."""

    NOTHING = "nothing"  # no update under way
    WATCH = "watch"  # a new version: report once connected, roll back if not in time
    REPORT_ROLLBACK = "report_rollback"  # back on the old version: tell the broker
    FORGET = "forget"  # the record is about other versions (installed by hand): remove it


def on_start(record: UpdateRecord | None, running: str) -> Start:
    """What to do at start, given the record and the version that is running."""
    if record is None:
        return Start.NOTHING
    if record.phase == "installing" and running == record.to_version:
        return Start.WATCH
    if record.phase == "rolling_back" and running == record.from_version:
        return Start.REPORT_ROLLBACK
    if record.phase == "rolled_back" and running == record.from_version:
        # Keep it: it says which version must not be installed again.
        return Start.REPORT_ROLLBACK if not record.reported else Start.NOTHING
    # "installing" while the old version still runs: the install did not take; a rollback
    # whose old version did not come back; or an admin installed another version by hand.
    return Start.FORGET


def skipped_version(record: UpdateRecord | None) -> str | None:
    """The version that was rolled back and must not be installed again."""
    if record is not None and record.phase in ("rolling_back", "rolled_back"):
        return record.to_version
    return None
