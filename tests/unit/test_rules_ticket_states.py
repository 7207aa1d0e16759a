"""Tests of the ticket status table and of escalation and hand-back."""

from __future__ import annotations

import itertools
from typing import cast

import pytest

from broker.rules import (
    ACTIONS,
    LEVELS,
    OPEN_STATUSES,
    REASON_MAX_LEN,
    STATUSES,
    TRANSITIONS,
    LevelChange,
    LevelChangeRefused,
    RulesError,
    TransitionRefused,
    allowed_actions,
    check_escalation,
    check_hand_back,
    escalate,
    hand_back,
    is_open_status,
    transition,
)

# Every status and every action, written out by hand: a status is the result, any other
# string is the refusal code.
EXPECTED: dict[tuple[str, str], str] = {
    ("new", "open"): "open",
    ("new", "set_pending"): "pending",
    ("new", "resume"): "not_pending",
    ("new", "resolve"): "resolved",
    ("new", "close"): "not_resolved",
    ("new", "reopen"): "not_reopenable",
    ("open", "open"): "already_in_status",
    ("open", "set_pending"): "pending",
    ("open", "resume"): "already_in_status",
    ("open", "resolve"): "resolved",
    ("open", "close"): "not_resolved",
    ("open", "reopen"): "not_reopenable",
    ("pending", "open"): "use_resume",
    ("pending", "set_pending"): "already_in_status",
    ("pending", "resume"): "open",
    ("pending", "resolve"): "resolved",
    ("pending", "close"): "not_resolved",
    ("pending", "reopen"): "not_reopenable",
    ("resolved", "open"): "ticket_resolved",
    ("resolved", "set_pending"): "ticket_resolved",
    ("resolved", "resume"): "ticket_resolved",
    ("resolved", "resolve"): "ticket_resolved",
    ("resolved", "close"): "closed",
    ("resolved", "reopen"): "open",
    ("closed", "open"): "ticket_closed",
    ("closed", "set_pending"): "ticket_closed",
    ("closed", "resume"): "ticket_closed",
    ("closed", "resolve"): "ticket_closed",
    ("closed", "close"): "ticket_closed",
    ("closed", "reopen"): "open",
}


def test_expected_table_covers_every_pair() -> None:
    """The hand-written table has one entry for each of the 5 x 6 pairs."""
    assert set(EXPECTED) == set(itertools.product(STATUSES, ACTIONS))


@pytest.mark.parametrize(("status", "action"), sorted(EXPECTED))
def test_every_status_and_action(status: str, action: str) -> None:
    """Each pair either leads to the expected status or is refused with the expected code."""
    expected = EXPECTED[(status, action)]
    if expected in STATUSES:
        assert transition(status, action) == expected
        assert action in allowed_actions(status)
        return
    with pytest.raises(TransitionRefused) as raised:
        transition(status, action, ticket=1042)
    assert raised.value.code == expected
    assert raised.value.message.startswith("ticket T-1042 is ")
    assert action not in allowed_actions(status)


def test_table_is_exactly_the_allowed_pairs() -> None:
    """TRANSITIONS holds exactly the pairs that lead somewhere."""
    allowed = {pair: target for pair, target in EXPECTED.items() if target in STATUSES}
    assert dict(TRANSITIONS) == allowed


def test_closed_refusal_reads_as_a_sentence() -> None:
    """A closed ticket tells the reader to reopen it first."""
    with pytest.raises(TransitionRefused, match=r"^ticket T-7 is closed; reopen it first$"):
        transition("closed", "resolve", ticket=7)
    with pytest.raises(TransitionRefused, match=r"^the ticket is closed; reopen it first$"):
        transition("closed", "resolve")


def test_allowed_actions_per_status() -> None:
    """The actions offered for each status, in a stable order."""
    assert allowed_actions("new") == ("open", "set_pending", "resolve")
    assert allowed_actions("open") == ("set_pending", "resolve")
    assert allowed_actions("pending") == ("resume", "resolve")
    assert allowed_actions("resolved") == ("close", "reopen")
    assert allowed_actions("closed") == ("reopen",)


def test_unknown_status_and_action_are_refused() -> None:
    """Words outside the table are refused with their own codes, not KeyError."""
    with pytest.raises(TransitionRefused) as raised:
        transition("archived", "open", ticket=3)
    assert raised.value.code == "unknown_status"
    assert "T-3 has the unknown status 'archived'" in raised.value.message
    with pytest.raises(TransitionRefused) as raised:
        allowed_actions("Open")
    assert raised.value.code == "unknown_status"
    with pytest.raises(TransitionRefused) as raised:
        transition("open", "delete")
    assert raised.value.code == "unknown_action"
    assert "actions are open, set_pending" in raised.value.message


