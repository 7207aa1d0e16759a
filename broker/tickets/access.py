"""Who is acting on which ticket and agent, as the rules see them, and the one place where a
rule's refusal becomes an answer: audited as ``denied``, then 403 with the rule's code and
reason, or 404 for ``customer_scope`` (an out-of-scope ticket looks like an unknown one).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from broker.auth.principal import Principal, load_customers
from broker.auth.scopes import parse_role
from broker.db.models_agents import Agent
from broker.db.models_staff import Customer, User
from broker.ports import TicketInfo
from broker.rules import (
    AgentView,
    Allowed,
    Consent,
    Decision,
    InvalidName,
    Refused,
    StaffView,
    is_agent_id,
    may_view_ticket,
    parse_agent_ref,
    parse_ticket_ref,
    parse_user_name,
)
from broker.services import Services
from broker.tickets.errors import TicketInputError, TicketNotFound, TicketRefused
from broker.tickets.store import TicketStore


def staff_of(principal: Principal) -> StaffView:
    """The caller as the rules see them; a principal exists only for an enabled account."""
    if principal.role is None:
        raise TicketRefused(Refused("staff_disabled", "sign in with a staff account first"))
    return StaffView(
        name=principal.name, role=principal.role, disabled=False, customers=principal.customers
    )


def parse_ref(text: str) -> int:
    """The number of ``T-1042`` or ``1042`` from a path or a command line, or refuse it."""
    try:
        return parse_ticket_ref(text)
    except InvalidName as exc:
        raise TicketInputError(exc.message, code=exc.code) from None


def agent_view(agent: Agent, customer: str) -> AgentView:
    # Anything but an explicit "unattended" asks the end user: the safe reading of a bad row.
    consent: Consent = "unattended" if agent.consent == "unattended" else "attended"
    return AgentView(
        id=agent.id,
        name=agent.name,
        customer=customer,
        online=agent.online,
        revoked=agent.revoked_at is not None,
        consent=consent,
    )


@dataclass
class Desk:
    """One caller's requests on tickets: the store, the caller, and refusals audited."""

    store: TicketStore
    services: Services
    principal: Principal
    source: str

    @property
    def staff(self) -> StaffView:
        return staff_of(self.principal)

    @property
    def actor(self) -> str:
        return self.principal.name

    async def refuse(self, refused: Refused, action: str, target: str) -> TicketRefused:
        """Audit a refusal and return the error to raise for it."""
        await self.services.audit.record(
            actor=self.actor,
            action=action,
            target=target,
            outcome="denied",
            source=self.source,
            details={"code": refused.code, "reason": refused.reason},
        )
        return TicketRefused(refused)

    async def allow(self, decision: Decision, action: str, target: str) -> Allowed:
        """Return an ``Allowed``; audit and raise a refusal (404 for ``customer_scope``)."""
        if isinstance(decision, Allowed):
            return decision
        error = await self.refuse(decision, action, target)
        if decision.code == "customer_scope" and target.startswith("T-"):
            raise TicketNotFound(target)
        raise error

    async def ticket(self, ref: str, action: str) -> TicketInfo:
        """The ticket named in a path, if it exists and the caller may see it."""
        number = parse_ref(ref)
        info = await self.store.get(number)
        if info is None:
            raise TicketNotFound(number)
        await self.allow(may_view_ticket(self.staff, info.view()), action, info.ref)
        return info

    async def colleague(self, name: str) -> StaffView:
        """A staff account to assign a ticket to, as the rules see it."""
        try:
            user_name = parse_user_name(name)
        except InvalidName as exc:
            raise TicketInputError(exc.message, code=exc.code) from None
        async with self.services.db() as db:
            user = (
                await db.execute(select(User).where(User.name == user_name))
            ).scalar_one_or_none()
        if user is None:
            raise TicketInputError(
                f"there is no staff member {user_name!r}; see `secondline user list`",
                code="unknown_user",
                status=404,
            )
        try:
            role = parse_role(user.role)
        except ValueError:
            raise TicketInputError(f"the account {user_name!r} has an unknown role") from None
        return StaffView(
            name=user.name,
            role=role,
            disabled=user.disabled,
            customers=await load_customers(self.services.db, user.id),
        )

    async def agent(self, ref: str, customer: str) -> AgentView:
        """The agent named by name or id, preferring the live agent of ``customer``.

        An agent of a customer the caller does not serve is reported as unknown; one of
        another customer the caller does serve is returned, for the rules to refuse.
        """
        try:
            parsed = parse_agent_ref(ref)
        except InvalidName as exc:
            raise TicketInputError(exc.message, code=exc.code) from None
        column = Agent.id if is_agent_id(parsed) else Agent.name
        async with self.services.db() as db:
            rows = await db.execute(
                select(Agent, Customer.name)
                .join(Customer, Customer.id == Agent.customer_id)
                .where(column == parsed)
            )
            candidates = [
                (agent, owner)
                for agent, owner in rows
                if self.staff.serves(owner) or owner == customer
            ]
        if not candidates:
            raise TicketInputError(
                f"there is no agent {parsed!r} you may see; see `secondline agent list`",
                code="unknown_agent",
                status=404,
            )
        candidates.sort(key=lambda pair: (pair[1] != customer, pair[0].revoked_at is not None))
        agent, owner = candidates[0]
        return agent_view(agent, owner)

    async def linked_agent(self, ref: str | None, ticket: TicketInfo) -> AgentView:
        """The agent a session check is about: the named one, or the only linked one."""
        if ref:
            return await self.agent(ref, ticket.customer)
        if len(ticket.agent_ids) != 1:
            raise TicketInputError(
                f"ticket {ticket.ref} has {len(ticket.agent_ids)} linked agents; "
                "name one with ?agent=NAME",
                code="agent_required",
            )
        (only,) = ticket.agent_ids
        return await self.agent(only, ticket.customer)
