"""Tests of who may do what: the session rules of PRODUCT.md and the ticket rights."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import cast

import pytest

from broker.rules import (
    LEVELS,
    REFUSAL_CODES,
    ROLES,
    STATUSES,
    AgentView,
    Allowed,
    Consent,
    Decision,
    LiveSessionView,
    Refused,
    Role,
    RulesError,
    StaffView,
    TicketView,
    may_assign,
    may_create_ticket,
    may_edit_ticket,
    may_escalate,
    may_hand_back,
    may_join_session,
    may_link_agent,
    may_observe_session,
    may_open_session,
    may_resolve,
    may_unassign,
    may_view_ticket,
)

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
AGENT_ID = "ag-0123456789abcdef"
OTHER_AGENT_ID = "ag-fedcba9876543210"
SESSION_ID = "s-" + "Ab3" * 7 + "x"
OPEN = ("new", "open", "pending")


def staff(
    name: str = "bob",
    role: Role = "level2",
    *,
    disabled: bool = False,
    customers: frozenset[str] | None = None,
) -> StaffView:
    return StaffView(name=name, role=role, disabled=disabled, customers=customers)


def ticket(
    *,
    status: str = "open",
    level: int = 2,
    customer: str = "acme",
    assignee: str | None = None,
    agent_ids: frozenset[str] = frozenset({AGENT_ID}),
    created_by: str | None = "alice",
) -> TicketView:
    return TicketView(
        id=1042,
        status=status,
        level=level,
        customer=customer,
        assignee=assignee,
        agent_ids=agent_ids,
        created_by=created_by,
    )


def agent(
    *,
    customer: str = "acme",
    online: bool = True,
    revoked: bool = False,
    consent: Consent = "unattended",
) -> AgentView:
    return AgentView(
        id=AGENT_ID,
        name="web01",
        customer=customer,
        online=online,
        revoked=revoked,
        consent=consent,
    )


def session(
    *, ticket_id: int = 1042, owner: str = "carol", invited: frozenset[str] = frozenset()
) -> LiveSessionView:
    return LiveSessionView(id=SESSION_ID, ticket=ticket_id, owner=owner, invited=invited)


def refused(decision: Decision, code: str) -> str:
    """Assert a refusal with ``code`` (a documented one) and return its reason."""
    assert isinstance(decision, Refused), decision
    assert decision.code == code, decision
    assert decision.code in REFUSAL_CODES
    assert decision.reason
    return decision.reason


# ---------------------------------------------------------------- opening a shell

STAFF_CASES = [
    staff(role=role, disabled=disabled, customers=customers)
    for role in ROLES
    for disabled in (False, True)
    for customers in (None, frozenset({"acme"}), frozenset({"globex"}))
]
AGENT_CASES = [
    agent(customer=customer, online=online, revoked=revoked, consent=consent)
    for customer in ("acme", "globex")
    for online in (True, False)
    for revoked in (False, True)
    for consent in ("attended", "unattended")
]


def test_open_session_matches_product_rules_exhaustively() -> None:
    """Over every combination, a shell is allowed exactly when every PRODUCT.md rule holds."""
    seen: set[str] = set()
    for person, status, level, assignee, linked, machine in itertools.product(
        STAFF_CASES, STATUSES, LEVELS, (None, "bob", "carol"), (True, False), AGENT_CASES
    ):
        case = ticket(
            status=status,
            level=level,
            assignee=assignee,
            agent_ids=frozenset({AGENT_ID} if linked else {OTHER_AGENT_ID}),
        )
        decision = may_open_session(person, case, machine, NOW)
        serves = person.customers is None or "acme" in person.customers
        expected = (
            not person.disabled
            and person.role != "admin"
            and serves
            and status in OPEN
            and level >= 2
            and person.level is not None
            and person.level >= level
            and assignee in (None, "bob")
            and linked
            and machine.customer == "acme"
            and machine.online
            and not machine.revoked
        )
        if expected:
            assert decision == Allowed(
                assign_to_caller=assignee is None, needs_consent=machine.consent == "attended"
            )
            continue
        assert isinstance(decision, Refused)
        assert decision.code in REFUSAL_CODES
        seen.add(decision.code)
        if not person.disabled and person.role != "admin" and not serves:
            # Nothing about the ticket reaches someone outside its customer scope.
            assert decision.code == "customer_scope"
            assert "acme" not in decision.reason
    assert seen == {
        "staff_disabled",
        "admin_no_shell",
        "customer_scope",
        "ticket_not_open",
        "ticket_not_escalated",
        "level_too_low",
        "not_assignee",
        "agent_not_linked",
        "agent_customer",
        "agent_revoked",
        "agent_offline",
    }


def test_open_session_reasons_name_objects_and_next_step() -> None:
    """Each refusal of a shell reads as a sentence naming the ticket, person or agent."""
    assert refused(
        may_open_session(staff(), ticket(level=1), agent(), NOW), "ticket_not_escalated"
    ) == ("ticket T-1042 is at level 1; escalate it to level 2 first")
    assert refused(
        may_open_session(staff(), ticket(assignee="carol"), agent(), NOW), "not_assignee"
    ) == (
        "ticket T-1042 is assigned to carol; "
        "ask carol, an admin, or staff above level 2 to reassign it"
    )
    assert refused(
        may_open_session(staff(), ticket(assignee="carol", level=3), agent(), NOW),
        "level_too_low",
    ) == ("ticket T-1042 is at level 3 and you work at level 2; level-3 staff handle it")
    assert refused(
        may_open_session(staff(role="level3"), ticket(assignee="carol", level=3), agent(), NOW),
        "not_assignee",
    ).endswith("ask carol or an admin to reassign it")
    assert refused(
        may_open_session(staff(), ticket(), agent(online=False), NOW), "agent_offline"
    ) == ("agent web01 is offline; it must be running and connected")
    assert "revoked" in refused(
        may_open_session(staff(), ticket(), agent(revoked=True, online=False), NOW),
        "agent_revoked",
    )
    assert refused(
        may_open_session(staff(), ticket(agent_ids=frozenset()), agent(), NOW),
        "agent_not_linked",
    ) == (
        "agent web01 is not linked to ticket T-1042; "
        "link it first (secondline ticket link T-1042 web01)"
    )
    assert "globex" not in refused(
        may_open_session(staff(), ticket(), agent(customer="globex"), NOW), "agent_customer"
    )
    assert refused(
        may_open_session(staff(), ticket(status="closed"), agent(), NOW), "ticket_not_open"
    ) == ("ticket T-1042 is closed; reopen it first")
    assert "disabled" in refused(
        may_open_session(staff(disabled=True), ticket(), agent(), NOW), "staff_disabled"
    )
    assert "level-2 or level-3 staff account" in refused(
        may_open_session(staff(role="admin"), ticket(), agent(), NOW), "admin_no_shell"
    )


def test_open_session_flags() -> None:
    """An unassigned ticket is assigned to the caller; an attended agent asks the end user."""
    assert may_open_session(staff(), ticket(), agent(), NOW) == Allowed(assign_to_caller=True)
    assert may_open_session(staff(), ticket(assignee="bob"), agent(), NOW) == Allowed()
    assert may_open_session(
        staff(role="level3"), ticket(assignee="bob"), agent(consent="attended"), NOW
    ) == Allowed(needs_consent=True)


def test_names_in_reasons_are_sanitised() -> None:
    """Names from outside systems reach a reason (and so a terminal) without controls."""
    hostile = ticket(assignee="eve\x1b]0;pwned\x07\u202e")
    reason = refused(may_open_session(staff(), hostile, agent(), NOW), "not_assignee")
    assert "\x1b" not in reason
    assert "\u202e" not in reason
    assert "eve]0;pwned" in reason
    blank = ticket(assignee="\x00")
    assert "assigned to ?" in refused(
        may_open_session(staff(), blank, agent(), NOW), "not_assignee"
    )


# ---------------------------------------------------------------- joining and observing

JOIN_AGENTS = [
    agent(consent="attended"),
    agent(),
    agent(customer="globex"),
    agent(online=False),
    agent(revoked=True),
]


def test_join_session_matches_product_rules_exhaustively() -> None:
    """Joining needs the owner, an invitation, or level 3 with ticket rights, and a usable agent."""
    seen: set[str] = set()
    for person, status, level, linked, live, machine in itertools.product(
        STAFF_CASES,
        STATUSES,
        LEVELS,
        (True, False),
        [
            session(ticket_id=tid, owner=owner, invited=invited)
            for tid in (1042, 7)
            for owner in ("bob", "carol")
            for invited in (frozenset(), frozenset({"bob"}))
        ],
        JOIN_AGENTS,
    ):
        case = ticket(status=status, level=level, agent_ids=frozenset({AGENT_ID} if linked else ()))
        decision = may_join_session(person, case, live, machine, NOW)
        is_owner = live.owner == "bob"
        expected = (
            not person.disabled
            and person.role in ("level2", "level3")
            and live.ticket == 1042
            and (person.customers is None or "acme" in person.customers)
            and status in OPEN
            and (
                is_owner
                or "bob" in live.invited
                or (person.role == "level3" and person.level is not None and person.level >= level)
            )
            and linked
            and machine.customer == "acme"
            and machine.online
            and not machine.revoked
        )
        if expected:
            assert decision == Allowed(needs_consent=machine.consent == "attended" and not is_owner)
        else:
            assert isinstance(decision, Refused)
            assert decision.code in REFUSAL_CODES
            seen.add(decision.code)
    assert {"observer_only", "not_invited", "session_ticket_mismatch", "admin_no_shell"} <= seen


def test_join_session_reasons() -> None:
    """Refused joiners are told whom to ask, or to observe instead."""
    assert refused(may_join_session(staff(), ticket(), session(), agent(), NOW), "not_invited") == (
        f"session {SESSION_ID} belongs to carol; ask carol to invite you, or observe it"
    )
    assert "observe session" in refused(
        may_join_session(staff(role="level1"), ticket(), session(), agent(), NOW),
        "observer_only",
    )
    assert refused(
        may_join_session(staff(), ticket(), session(ticket_id=7), agent(), NOW),
        "session_ticket_mismatch",
    ) == (f"session {SESSION_ID} belongs to ticket T-7, not T-1042")
    invited = session(invited=frozenset({"bob"}))
    assert may_join_session(staff(), ticket(level=3), invited, agent(), NOW) == Allowed()
    assert may_join_session(staff(role="level3"), ticket(level=3), session(), agent(), NOW) == (
        Allowed()
    )


def test_observe_session() -> None:
    """Level 1 and up may watch sessions of tickets they may view; admins and outsiders may not."""
    for role in ("level1", "level2", "level3"):
        assert may_observe_session(staff(role=role), ticket(level=3), session(), NOW) == Allowed()
    assert "do not watch sessions" in refused(
        may_observe_session(staff(role="admin"), ticket(), session(), NOW), "admin_not_worker"
    )
    refused(
        may_observe_session(staff(role="level1", disabled=True), ticket(), session(), NOW),
        "staff_disabled",
    )
    refused(
        may_observe_session(staff(customers=frozenset()), ticket(), session(), NOW),
        "customer_scope",
    )
    refused(
        may_observe_session(staff(), ticket(), session(ticket_id=5), NOW),
        "session_ticket_mismatch",
    )


# ---------------------------------------------------------------- ticket rights


def test_view_ticket() -> None:
    """Anyone active within the customer scope views a ticket, admins included, at any level."""
    for role in ROLES:
        assert may_view_ticket(staff(role=role), ticket(level=3, status="closed")) == Allowed()
    refused(may_view_ticket(staff(disabled=True), ticket()), "staff_disabled")
    reason = refused(
        may_view_ticket(staff(role="admin", customers=frozenset({"globex"})), ticket()),
        "customer_scope",
    )
    assert reason == (
        "ticket T-1042 belongs to a customer you do not serve; "
        "ask an admin to add that customer to your account"
    )


def test_create_ticket() -> None:
    """Staff create tickets at or below their level for their customers; admins at any level."""
    assert may_create_ticket(staff(role="level1"), "acme") == Allowed()
    assert may_create_ticket(staff(role="admin"), "acme", level=3) == Allowed()
    assert may_create_ticket(staff(role="level2"), "acme", level=2) == Allowed()
    assert refused(may_create_ticket(staff(role="level1"), "acme", level=2), "level_too_low") == (
        "you work at level 1 and cannot create a ticket at level 2; "
        "create it at level 1 and escalate it"
    )
    assert refused(
        may_create_ticket(staff(customers=frozenset({"acme"})), "globex"), "customer_scope"
    ) == ("you do not serve customer globex; ask an admin to add it to your account")
    refused(may_create_ticket(staff(disabled=True), "acme"), "staff_disabled")
    for level in (0, 4, True):
        refused(may_create_ticket(staff(role="admin"), "acme", level=level), "bad_level")


def test_edit_ticket() -> None:
    """Workers at or above the ticket's level write on open tickets, assigned to them or not."""
    assert may_edit_ticket(staff(role="level1"), ticket(level=1)) == Allowed()
    assert may_edit_ticket(staff(), ticket(level=1, assignee="carol")) == Allowed()
    assert may_edit_ticket(staff(role="level3"), ticket(level=2)) == Allowed()
    refused(may_edit_ticket(staff(role="level1"), ticket(level=2)), "level_too_low")
    refused(may_edit_ticket(staff(), ticket(status="resolved")), "ticket_not_open")
    assert "do not write on tickets" in refused(
        may_edit_ticket(staff(role="admin"), ticket()), "admin_not_worker"
    )
    refused(may_edit_ticket(staff(disabled=True, role="admin"), ticket()), "staff_disabled")
    refused(may_edit_ticket(staff(customers=frozenset()), ticket()), "customer_scope")


