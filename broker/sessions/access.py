"""Reading staff accounts and agents from the database into the views the session rules
judge (``broker.rules``), and finding the agent an SSH user name or a console request names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from broker.db.models_agents import Agent
from broker.db.models_staff import Customer, SshKey, User, UserCustomer
from broker.ports import AgentTunnels, TicketInfo
from broker.rules import AgentView, Refused, StaffView, is_agent_id, sanitize_display_text
from broker.rules.views import ROLES, Consent, Role


def _role(text: str) -> Role:
    for role in ROLES:
        if role == text:
            return role
    raise ValueError(f"unknown role {text!r}")


@dataclass(frozen=True)
class StaffKey:
    """The staff member a registered SSH key belongs to."""

    user_id: int
    name: str
    role: Role
    disabled: bool
    fingerprint: str


async def load_staff(db: AsyncSession, name: str) -> StaffView | None:
    """The account as the rules see it, or None when there is no such account."""
    user = (await db.execute(select(User).where(User.name == name))).scalar_one_or_none()
    if user is None:
        return None
    customers = (
        (
            await db.execute(
                select(Customer.name)
                .join(UserCustomer, UserCustomer.customer_id == Customer.id)
                .where(UserCustomer.user_id == user.id)
            )
        )
        .scalars()
        .all()
    )
    return StaffView(
        name=user.name,
        role=_role(user.role),
        disabled=user.disabled,
        customers=frozenset(customers) or None,
    )


async def key_owner(db: AsyncSession, fingerprint: str, public_data: bytes) -> StaffKey | None:
    """Who a (not revoked) SSH public key belongs to, or None."""
    import asyncssh  # the CLI imports broker.rules without asyncssh; only the gateway gets here

    row = (
        await db.execute(
            select(SshKey, User)
            .join(User, User.id == SshKey.user_id)
            .where(SshKey.fingerprint == fingerprint, SshKey.revoked_at.is_(None))
        )
    ).one_or_none()
    if row is None:
        return None
    key, user = row[0], row[1]
    try:
        registered = asyncssh.import_public_key(key.public_key)
    except (asyncssh.KeyImportError, ValueError):
        return None
    if registered.public_data != public_data:
        return None
    return StaffKey(user.id, user.name, _role(user.role), user.disabled, fingerprint)


@dataclass(frozen=True)
class AgentRecord:
    """An enrolled agent, as sessions need it."""

    id: str
    name: str
    customer: str
    consent: str
    revoked: bool

    def view(
        self, tunnels: AgentTunnels | None, elsewhere: Callable[[str], str | None] | None = None
    ) -> AgentView:
        """The rules' view; online means this node holds its tunnel now, or (in a cluster,
        ``elsewhere``) another node announces that it does."""
        online = tunnels is not None and tunnels.connection(self.id) is not None
        if not online and elsewhere is not None:
            online = elsewhere(self.id) is not None
        consent: Consent = "unattended" if self.consent == "unattended" else "attended"
        return AgentView(
            id=self.id,
            name=self.name,
            customer=self.customer,
            online=online,
            revoked=self.revoked,
            consent=consent,
        )


async def load_agents(db: AsyncSession, ids: Iterable[str]) -> list[AgentRecord]:
    """The agents with these ids (unknown ids are left out), by name."""
    wanted = sorted(set(ids))
    if not wanted:
        return []
    rows = (
        await db.execute(
            select(Agent, Customer.name)
            .join(Customer, Customer.id == Agent.customer_id)
            .where(Agent.id.in_(wanted))
            .order_by(Agent.name)
        )
    ).all()
    return [
        AgentRecord(a.id, a.name, customer, a.consent, a.revoked_at is not None)
        for a, customer in rows
    ]


async def find_agents(db: AsyncSession, ref: str, customer: str) -> list[AgentRecord]:
    """Agents named ``ref`` (an id, or a name within ``customer``), not revoked first."""
    stmt = select(Agent, Customer.name).join(Customer, Customer.id == Agent.customer_id)
    if is_agent_id(ref):
        stmt = stmt.where(Agent.id == ref)
    else:
        stmt = stmt.where(Agent.name == ref, Customer.name == customer)
    rows = (await db.execute(stmt)).all()
    found = [
        AgentRecord(a.id, a.name, name, a.consent, a.revoked_at is not None) for a, name in rows
    ]
    return sorted(found, key=lambda r: (r.revoked, r.id))


def choose_agent(
    ticket: TicketInfo, linked: Sequence[AgentRecord], named: Sequence[AgentRecord] | None
) -> AgentRecord | Refused:
    """The agent a request means: the named one, or the ticket's only linked agent."""
    ref = ticket.ref
    if named is not None:
        if not named:
            return Refused(
                "agent_not_found",
                f"ticket {ref} has no agent of that name or id; " + _linked_hint(ticket, linked),
            )
        linked_ids = {a.id for a in linked}
        for record in named:
            if record.id in linked_ids:
                return record
        return named[0]  # the rules then say it is not linked to the ticket
    if not linked:
        return Refused(
            "no_linked_agent",
            f"ticket {ref} has no linked agent; link one first "
            f"(secondline ticket link {ref} AGENT)",
        )
    if len(linked) > 1:
        return Refused(
            "several_agents", f"ticket {ref} has several agents; " + _linked_hint(ticket, linked)
        )
    return linked[0]


def _linked_hint(ticket: TicketInfo, linked: Sequence[AgentRecord]) -> str:
    if not linked:
        return f"it has no linked agent (secondline ticket link {ticket.ref} AGENT)"
    names = ", ".join(sanitize_display_text(a.name, 63) for a in linked[:20])
    first = sanitize_display_text(linked[0].name, 63)
    return f"choose one of: {names} (e.g. ssh {ticket.ref}+{first}@broker)"
