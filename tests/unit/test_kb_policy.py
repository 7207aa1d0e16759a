"""Who may read, write, publish and mark solutions in the knowledge base (pure)."""

from __future__ import annotations

import pytest

from broker.kb.policy import (
    REFUSAL_CODES,
    may_change_status,
    may_mark_solved,
    may_read,
    may_write,
    sees_customer,
)
from broker.rules.views import Allowed, Refused, Role, StaffView


def staff(role: Role, *, disabled: bool = False, customers: set[str] | None = None) -> StaffView:
    return StaffView("sam", role, disabled, frozenset(customers) if customers else None)


def code(decision: Allowed | Refused) -> str:
    return "ok" if isinstance(decision, Allowed) else decision.code


@pytest.mark.parametrize(
    ("role", "status", "expected"),
    [
        ("level1", "published", "ok"),
        ("level1", "draft", "not_visible"),
        ("level1", "retired", "not_visible"),
        ("level2", "draft", "ok"),
        ("level3", "retired", "ok"),
        ("admin", "draft", "ok"),
    ],
)
def test_may_read(role: Role, status: str, expected: str) -> None:
    """Level 1 reads published articles only; everyone else reads every status."""
    assert code(may_read(staff(role), status)) == expected


def test_level1_reads_own_drafts() -> None:
    """Level 1 reads a draft it wrote, not a colleague's."""
    assert code(may_read(staff("level1"), "draft", "sam")) == "ok"
    assert code(may_read(staff("level1"), "draft", "kim")) == "not_visible"
    assert code(may_read(staff("level1"), "retired", "sam")) == "not_visible"


@pytest.mark.parametrize(
    ("role", "status", "expected"),
    [
        ("level1", "draft", "ok"),
        ("level1", "published", "level_too_low_to_edit_published"),
        ("level2", "published", "ok"),
        ("level3", "draft", "ok"),
        ("admin", "draft", "admin_not_author"),
    ],
)
def test_may_write(role: Role, status: str, expected: str) -> None:
    """Levels 1-3 write drafts; only 2 and 3 edit published ones; admins write nothing."""
    assert code(may_write(staff(role), status)) == expected


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        ("level1", "level_too_low_to_publish"),
        ("level2", "ok"),
        ("level3", "ok"),
        ("admin", "admin_not_author"),
    ],
)
def test_may_change_status(role: Role, expected: str) -> None:
    """Only level 2 and 3 publish, retire and reopen."""
    assert code(may_change_status(staff(role), "publish")) == expected


def test_may_mark_solved() -> None:
    """Levels 1-3 mark solutions on tickets of customers they serve; admins do not."""
    assert code(may_mark_solved(staff("level1", customers={"acme"}), "acme")) == "ok"
    assert code(may_mark_solved(staff("level1", customers={"acme"}), "globex")) == (
        "customer_scope"
    )
    assert code(may_mark_solved(staff("admin"), "acme")) == "admin_not_author"


def test_disabled_staff_do_nothing() -> None:
    """A disabled account is refused everything and sees no customer."""
    gone = staff("level3", disabled=True)
    for decision in (
        may_read(gone, "published"),
        may_write(gone, "draft"),
        may_change_status(gone, "publish"),
        may_mark_solved(gone, "acme"),
    ):
        assert code(decision) == "staff_disabled"
    assert not sees_customer(gone, "acme")


def test_sees_customer_and_codes() -> None:
    """Sources show to staff serving the customer; every refusal code is declared."""
    assert sees_customer(staff("level1"), "acme")
    assert not sees_customer(staff("level1", customers={"x"}), "acme")
    assert {
        "staff_disabled",
        "admin_not_author",
        "level_too_low_to_publish",
        "level_too_low_to_edit_published",
        "not_visible",
        "customer_scope",
    } == REFUSAL_CODES
