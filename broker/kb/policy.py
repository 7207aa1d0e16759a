"""Who may do what in the knowledge base (pure), in the shape of ``broker.rules.permissions``.

- Everyone signed in reads published articles; drafts and retired articles are for level 2,
  level 3 and admins (level 1 answers callers from reviewed text only), except that level 1
  reads the drafts it wrote itself.
- Levels 1-3 write drafts (level 1 writes down what it learned); only level 2 and 3 publish,
  edit a published article, retire and reopen, since publishing is the review.
- Levels 1-3 mark "this solved it" on a ticket they may see.
- Admins read everything but do not write articles: they do not work tickets.

Articles are shared across customers (the point is to solve the same problem at the next
customer); the tickets and sessions an article came from are shown only to staff who serve
that ticket's customer.
"""

from __future__ import annotations

from typing import Final

from broker.rules.views import Allowed, Decision, Refused, StaffView

REFUSAL_CODES: Final = frozenset(
    {
        "staff_disabled",
        "admin_not_author",  # admins read the knowledge base but do not write it
        "level_too_low_to_publish",  # level 1 writes drafts; level 2 or 3 publishes
        "level_too_low_to_edit_published",  # level 1 edits drafts only
        "not_visible",  # level 1 sees published articles only
        "customer_scope",  # the ticket belongs to a customer the caller does not serve
    }
)


def _active(staff: StaffView) -> Refused | None:
    if staff.disabled:
        return Refused("staff_disabled", "your account is disabled; ask an admin to enable it")
    return None


def may_read(staff: StaffView, status: str, author: str | None = None) -> Decision:
    """Decide whether ``staff`` may read an article in ``status`` written by ``author``."""
    refused = _active(staff)
    if refused is not None:
        return refused
    if status == "published" or staff.level is None or staff.level >= 2:
        return Allowed()
    if status == "draft" and author == staff.name:
        return Allowed()
    return Refused("not_visible", "level-1 staff see published articles and their own drafts only")


def may_write(staff: StaffView, status: str) -> Decision:
    """Decide whether ``staff`` may create a draft or save an article in ``status``."""
    refused = _active(staff)
    if refused is not None:
        return refused
    if staff.level is None:
        return Refused(
            "admin_not_author",
            "admins read the knowledge base but do not write it; use a staff account",
        )
    if status != "draft" and staff.level < 2:
        return Refused(
            "level_too_low_to_edit_published",
            "level-1 staff edit drafts; ask level 2 to change a published article, "
            "or write your addition into a new draft",
        )
    return Allowed()


def may_change_status(staff: StaffView, action: str) -> Decision:
    """Decide whether ``staff`` may publish, retire or reopen an article."""
    refused = _active(staff)
    if refused is not None:
        return refused
    if staff.level is None:
        return Refused(
            "admin_not_author",
            f"admins do not {action} articles; a level-2 or level-3 staff member does",
        )
    if staff.level < 2:
        return Refused(
            "level_too_low_to_publish",
            f"level-1 staff do not {action} articles; ask a level-2 or level-3 colleague "
            "to review and do it",
        )
    return Allowed()


def may_mark_solved(staff: StaffView, customer: str) -> Decision:
    """Decide whether ``staff`` may record that an article solved a ticket of ``customer``."""
    refused = _active(staff)
    if refused is not None:
        return refused
    if staff.level is None:
        return Refused("admin_not_author", "admins do not work tickets; use a staff account")
    if not staff.serves(customer):
        return Refused(
            "customer_scope",
            "the ticket belongs to a customer you do not serve; ask an admin to add it",
        )
    return Allowed()


def sees_customer(staff: StaffView, customer: str) -> bool:
    """Tell whether the tickets and sessions of ``customer`` may be shown to ``staff``."""
    return not staff.disabled and staff.serves(customer)