def test_escalate() -> None:
    """The worker escalates upward, at most to the level above their own."""
    assert may_escalate(staff(role="level1"), ticket(level=1), 2) == Allowed()
    assert may_escalate(staff(role="level1"), ticket(level=1, assignee="bob"), 2) == Allowed()
    assert may_escalate(staff(), ticket(level=2), 3) == Allowed()
    assert may_escalate(staff(), ticket(level=1), 3) == Allowed()
    assert refused(may_escalate(staff(role="level1"), ticket(level=1), 3), "escalate_too_far") == (
        "you work at level 1; escalate ticket T-1042 to level 2, "
        "and level 2 escalates further if needed"
    )
    refused(may_escalate(staff(role="level3"), ticket(level=3), 3), "top_level")
    refused(may_escalate(staff(), ticket(level=2), 1), "not_upward")
    refused(may_escalate(staff(), ticket(level=2), 4), "bad_level")
    refused(may_escalate(staff(), ticket(level=2, assignee="carol"), 3), "not_assignee")
    refused(may_escalate(staff(role="level1"), ticket(level=2), 3), "level_too_low")
    refused(may_escalate(staff(role="admin"), ticket(), 3), "admin_not_worker")
    refused(may_escalate(staff(), ticket(status="closed"), 3), "ticket_not_open")


