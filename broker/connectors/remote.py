"""What every external ticket system offers Secondline: the interface each connector kind
implements (one class per kind: ``rt.RtSystem``, ``zammad.ZammadSystem``,
``znuny.ZnunySystem``; ``store.SYSTEM_CLASSES`` names them), and the values it hands back.
Nothing outside ``broker.connectors`` knows which kinds exist."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from broker.ports import NoteAttachment


@dataclass(frozen=True)
class RemoteTicket:
    """One ticket as the external system shows it, its outside text not yet cleaned."""

    external_id: str
    title: str
    place: str  # where it sits in the system's structure (RT, Znuny: a queue; Zammad: a group)
    status: str  # ours: new, open, pending, resolved or closed
    state: str  # the external system's own status name
    owner: str | None
    requester: str
    url: str  # a link for people, to the ticket in the system's own UI
    custom_fields: Mapping[str, str] = field(default_factory=dict)
    # The external id it was merged into, when it was merged.
    merged_into: str | None = None
    # Who made the latest change over there, for the escalation history.
    changed_by: str | None = None


@dataclass(frozen=True)
class Health:
    """What ``connector test`` found: each check and whether it passed."""

    checks: Sequence[tuple[str, bool]]

    @property
    def ok(self) -> bool:
        return all(passed for _, passed in self.checks)

    def summary(self) -> str:
        failed = [what for what, passed in self.checks if not passed]
        return "ok" if not failed else "; ".join(failed)


@dataclass(frozen=True)
class Changes:
    """The tickets changed after a cursor, and the cursor to read on from."""

    external_ids: Sequence[str]
    cursor: str


class ExternalSystem(Protocol):
    """One connection to an external ticket system. Every call raises
    ``broker.connectors.errors.ExternalDown`` (try again later), ``ExternalRefused`` (the
    credential or a right is missing) or ``ExternalRejected`` (the request itself is wrong)."""

    async def check(self) -> Health:
        """Read what the connector needs and say what is missing."""

    async def start_cursor(self) -> str:
        """A cursor at the present end of the change feed."""

    async def active_tickets(self) -> Sequence[str]:
        """The ids of the open tickets in the mapped places (the first import)."""

    async def changes(self, cursor: str) -> Changes:
        """The tickets changed after ``cursor`` (a bounded batch; call again to read on)."""

    async def ticket(self, external_id: str) -> RemoteTicket | None:
        """The ticket, or None when it is gone (deleted, or no longer visible to us)."""

    async def has_note(self, external_id: str, key: str) -> bool:
        """Whether a note carrying ``key`` is in the ticket's history already."""

    async def add_note(
        self,
        external_id: str,
        *,
        key: str,
        subject: str,
        text: str,
        attachments: Sequence[NoteAttachment],
    ) -> None:
        """Add an internal note that carries ``key`` where :meth:`has_note` finds it."""

    async def move(self, external_id: str, place: str) -> None:
        """Move the ticket to ``place`` (the escalation written back)."""

    async def assign(self, external_id: str, owner: str) -> None:
        """Make ``owner`` (a user name there) the ticket's owner."""

    def status_for(self, status: str) -> str:
        """The system's status for ours (``resolved`` …); what ``RemoteTicket.state`` shows
        once :meth:`set_status` is done."""

    async def set_status(self, external_id: str, status: str) -> None:
        """Give the ticket the system's status for our ``status``."""

    async def close(self) -> None:
        """Release the connection."""
