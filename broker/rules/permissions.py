"""Who may do what: the session rules of PRODUCT.md and the ticket rights, as pure functions.

Each ``may_*`` function takes read-only views of the objects involved and returns
``Allowed`` or ``Refused(code, reason)``; it never raises for a refusal. ``code`` is stable
snake_case (see :data:`REFUSAL_CODES`), ``reason`` a sentence for the person refused that names
the objects and says what to do. Checks run in a fixed order and the first failing one is
reported, so a person sees the most basic problem first. Out-of-scope staff are never told a
ticket's customer, level or assignee: the customer scope is checked before anything about the
ticket itself.

Roles:

- ``level1`` views tickets, creates them at level 1, takes, edits and links agents to
  level-1 tickets, escalates to level 2, resolves its own level-1 tickets, and observes
  sessions.
- ``level2`` / ``level3`` work tickets at or below their level: everything above, plus
  shells on tickets at level 2 or higher, hand-back, and escalation to the next level.
  Level 3 also joins colleagues' live sessions without an invitation.
- ``admin`` views, creates, assigns and links, but does not work tickets: no notes, no
  resolve, no escalation or hand-back, no shell, no joining and no watching of sessions.
  An admin account may still be limited to some customers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from broker.rules.errors import LevelChangeRefused
from broker.rules.names import format_ticket_id, sanitize_display_text
from broker.rules.ticket_states import LEVELS, OPEN_STATUSES, check_escalation, check_hand_back
from broker.rules.views import (
    ROLE_LEVEL,
    ROLES,
    AgentView,
    Allowed,
    Consent,
    Decision,
    LiveSessionView,
    Refused,
    Role,
    StaffView,
    TicketView,
)

__all__ = [
    "REFUSAL_CODES",
    "ROLES",
    "ROLE_LEVEL",
    "SHELL_MIN_LEVEL",
    "AgentView",
    "Allowed",
    "Consent",
    "Decision",
    "LiveSessionView",
    "Refused",
    "Role",
    "StaffView",
    "TicketView",
    "may_assign",
    "may_create_ticket",
    "may_edit_ticket",
    "may_escalate",
    "may_hand_back",
    "may_join_session",
    "may_link_agent",
    "may_observe_session",
    "may_open_session",
    "may_resolve",
    "may_unassign",
    "may_view_ticket",
]

# The lowest ticket level on which a shell may be opened (PRODUCT.md: "escalated to level 2").
SHELL_MIN_LEVEL: Final = 2

REFUSAL_CODES: Final = frozenset(
    {
        "staff_disabled",  # the acting account is disabled
        "customer_scope",  # the acting staff member does not serve the customer
        "admin_no_shell",  # admins get no shell and do not join sessions
        "admin_not_worker",  # admins do not work tickets or watch sessions
        "ticket_not_open",  # the ticket is resolved or closed
        "ticket_not_escalated",  # a shell needs a ticket at level 2 or higher
        "level_too_low",  # the staff member's level is below the ticket's (or the new level)
        "not_assignee",  # the ticket is assigned to someone else
        "not_own_ticket",  # level 1 resolves only tickets it created or holds
        "not_assigned",  # there is no assignee to remove
        "agent_not_linked",  # the agent is not linked to the ticket
        "agent_customer",  # the agent belongs to another customer than the ticket
        "agent_revoked",  # the agent was revoked
        "agent_offline",  # the agent is not connected
        "session_ticket_mismatch",  # the session belongs to another ticket
        "not_invited",  # joining needs level 3 or an invitation from the owner
        "observer_only",  # level 1 watches sessions but never types
        "bad_level",  # a level outside 1-3
        "top_level",  # escalating a level-3 ticket
        "not_upward",  # escalating to the same or a lower level
        "escalate_too_far",  # escalating past the level above one's own
        "bottom_level",  # handing back a level-1 ticket
        "not_downward",  # handing back to the same or a higher level
        "assignee_disabled",  # the proposed assignee's account is disabled
        "assignee_admin",  # admins are not assignees
        "assignee_customer_scope",  # the proposed assignee does not serve the customer
        "assignee_level_too_low",  # the proposed assignee's level is below the ticket's
    }
)


def _show(text: str) -> str:
    """Render a name from a view for a message: views may come from outside systems."""
    return sanitize_display_text(text, 64) or "?"


def _first(*checks: Refused | None) -> Refused | None:
    """Return the first refusal; every check is total, so order alone sets precedence."""
    for refused in checks:
        if refused is not None:
            return refused
    return None


def _active(staff: StaffView) -> Refused | None:
    if not staff.disabled:
        return None
    return Refused(
        "staff_disabled", f"your account {_show(staff.name)} is disabled; ask an admin to enable it"
    )


def _no_admin_shell(staff: StaffView) -> Refused | None:
    if staff.level is not None:
        return None
    return Refused(
        "admin_no_shell",
        "admins do not get a shell by being admin; use a level-2 or level-3 staff account",
    )


def _no_admin_worker(staff: StaffView, doing: str) -> Refused | None:
    if staff.level is not None:
        return None
    return Refused(
        "admin_not_worker",
        f"admins manage tickets and sessions but do not {doing}; use a staff account",
    )


def _scope(staff: StaffView, ticket: TicketView) -> Refused | None:
    if staff.serves(ticket.customer):
        return None
    # The customer is not named: a person outside the scope should not learn it.
    return Refused(
        "customer_scope",
        f"ticket {ticket.ref} belongs to a customer you do not serve; "
        "ask an admin to add that customer to your account",
    )


def _open(ticket: TicketView) -> Refused | None:
    if ticket.status in OPEN_STATUSES:
        return None
    return Refused("ticket_not_open", f"ticket {ticket.ref} is {ticket.status}; reopen it first")


def _level_fits(staff: StaffView, ticket: TicketView) -> Refused | None:
    if staff.level is None or staff.level >= ticket.level:
        return None
    return Refused(
        "level_too_low",
        f"ticket {ticket.ref} is at level {ticket.level} and you work at level {staff.level}; "
        f"level-{ticket.level} staff handle it",
    )


def _holder(staff: StaffView, ticket: TicketView, *, may_take: bool = True) -> Decision:
    """Allow the assignee; allow and assign an unassigned ticket; refuse anyone else."""
    if ticket.assignee == staff.name:
        return Allowed()
    if ticket.assignee is None and may_take:
        return Allowed(assign_to_caller=True)
    if ticket.assignee is None:
        return Allowed()
    return Refused(
        "not_assignee",
        f"ticket {ticket.ref} is assigned to {_show(ticket.assignee)}; "
        f"ask {_show(ticket.assignee)}{_reassigners(ticket)} to reassign it",
    )


def _reassigners(ticket: TicketView) -> str:
    """Who else may reassign: admins, and staff above the ticket's level (see may_assign)."""
    if ticket.level < LEVELS[-1]:
        return f", an admin, or staff above level {ticket.level}"
    return " or an admin"