def test_hand_back() -> None:
    """The worker hands a ticket back downward; level 1 has nothing to hand back."""
    assert may_hand_back(staff(), ticket(level=2), 1) == Allowed()
    assert may_hand_back(staff(role="level3"), ticket(level=3, assignee="bob"), 1) == Allowed()
    refused(may_hand_back(staff(), ticket(level=2), 2), "not_downward")
    refused(may_hand_back(staff(role="level1"), ticket(level=1), 1), "bottom_level")
    refused(may_hand_back(staff(), ticket(level=2), 0), "bad_level")
    refused(may_hand_back(staff(), ticket(level=2, assignee="carol"), 1), "not_assignee")
    refused(may_hand_back(staff(), ticket(level=3), 1), "level_too_low")
    refused(may_hand_back(staff(role="admin"), ticket(), 1), "admin_not_worker")


def test_resolve() -> None:
    """Level 1 resolves its own level-1 tickets; levels 2 and 3 resolve what they hold or take."""
    mine = ticket(level=1, created_by="bob")
    assert may_resolve(staff(role="level1"), mine) == Allowed(assign_to_caller=True)
    assert may_resolve(staff(role="level1"), replace(mine, assignee="bob")) == Allowed()
    held = ticket(level=1, created_by="alice", assignee="bob")
    assert may_resolve(staff(role="level1"), held) == Allowed()
    assert refused(
        may_resolve(staff(role="level1"), ticket(level=1, created_by="alice")), "not_own_ticket"
    ) == ("ticket T-1042 is not yours; assign it to yourself first, then resolve it")
    refused(may_resolve(staff(role="level1"), ticket(level=1, created_by=None)), "not_own_ticket")
    refused(may_resolve(staff(role="level1"), replace(mine, assignee="carol")), "not_assignee")
    refused(may_resolve(staff(role="level1"), ticket(level=2, created_by="bob")), "level_too_low")
    assert may_resolve(staff(), ticket()) == Allowed(assign_to_caller=True)
    assert may_resolve(staff(role="level3"), ticket(level=1, assignee="bob")) == Allowed()
    refused(may_resolve(staff(), ticket(assignee="carol")), "not_assignee")
    refused(may_resolve(staff(role="admin"), ticket()), "admin_not_worker")
    refused(may_resolve(staff(), ticket(status="resolved")), "ticket_not_open")