def test_open_statuses() -> None:
    """New, open and pending tickets are worked; resolved and closed are not."""
    assert {"new", "open", "pending"} == OPEN_STATUSES
    assert [is_open_status(status) for status in STATUSES] == [True, True, True, False, False]
    assert not is_open_status("archived")


@pytest.mark.parametrize(("source", "target"), list(itertools.product(LEVELS, LEVELS)))
def test_escalate_every_level_pair(source: int, target: int) -> None:
    """Escalation is allowed exactly upward, and records the stripped reason."""
    if target > source:
        change = escalate(source, target, "  needs root access \n")
        assert change == LevelChange("escalate", source, target, "needs root access")
        check_escalation(source, target)
        return
    with pytest.raises(LevelChangeRefused) as raised:
        escalate(source, target, "why", ticket=9)
    assert raised.value.code == ("top_level" if source == 3 else "not_upward")
    assert raised.value.message.startswith(f"ticket T-9 is at level {source}")


@pytest.mark.parametrize(("source", "target"), list(itertools.product(LEVELS, LEVELS)))
def test_hand_back_every_level_pair(source: int, target: int) -> None:
    """Hand-back is allowed exactly downward, and records the stripped reason."""
    if target < source:
        change = hand_back(source, target, "\tknown issue, see KB-12 ")
        assert change == LevelChange("hand_back", source, target, "known issue, see KB-12")
        check_hand_back(source, target)
        return
    with pytest.raises(LevelChangeRefused) as raised:
        hand_back(source, target, "why")
    assert raised.value.code == ("bottom_level" if source == 1 else "not_downward")
    assert raised.value.message.startswith(f"the ticket is at level {source}")


@pytest.mark.parametrize("level", [0, 4, -1, True, 2.0, "2", None])
def test_levels_outside_one_to_three_are_refused(level: object) -> None:
    """Levels must be the integers 1, 2 or 3, on either side of a change."""
    bad = cast(int, level)
    for change in (escalate, hand_back):
        with pytest.raises(LevelChangeRefused) as raised:
            change(bad, 2, "reason")
        assert raised.value.code == "bad_level"
        assert "current level must be 1, 2 or 3" in raised.value.message
        with pytest.raises(LevelChangeRefused) as raised:
            change(2, bad, "reason")
        assert raised.value.code == "bad_level"
        assert "target level" in raised.value.message


@pytest.mark.parametrize("reason", ["", "   ", "\n\t", cast(str, None)])
def test_level_change_needs_a_reason(reason: str) -> None:
    """A blank or missing reason is refused for both escalation and hand-back."""
    with pytest.raises(LevelChangeRefused, match="say why you escalate") as raised:
        escalate(1, 2, reason)
    assert raised.value.code == "reason_required"
    with pytest.raises(LevelChangeRefused, match="say why you hand it back"):
        hand_back(2, 1, reason)


def test_reason_length_limit() -> None:
    """A reason of 2000 characters is kept; 2001 are refused with a pointer to notes."""
    assert escalate(1, 3, "x" * REASON_MAX_LEN).reason == "x" * REASON_MAX_LEN
    assert escalate(1, 3, " " + "x" * REASON_MAX_LEN + " ").reason == "x" * REASON_MAX_LEN
    with pytest.raises(LevelChangeRefused, match="2001 characters long") as raised:
        hand_back(3, 1, "x" * (REASON_MAX_LEN + 1))
    assert raised.value.code == "reason_too_long"


def test_error_tree() -> None:
    """Level-change refusals are transition refusals, which are rules errors and ValueErrors."""
    assert issubclass(LevelChangeRefused, TransitionRefused)
    assert issubclass(TransitionRefused, RulesError)
    assert issubclass(RulesError, ValueError)
    assert RulesError("x").code == "refused"


def test_level_change_reason_is_cleaned_where_it_enters() -> None:
    """C1 controls (CSI, OSC), bidi overrides and line breaks never reach the history."""
    change = escalate(1, 2, " CUPS \x9b2J hangs\x9d0;pwn\x07 \u202eexe.\r\nsee log ")
    assert change.reason == "CUPS 2J hangs0;pwn exe. see log"
    with pytest.raises(LevelChangeRefused) as raised:
        hand_back(2, 1, "\x9b\u202e\x9d")
    assert raised.value.code == "reason_required"