def _agent_usable(ticket: TicketView, agent: AgentView) -> Refused | None:
    return _first(
        _agent_linked(ticket, agent),
        _agent_of_customer(ticket, agent),
        _agent_not_revoked(agent),
        _agent_online(agent),
    )


def _agent_linked(ticket: TicketView, agent: AgentView) -> Refused | None:
    if agent.id in ticket.agent_ids:
        return None
    name = _show(agent.name)
    return Refused(
        "agent_not_linked",
        f"agent {name} is not linked to ticket {ticket.ref}; "
        f"link it first (secondline ticket link {ticket.ref} {name})",
    )


def _agent_of_customer(ticket: TicketView, agent: AgentView) -> Refused | None:
    if agent.customer == ticket.customer:
        return None
    return Refused(
        "agent_customer",
        f"agent {_show(agent.name)} belongs to another customer than ticket {ticket.ref}; "
        "use an agent of the ticket's customer",
    )


def _agent_not_revoked(agent: AgentView) -> Refused | None:
    if not agent.revoked:
        return None
    return Refused(
        "agent_revoked",
        f"agent {_show(agent.name)} was revoked; it must be enrolled again before use",
    )


def _agent_online(agent: AgentView) -> Refused | None:
    if agent.online:
        return None
    return Refused(
        "agent_offline", f"agent {_show(agent.name)} is offline; it must be running and connected"
    )


def _session_of(session: LiveSessionView, ticket: TicketView) -> Refused | None:
    if session.ticket == ticket.id:
        return None
    return Refused(
        "session_ticket_mismatch",
        f"session {_show(session.id)} belongs to ticket {format_ticket_id(session.ticket)}, "
        f"not {ticket.ref}",
    )


def _worker(staff: StaffView, ticket: TicketView, doing: str) -> Refused | None:
    """The checks shared by everything that works a ticket: notes, resolve, level changes."""
    return _first(
        _active(staff),
        _no_admin_worker(staff, doing),
        _scope(staff, ticket),
        _open(ticket),
        _level_fits(staff, ticket),
    )