def test_assign_as_admin() -> None:
    """Admins assign any open ticket in their scope to a fitting, active staff member."""
    admin = staff("root", role="admin")
    carol = staff("carol")
    assert may_assign(admin, ticket(assignee="dave"), carol) == Allowed()
    refused(may_assign(admin, ticket(status="closed"), carol), "ticket_not_open")
    refused(may_assign(replace(admin, disabled=True), ticket(), carol), "staff_disabled")
    refused(
        may_assign(replace(admin, customers=frozenset({"globex"})), ticket(), carol),
        "customer_scope",
    )


def test_assign_checks_the_assignee() -> None:
    """The assignee must be active, not an admin, serve the customer and work the level."""
    admin = staff("root", role="admin")
    assert "disabled" in refused(
        may_assign(admin, ticket(), staff("carol", disabled=True)), "assignee_disabled"
    )
    assert "admins do not work tickets" in refused(
        may_assign(admin, ticket(), staff("root2", role="admin")), "assignee_admin"
    )
    refused(
        may_assign(admin, ticket(), staff("carol", customers=frozenset({"globex"}))),
        "assignee_customer_scope",
    )
    assert refused(
        may_assign(admin, ticket(level=3), staff("carol")), "assignee_level_too_low"
    ) == (
        "ticket T-1042 is at level 3 and carol works at level 2; "
        "assign level-3 staff or above, or hand it back first"
    )


