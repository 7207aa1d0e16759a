"""Errors of the session machinery.

SessionError                root; a :class:`broker.errors.BrokerError`
├── SessionRefused          a rule, the end user, a limit or a store says no (403 unless said);
│   │                       ``code`` is stable snake_case, the message is shown to the staff
│   │                       member as it is (SSH stderr, console, API)
│   ├── ConsentRefused      the end user denied the session or did not answer in time
│   └── StoreUnavailable    the database (audit store) or the transcript store is down (503):
│                           no session runs without its row, its recorder and its audit trail
├── SessionNotFound         no such session, or the caller may not know it (404)
└── SessionConflict         the session is not in a state that allows this (409)
"""

from __future__ import annotations

from typing import Final

from sqlalchemy.exc import SQLAlchemyError

from broker.errors import BrokerError

#: What a session step's database work raises when the store cannot be reached: the step
#: then refuses or ends with AUDIT_STORE_UNAVAILABLE (nothing runs unrecorded).
DB_ERRORS: Final = (SQLAlchemyError, OSError)


class SessionError(BrokerError):
    """Root of every error the session machinery raises on purpose."""

    code = "session_error"
    http_status = 500


class SessionRefused(SessionError):
    """The session may not start or be attached; the message says why and what to do."""

    code = "session_refused"
    http_status = 403

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message, code=code)
        if status is not None:
            self.http_status = status


class ConsentRefused(SessionRefused):
    """The end user denied the session, or nobody answered before the deadline."""

    code = "consent_denied"


class StoreUnavailable(SessionRefused):
    """A store every session needs is down; nothing starts without it."""

    code = "store_unavailable"
    http_status = 503


class SessionNotFound(SessionError):
    """There is no such session, or the caller has no right to know of it."""

    code = "session_not_found"
    http_status = 404


class SessionConflict(SessionError):
    """The session is in a state that does not allow the action."""

    code = "session_conflict"
    http_status = 409


AUDIT_STORE_UNAVAILABLE = (
    "audit store unavailable: the broker cannot reach its database, and no session runs "
    "without its audit trail; try again shortly, and tell an admin if it lasts"
)
