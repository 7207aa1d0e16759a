"""Errors of the decision core.

RulesError              root; a ``ValueError``, because each one means an input value was refused;
│                       raised as itself (code ``invalid_view``) when a view is built from a bad row
├── InvalidName         a name, id or label does not match its strict syntax
└── TransitionRefused   a ticket status change is not in the table
    └── LevelChangeRefused   an escalation or hand-back is not allowed

Every error carries ``code`` (stable snake_case, for the API and the audit log) and a message
written for the person who reads it: what is wrong and what to do. Permission checks do not
raise: they return ``Refused`` (see ``permissions``), because a refusal is an answer, not a fault.
"""

from __future__ import annotations


class RulesError(ValueError):
    """Root of every error the decision core raises on purpose."""

    code: str = "refused"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidName(RulesError):
    """A user name, customer, agent, id, ticket id, label or SSH target is not valid."""

    code = "invalid_name"


class TransitionRefused(RulesError):
    """The ticket state table has no such change from the current status."""

    code = "transition_refused"


class LevelChangeRefused(TransitionRefused):
    """An escalation or hand-back goes the wrong way, out of range, or has no reason."""

    code = "level_change_refused"