def test_assign_as_staff() -> None:
    """Staff take unassigned tickets, pass on what they hold, and reassign below their level."""
    bob = staff()
    carol = staff("carol")
    assert may_assign(bob, ticket(), bob) == Allowed()
    assert may_assign(bob, ticket(level=1), bob) == Allowed()
    assert may_assign(bob, ticket(assignee="bob"), carol) == Allowed()
    assert may_assign(bob, ticket(), carol) == Allowed()
    assert may_assign(bob, ticket(level=1, assignee="dave"), carol) == Allowed()
    assert "ask dave, an admin" in refused(
        may_assign(bob, ticket(assignee="dave"), bob), "not_assignee"
    )
    refused(may_assign(staff("lee", role="level1"), ticket(), carol), "level_too_low")


def test_unassign() -> None:
    """The holder, an admin, or staff above the ticket's level put a ticket back in the queue."""
    held = ticket(assignee="carol")
    assert may_unassign(staff("carol"), held) == Allowed()
    assert may_unassign(staff(role="admin"), held) == Allowed()
    assert may_unassign(staff(role="level3"), held) == Allowed()
    refused(may_unassign(staff(), held), "not_assignee")
    refused(may_unassign(staff(role="level1"), held), "level_too_low")
    assert refused(may_unassign(staff(), ticket()), "not_assigned") == (
        "ticket T-1042 is not assigned to anyone"
    )
    refused(may_unassign(staff(), ticket(status="closed", assignee="bob")), "ticket_not_open")


