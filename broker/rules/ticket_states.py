"""The ticket state machine, as a table, and the rules of escalation and hand-back.

Statuses: ``new`` → ``open`` ⇄ ``pending`` → ``resolved`` → ``closed``. Every change the
product knows is one row of :data:`TRANSITIONS`; anything else is refused with a sentence that
says what to do instead. A ticket is closed only after it was resolved (a duplicate or a
withdrawn request is resolved with that as its solution, then closed), so every closed ticket
carries a solution. Closed and resolved tickets can be reopened; they come back as ``open``.

Escalation and hand-back do not change the status, they change the level (1 to 3): escalation
goes up by one or more levels, hand-back goes down, and both need a reason, which goes into
the ticket's escalation history. Who may do either is decided in ``permissions``.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal

from broker.rules.errors import LevelChangeRefused, TransitionRefused
from broker.rules.names import format_ticket_id
from broker.rules.outside_text import clean_line

TicketStatus = Literal["new", "open", "pending", "resolved", "closed"]
TicketAction = Literal["open", "set_pending", "resume", "resolve", "close", "reopen"]
LevelChangeKind = Literal["escalate", "hand_back"]

STATUSES: Final[tuple[TicketStatus, ...]] = ("new", "open", "pending", "resolved", "closed")
ACTIONS: Final[tuple[TicketAction, ...]] = (
    "open",
    "set_pending",
    "resume",
    "resolve",
    "close",
    "reopen",
)
# Statuses in which a ticket is worked: sessions, notes, escalation and assignment need one.
OPEN_STATUSES: Final[frozenset[TicketStatus]] = frozenset({"new", "open", "pending"})
LEVELS: Final[tuple[int, ...]] = (1, 2, 3)
REASON_MAX_LEN: Final = 2000

TRANSITIONS: Final = MappingProxyType[tuple[TicketStatus, TicketAction], TicketStatus](
    {
        ("new", "open"): "open",
        ("new", "set_pending"): "pending",
        ("new", "resolve"): "resolved",
        ("open", "set_pending"): "pending",
        ("open", "resolve"): "resolved",
        ("pending", "resume"): "open",
        ("pending", "resolve"): "resolved",
        ("resolved", "reopen"): "open",
        ("resolved", "close"): "closed",
        ("closed", "reopen"): "open",
    }
)

# What each action leads to when it is allowed; used to spot "already in that status".
_TARGET: Final = MappingProxyType[TicketAction, TicketStatus](
    {"open": "open", "set_pending": "pending", "resume": "open", "resolve": "resolved"}
)


def _the_ticket(ticket: int | None) -> str:
    return "the ticket" if ticket is None else f"ticket {format_ticket_id(ticket)}"


def is_open_status(status: str) -> bool:
    """Tell whether a ticket in ``status`` is still being worked (new, open or pending)."""
    return status in OPEN_STATUSES


def _status(status: str, ticket: int | None) -> TicketStatus:
    for known in STATUSES:
        if status == known:
            return known
    raise TransitionRefused(
        f"{_the_ticket(ticket)} has the unknown status {status!r}; "
        f"statuses are {', '.join(STATUSES)}",
        code="unknown_status",
    )


def allowed_actions(status: str) -> tuple[TicketAction, ...]:
    """Return the actions the table allows from ``status``, in the order of :data:`ACTIONS`."""
    current = _status(status, None)
    return tuple(action for action in ACTIONS if (current, action) in TRANSITIONS)


def _refusal(status: TicketStatus, action: TicketAction, ticket: int | None) -> TransitionRefused:
    """Explain why the table has no row for ``(status, action)`` and what to do instead."""
    the = _the_ticket(ticket)
    if status == "closed":
        return TransitionRefused(f"{the} is closed; reopen it first", code="ticket_closed")
    if status == "resolved":
        return TransitionRefused(
            f"{the} is resolved; reopen it to work on it again, or close it",
            code="ticket_resolved",
        )
    if action == "reopen":
        return TransitionRefused(
            f"{the} is {status}, not resolved or closed; there is nothing to reopen",
            code="not_reopenable",
        )
    if action == "close":
        return TransitionRefused(
            f"{the} is {status}; resolve it with a solution first, then close it",
            code="not_resolved",
        )
    if _TARGET[action] == status:
        return TransitionRefused(f"{the} is already {status}", code="already_in_status")
    if action == "resume":
        return TransitionRefused(
            f"{the} is {status}, not pending; there is nothing to resume", code="not_pending"
        )
    return TransitionRefused(f"{the} is pending; resume it instead", code="use_resume")


def transition(status: str, action: str, *, ticket: int | None = None) -> TicketStatus:
    """Return the status that ``action`` leads to from ``status``, or raise TransitionRefused.

    ``ticket`` (the number) only makes the message name the ticket.
    """
    current = _status(status, ticket)
    for known in ACTIONS:
        if action == known:
            target = TRANSITIONS.get((current, known))
            if target is None:
                raise _refusal(current, known, ticket)
            return target
    raise TransitionRefused(
        f"{action!r} is not a ticket action; actions are {', '.join(ACTIONS)}",
        code="unknown_action",
    )


@dataclass(frozen=True)
class LevelChange:
    """An allowed escalation or hand-back, as it goes into the escalation history."""

    kind: LevelChangeKind
    from_level: int
    to_level: int
    reason: str


def _level(value: int, which: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value not in LEVELS:
        raise LevelChangeRefused(
            f"the {which} level must be 1, 2 or 3, not {value!r}", code="bad_level"
        )
    return value


def _reason(reason: str, kind: LevelChangeKind) -> str:
    verb = "escalate" if kind == "escalate" else "hand it back"
    # Cleaned by the one rule for outside text: the reason reaches tables, JSON and drafts.
    text = clean_line(reason) if isinstance(reason, str) else ""
    if not text:
        raise LevelChangeRefused(
            f"say why you {verb}: a reason is required (up to {REASON_MAX_LEN} characters)",
            code="reason_required",
        )
    if len(text) > REASON_MAX_LEN:
        raise LevelChangeRefused(
            f"the reason is {len(text)} characters long; keep it to {REASON_MAX_LEN} "
            "and put the details in a note",
            code="reason_too_long",
        )
    return text


def check_escalation(level_from: int, level_to: int, *, ticket: int | None = None) -> None:
    """Raise LevelChangeRefused unless going from ``level_from`` to ``level_to`` is upward."""
    source, target = _level(level_from, "current"), _level(level_to, "target")
    if target > source:
        return
    the = _the_ticket(ticket)
    if source == LEVELS[-1]:
        raise LevelChangeRefused(
            f"{the} is at level {source}, the highest; it cannot be escalated further",
            code="top_level",
        )
    raise LevelChangeRefused(
        f"{the} is at level {source}; escalation goes up, to level {source + 1} or higher "
        "(to send it down, hand it back)",
        code="not_upward",
    )


def check_hand_back(level_from: int, level_to: int, *, ticket: int | None = None) -> None:
    """Raise LevelChangeRefused unless going from ``level_from`` to ``level_to`` is downward."""
    source, target = _level(level_from, "current"), _level(level_to, "target")
    if target < source:
        return
    the = _the_ticket(ticket)
    if source == LEVELS[0]:
        raise LevelChangeRefused(
            f"{the} is at level {source}, the lowest; there is no level to hand it back to",
            code="bottom_level",
        )
    raise LevelChangeRefused(
        f"{the} is at level {source}; a hand-back goes down, to level {source - 1} or lower "
        "(to send it up, escalate it)",
        code="not_downward",
    )


def escalate(
    level_from: int, level_to: int, reason: str, *, ticket: int | None = None
) -> LevelChange:
    """Return the escalation from ``level_from`` up to ``level_to`` or raise LevelChangeRefused.

    The reason is kept stripped of surrounding white space.
    """
    check_escalation(level_from, level_to, ticket=ticket)
    return LevelChange("escalate", level_from, level_to, _reason(reason, "escalate"))


def hand_back(
    level_from: int, level_to: int, reason: str, *, ticket: int | None = None
) -> LevelChange:
    """Return the hand-back from ``level_from`` down to ``level_to`` or raise LevelChangeRefused.

    The reason is kept stripped of surrounding white space.
    """
    check_hand_back(level_from, level_to, ticket=ticket)
    return LevelChange("hand_back", level_from, level_to, _reason(reason, "hand_back"))
