"""Errors of the ticket store.

TicketError             root; a :class:`broker.errors.BrokerError`, so the API renders it
├── TicketInputError    a title, text, level, name or attachment is malformed or too big
│                       (400, 413 for sizes, 422, 429 for the help-request rate limit)
├── TicketNotFound      no such ticket, or one the caller may not know of (404)
├── TicketRefused       a rule of ``broker.rules.permissions`` refused; carries its code (403)
└── TicketConflict      the ticket is in the wrong state for the change, or changed
                        meanwhile (409)

Every message says what is wrong and what to do; none names another customer.
"""

from __future__ import annotations

from broker.errors import BrokerError
from broker.rules import Refused, format_ticket_id


class TicketError(BrokerError):
    """Root of every error the ticket store raises on purpose."""

    code = "ticket_error"
    http_status = 500


class TicketInputError(TicketError):
    """Something the caller sent cannot be stored as it is."""

    code = "invalid_input"
    http_status = 400

    def __init__(self, message: str, *, code: str | None = None, status: int = 400) -> None:
        super().__init__(message, code=code)
        self.http_status = status


class TicketNotFound(TicketError):
    """The ticket does not exist, or the caller may not learn that it does."""

    code = "not_found"
    http_status = 404

    def __init__(self, ticket: int | str) -> None:
        ref = format_ticket_id(ticket) if isinstance(ticket, int) else ticket
        # One sentence for "unknown" and "another customer's", so neither can be told apart.
        super().__init__(
            f"there is no ticket {ref} that you may see; check the id with `secondline ticket list`"
        )


class TicketRefused(TicketError):
    """A permission rule refused the action; ``refused`` is the rule's answer."""

    code = "forbidden"
    http_status = 403

    def __init__(self, refused: Refused) -> None:
        super().__init__(refused.reason, code=refused.code)
        self.refused = refused


class TicketConflict(TicketError):
    """The ticket's state does not allow the change, or it changed under the caller."""

    code = "conflict"
    http_status = 409