def test_link_agent() -> None:
    """Admins and workers link an agent of the ticket's customer that is not revoked."""
    assert may_link_agent(staff(role="admin"), ticket(level=3), agent()) == Allowed()
    assert may_link_agent(staff(role="level1"), ticket(level=1), agent(online=False)) == Allowed()
    assert may_link_agent(staff(), ticket(assignee="carol"), agent()) == Allowed()
    refused(may_link_agent(staff(role="level1"), ticket(level=2), agent()), "level_too_low")
    refused(may_link_agent(staff(), ticket(), agent(customer="globex")), "agent_customer")
    refused(may_link_agent(staff(), ticket(), agent(revoked=True)), "agent_revoked")
    refused(may_link_agent(staff(), ticket(status="resolved"), agent()), "ticket_not_open")
    refused(may_link_agent(staff(customers=frozenset()), ticket(), agent()), "customer_scope")
    refused(may_link_agent(staff(disabled=True), ticket(), agent()), "staff_disabled")


def test_every_refusal_code_is_reachable() -> None:
    """Over a grid of cases, the decisions produce every documented code and nothing else."""
    seen: set[str] = set()
    assignees = [staff("carol"), staff("dave", role="level1"), staff("root2", role="admin")]
    assignees += [staff("erin", disabled=True), staff("finn", customers=frozenset())]
    for person, status, level, holder, creator in itertools.product(
        STAFF_CASES, STATUSES, LEVELS, (None, "bob", "carol"), ("bob", "alice")
    ):
        case = ticket(status=status, level=level, assignee=holder, created_by=creator)
        decisions: list[Decision] = [
            may_open_session(person, case, agent(), NOW),
            may_join_session(person, case, session(), agent(), NOW),
            may_observe_session(person, case, session(ticket_id=7), NOW),
            may_view_ticket(person, case),
            may_create_ticket(person, "acme", level=level + 1),
            may_edit_ticket(person, case),
            may_resolve(person, case),
            may_unassign(person, case),
            may_link_agent(person, case, agent(revoked=True)),
        ]
        decisions += [may_escalate(person, case, to) for to in range(5)]
        decisions += [may_hand_back(person, case, to) for to in range(5)]
        decisions += [may_assign(person, case, other) for other in assignees]
        for decision in decisions:
            if isinstance(decision, Refused):
                assert decision.reason
                seen.add(decision.code)
    for machine in AGENT_CASES:
        decision = may_open_session(staff(), ticket(agent_ids=frozenset()), machine, NOW)
        seen.add(cast(Refused, decision).code)
        decision = may_open_session(staff(), ticket(), machine, NOW)
        if isinstance(decision, Refused):
            seen.add(decision.code)
    assert seen == REFUSAL_CODES


# ---------------------------------------------------------------- views


def test_views_refuse_unknown_closed_values() -> None:
    """A view built from a bad row fails with RulesError(code=invalid_view)."""
    builders: list[Callable[[], object]] = [
        lambda: staff(role=cast(Role, "superuser")),
        lambda: ticket(status="archived"),
        lambda: ticket(level=4),
        lambda: ticket(level=cast(int, True)),
        lambda: replace(ticket(), id=0),
        lambda: replace(ticket(), id=cast(int, "1042")),
        lambda: agent(consent=cast(Consent, "sometimes")),
        lambda: session(ticket_id=0),
    ]
    for build in builders:
        with pytest.raises(RulesError) as raised:
            build()
        assert raised.value.code == "invalid_view"


def test_staff_view_levels_and_scope() -> None:
    """Roles map to levels 1-3 and admins to None; None customers means all customers."""
    assert [staff(role=role).level for role in ROLES] == [1, 2, 3, None]
    assert staff().serves("anything")
    assert staff(customers=frozenset({"acme"})).serves("acme")
    assert not staff(customers=frozenset({"acme"})).serves("globex")
    assert ticket().ref == "T-1042"
