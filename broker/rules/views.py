"""Read-only views of staff, tickets, agents and live sessions, and the two decisions.

The stores build these from their rows; the rules in ``permissions`` read nothing else. A view
checks its closed fields (role, status, level, consent policy, ticket numbers) when it is built,
so a bad row fails loudly where it is read instead of being judged.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal

from broker.rules.errors import RulesError
from broker.rules.names import TICKET_ID_MAX, format_ticket_id
from broker.rules.ticket_states import LEVELS, STATUSES

Role = Literal["level1", "level2", "level3", "admin"]
Consent = Literal["attended", "unattended"]

ROLES: Final[tuple[Role, ...]] = ("level1", "level2", "level3", "admin")
ROLE_LEVEL: Final = MappingProxyType[Role, int | None](
    {"level1": 1, "level2": 2, "level3": 3, "admin": None}
)


def _invalid_view(message: str) -> RulesError:
    return RulesError(message, code="invalid_view")


def _check_ticket_number(number: int) -> None:
    if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= TICKET_ID_MAX:
        raise _invalid_view(f"a ticket number is 1 to {TICKET_ID_MAX}, not {number!r}")


@dataclass(frozen=True)
class StaffView:
    """A staff account as the rules see it; ``customers`` None means every customer."""

    name: str
    role: Role
    disabled: bool
    customers: frozenset[str] | None

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise _invalid_view(f"unknown role {self.role!r}; roles are {', '.join(ROLES)}")

    @property
    def level(self) -> int | None:
        """The support level of the role, None for admins."""
        return ROLE_LEVEL[self.role]

    def serves(self, customer: str) -> bool:
        """Tell whether this account may work for ``customer``."""
        return self.customers is None or customer in self.customers


@dataclass(frozen=True)
class TicketView:
    """A ticket as the rules see it; ``id`` is the number of ``T-<id>``."""

    id: int
    status: str
    level: int
    customer: str
    assignee: str | None
    agent_ids: frozenset[str]
    created_by: str | None

    def __post_init__(self) -> None:
        _check_ticket_number(self.id)
        if self.status not in STATUSES:
            raise _invalid_view(f"unknown ticket status {self.status!r}")
        if isinstance(self.level, bool) or self.level not in LEVELS:
            raise _invalid_view(f"ticket level must be 1, 2 or 3, not {self.level!r}")

    @property
    def ref(self) -> str:
        """The ticket id as people write it, e.g. ``T-1042``."""
        return format_ticket_id(self.id)


@dataclass(frozen=True)
class AgentView:
    """An enrolled agent as the rules see it."""

    id: str
    name: str
    customer: str
    online: bool
    revoked: bool
    consent: Consent

    def __post_init__(self) -> None:
        if self.consent not in ("attended", "unattended"):
            raise _invalid_view(f"unknown consent policy {self.consent!r}")


@dataclass(frozen=True)
class LiveSessionView:
    """A live session: its owner and the staff the owner invited to join."""

    id: str
    ticket: int
    owner: str
    invited: frozenset[str]

    def __post_init__(self) -> None:
        _check_ticket_number(self.ticket)


@dataclass(frozen=True)
class Allowed:
    """The action may go ahead; the flags say what the caller must do with it."""

    assign_to_caller: bool = False  # assign the (unassigned) ticket to the caller first
    needs_consent: bool = False  # ask the end user on the agent (attended policy) first


@dataclass(frozen=True)
class Refused:
    """The action is refused; the caller shows ``reason`` and audits ``code``."""

    code: str
    reason: str


Decision = Allowed | Refused