def may_open_session(
    staff: StaffView, ticket: TicketView, agent: AgentView, now: datetime
) -> Decision:
    """Decide whether ``staff`` may open a shell on ``agent`` for ``ticket``.

    ``now`` is taken for rules with a time limit; none of today's rules has one.
    """
    refused = _first(
        _active(staff),
        _no_admin_shell(staff),
        _scope(staff, ticket),
        _open(ticket),
        _escalated(ticket),
        _level_fits(staff, ticket),
    )
    if refused is not None:
        return refused
    holder = _holder(staff, ticket)
    if isinstance(holder, Refused):
        return holder
    refused = _agent_usable(ticket, agent)
    if refused is not None:
        return refused
    return Allowed(
        assign_to_caller=holder.assign_to_caller, needs_consent=agent.consent == "attended"
    )


def _escalated(ticket: TicketView) -> Refused | None:
    if ticket.level >= SHELL_MIN_LEVEL:
        return None
    return Refused(
        "ticket_not_escalated",
        f"ticket {ticket.ref} is at level {ticket.level}; "
        f"escalate it to level {SHELL_MIN_LEVEL} first",
    )


def may_join_session(
    staff: StaffView,
    ticket: TicketView,
    session: LiveSessionView,
    agent: AgentView,
    now: datetime,
) -> Decision:
    """Decide whether ``staff`` may join ``session`` as a participant who types.

    The owner may rejoin; level 3 with rights on the ticket may join any session; others at
    level 2 or 3 need the owner's invitation. Level 1 only observes. A joiner other than the
    owner on an attended agent needs the end user's consent, as the owner did.
    """
    refused = _first(
        _active(staff),
        _no_admin_shell(staff),
        _session_of(session, ticket),
        _scope(staff, ticket),
        _open(ticket),
    )
    if refused is not None:
        return refused
    is_owner = staff.name == session.owner
    if staff.level == 1:
        return Refused(
            "observer_only",
            f"level-1 staff watch sessions but do not type; observe session {_show(session.id)}",
        )
    level_ok = staff.level is not None and staff.level >= ticket.level
    if not (is_owner or staff.name in session.invited or (staff.level == 3 and level_ok)):
        return Refused(
            "not_invited",
            f"session {_show(session.id)} belongs to {_show(session.owner)}; "
            f"ask {_show(session.owner)} to invite you, or observe it",
        )
    refused = _agent_usable(ticket, agent)
    if refused is not None:
        return refused
    return Allowed(needs_consent=not is_owner and agent.consent == "attended")


def may_observe_session(
    staff: StaffView,
    ticket: TicketView,
    session: LiveSessionView,
    now: datetime,
    *,
    attended: bool = False,
) -> Decision:
    """Decide whether ``staff`` may watch ``session`` read-only (training). An observer
    other than the owner of a session on an attended agent (``attended``) sees the end
    user's screen, so the end user is asked first, as for the owner and joiners."""
    refused = _first(
        _active(staff),
        _no_admin_worker(staff, "watch sessions"),
        _session_of(session, ticket),
        _scope(staff, ticket),
    )
    if refused is not None:
        return refused
    return Allowed(needs_consent=attended and staff.name != session.owner)


def may_view_ticket(staff: StaffView, ticket: TicketView) -> Decision:
    """Decide whether ``staff`` may read ``ticket`` (any level, within the customer scope)."""
    refused = _first(_active(staff), _scope(staff, ticket))
    return Allowed() if refused is None else refused


def may_create_ticket(staff: StaffView, customer: str, *, level: int = 1) -> Decision:
    """Decide whether ``staff`` may create a ticket for ``customer`` at ``level``.

    Staff create at their own level or below; admins (and integrations acting as admin) at
    any level.
    """
    refused = _active(staff)
    if refused is not None:
        return refused
    if not staff.serves(customer):
        return Refused(
            "customer_scope",
            f"you do not serve customer {_show(customer)}; ask an admin to add it to your account",
        )
    if isinstance(level, bool) or level not in LEVELS:
        return Refused("bad_level", f"a ticket level is 1, 2 or 3, not {level!r}")
    if staff.level is not None and level > staff.level:
        return Refused(
            "level_too_low",
            f"you work at level {staff.level} and cannot create a ticket at level {level}; "
            f"create it at level {staff.level} and escalate it",
        )
    return Allowed()


def may_edit_ticket(staff: StaffView, ticket: TicketView) -> Decision:
    """Decide whether ``staff`` may add notes, change the description or link agents.

    Anyone who may work the ticket's level may write on it, assigned or not: colleagues add
    what they know.
    """
    refused = _worker(staff, ticket, "write on tickets")
    return Allowed() if refused is None else refused


def may_escalate(staff: StaffView, ticket: TicketView, to_level: int) -> Decision:
    """Decide whether ``staff`` may escalate ``ticket`` to ``to_level``.

    The worker (assignee, or anyone at the level while unassigned) escalates, at most to the
    level just above their own.
    """
    refused = _worker(staff, ticket, "escalate tickets")
    if refused is not None:
        return refused
    try:
        check_escalation(ticket.level, to_level, ticket=ticket.id)
    except LevelChangeRefused as error:
        return Refused(error.code, error.message)
    # Admins were refused by _worker; the None test only narrows the type.
    if staff.level is not None and to_level > staff.level + 1:
        return Refused(
            "escalate_too_far",
            f"you work at level {staff.level}; escalate ticket {ticket.ref} to level "
            f"{staff.level + 1}, and level {staff.level + 1} escalates further if needed",
        )
    return _holder(staff, ticket, may_take=False)


def may_hand_back(staff: StaffView, ticket: TicketView, to_level: int) -> Decision:
    """Decide whether ``staff`` may hand ``ticket`` back down to ``to_level``."""
    refused = _worker(staff, ticket, "hand tickets back")
    if refused is not None:
        return refused
    try:
        check_hand_back(ticket.level, to_level, ticket=ticket.id)
    except LevelChangeRefused as error:
        return Refused(error.code, error.message)
    return _holder(staff, ticket, may_take=False)


def may_resolve(staff: StaffView, ticket: TicketView) -> Decision:
    """Decide whether ``staff`` may resolve ``ticket``.

    Level 1 resolves its own level-1 tickets: assigned to them, or unassigned and created by
    them. Levels 2 and 3 resolve what they hold, or an unassigned ticket, which assigns it.
    """
    refused = _worker(staff, ticket, "resolve tickets")
    if refused is not None:
        return refused
    if staff.level == 1 and ticket.assignee is None and ticket.created_by != staff.name:
        return Refused(
            "not_own_ticket",
            f"ticket {ticket.ref} is not yours; assign it to yourself first, then resolve it",
        )
    return _holder(staff, ticket)


def may_assign(staff: StaffView, ticket: TicketView, assignee: StaffView) -> Decision:
    """Decide whether ``staff`` may assign ``ticket`` to ``assignee`` (themselves included).

    Admins assign within their customer scope. Staff take an unassigned ticket at or below
    their level, pass on a ticket they hold, and reassign tickets below their own level.
    """
    refused = _first(_active(staff), _scope(staff, ticket), _open(ticket))
    if refused is not None:
        return refused
    refused = _assignee_fits(ticket, assignee)
    if refused is not None:
        return refused
    if staff.level is None:
        return Allowed()
    refused = _level_fits(staff, ticket)
    if refused is not None:
        return refused
    if staff.level > ticket.level:
        return Allowed()
    return _holder(staff, ticket, may_take=False)


def may_unassign(staff: StaffView, ticket: TicketView) -> Decision:
    """Decide whether ``staff`` may put ``ticket`` back in its level's queue, unassigned."""
    refused = _first(_active(staff), _scope(staff, ticket), _open(ticket))
    if refused is not None:
        return refused
    if ticket.assignee is None:
        return Refused("not_assigned", f"ticket {ticket.ref} is not assigned to anyone")
    if staff.level is None:
        return Allowed()
    refused = _level_fits(staff, ticket)
    if refused is not None:
        return refused
    if staff.level > ticket.level:
        return Allowed()
    return _holder(staff, ticket, may_take=False)


def _assignee_fits(ticket: TicketView, assignee: StaffView) -> Refused | None:
    name = _show(assignee.name)
    if assignee.disabled:
        return Refused(
            "assignee_disabled", f"the account {name} is disabled; assign an active colleague"
        )
    if assignee.level is None:
        return Refused(
            "assignee_admin",
            f"{name} is an admin and admins do not work tickets; "
            f"assign level-{ticket.level} staff or above",
        )
    if not assignee.serves(ticket.customer):
        return Refused(
            "assignee_customer_scope",
            f"{name} does not serve the customer of ticket {ticket.ref}; "
            "assign someone who does, or ask an admin to add the customer to their account",
        )
    if assignee.level < ticket.level:
        return Refused(
            "assignee_level_too_low",
            f"ticket {ticket.ref} is at level {ticket.level} and {name} works at level "
            f"{assignee.level}; assign level-{ticket.level} staff or above, or hand it back first",
        )
    return None


def may_link_agent(staff: StaffView, ticket: TicketView, agent: AgentView) -> Decision:
    """Decide whether ``staff`` may link ``agent`` to ``ticket`` (linking twice is harmless)."""
    refused = _first(
        _active(staff),
        _scope(staff, ticket),
        _open(ticket),
        _level_fits(staff, ticket),
        _agent_of_customer(ticket, agent),
        _agent_not_revoked(agent),
    )
    return Allowed() if refused is None else refused
