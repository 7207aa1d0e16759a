"""Enrolled agents in the database: enrollment, lookup by id or name, revocation, presence
and facts. :class:`AgentRecord` is the frozen view every other part of the broker reads."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

import asyncssh
from sqlalchemy import Select, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from broker.agents.tokens import ClaimedToken
from broker.auth.credentials import random_id
from broker.db.models_agents import Agent
from broker.db.models_cluster import lease_lapsed
from broker.db.models_staff import Customer
from broker.errors import ConflictError, InputError, NotFoundError
from broker.rules import InvalidName, is_agent_id, parse_agent_ref, parse_customer_name
from broker.rules.views import AgentView, Consent

AGENT_ID_PREFIX: Final = "ag-"
_TOUCH_CHUNK: Final = 500


@dataclass(frozen=True, slots=True)
class AgentRecord:
    """An enrolled agent as stored (``online`` is what the database last heard)."""

    id: str
    name: str
    customer: str
    labels: Mapping[str, str]
    facts: Mapping[str, object]
    facts_at: dt.datetime | None
    consent: Consent
    public_key: str
    key_fingerprint: str
    enrolled_at: dt.datetime
    enrolled_with: str
    online: bool
    node: str | None
    connected_at: dt.datetime | None
    last_seen: dt.datetime | None
    revoked_at: dt.datetime | None
    revoked_by: str | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def view(self, *, online: bool | None = None) -> AgentView:
        """The rules' view; pass ``online`` from the live registry when you have it."""
        return AgentView(
            id=self.id,
            name=self.name,
            customer=self.customer,
            online=self.online if online is None else online,
            revoked=self.revoked,
            consent=self.consent,
        )


def _consent(value: str) -> Consent:
    return "unattended" if value == "unattended" else "attended"


def _record(row: Agent, customer: str) -> AgentRecord:
    return AgentRecord(
        id=row.id,
        name=row.name,
        customer=customer,
        labels=dict(row.labels or {}),
        facts=dict(row.facts or {}),
        facts_at=row.facts_at,
        consent=_consent(row.consent),
        public_key=row.public_key,
        key_fingerprint=row.key_fingerprint,
        enrolled_at=row.enrolled_at,
        enrolled_with=row.enrolled_with,
        online=bool(row.online) and row.revoked_at is None,
        node=row.node,
        connected_at=row.connected_at,
        last_seen=row.last_seen,
        revoked_at=row.revoked_at,
        revoked_by=row.revoked_by,
    )


def _select() -> Select[Agent, str]:
    return select(Agent, Customer.name).join(Customer, Customer.id == Agent.customer_id)


def valid_agent_ref(text: str) -> str:
    """An agent id or name from a caller, or InputError."""
    try:
        return parse_agent_ref(text)
    except InvalidName as exc:
        raise InputError(str(exc), code="invalid_name") from None


async def get_agent(db: AsyncSession, agent_id: str) -> AgentRecord | None:
    """The agent with this id (revoked or not), or None."""
    found = (await db.execute(_select().where(Agent.id == agent_id))).one_or_none()
    return _record(*found) if found else None


async def tunnel_keys(
    conn: AsyncConnection, agent_ids: Collection[str]
) -> dict[str, tuple[str, str, bool]]:
    """id → (name, public key, revoked) of the enrolled agents among ``agent_ids``: what a
    tunnel upgrade needs, for many upgrades in one SELECT (broker.agents.identity_lookup),
    without the rest of the record (facts can be kilobytes) or an ORM object."""
    revoked = Agent.revoked_at.is_not(None)
    stmt = select(Agent.id, Agent.name, Agent.public_key, revoked).where(
        Agent.id.in_(list(agent_ids))
    )
    return {row[0]: (row[1], row[2], bool(row[3])) for row in (await conn.execute(stmt)).all()}


def _not_found(ref: str) -> NotFoundError:
    return NotFoundError(f"there is no agent {ref!r}; see `secondline agent list`")


async def find_agent(
    db: AsyncSession,
    ref: str,
    *,
    customer: str | None = None,
    customers: frozenset[str] | None = None,
) -> AgentRecord:
    """The agent named by ``ref`` (an id, or a name) within the caller's customers.

    A name is unique per customer among live agents; pass ``customer`` (e.g. the ticket's)
    to pick one. Without it, a name held in several customers is a ConflictError, and a
    name that only revoked agents carry resolves to the newest of them.
    Agents of customers outside ``customers`` are reported as not existing.
    """
    ref = valid_agent_ref(ref)
    stmt = _select()
    stmt = stmt.where(Agent.id == ref if is_agent_id(ref) else Agent.name == ref)
    if customer is not None:
        stmt = stmt.where(Customer.name == parse_customer_name(customer))
    if customers is not None:
        stmt = stmt.where(Customer.name.in_(sorted(customers)))
    rows = [_record(row, name) for row, name in (await db.execute(stmt))]
    live = [r for r in rows if not r.revoked]
    if len(live) == 1:
        return live[0]
    if len(live) > 1:
        owners = ", ".join(sorted(r.customer for r in live))
        raise ConflictError(
            f"several customers have an agent named {ref!r} ({owners}); use the agent id "
            "or name the customer",
            code="ambiguous_agent",
        )
    if rows:
        return max(rows, key=lambda r: r.enrolled_at)
    raise _not_found(ref)


async def list_agents(
    db: AsyncSession,
    *,
    customers: frozenset[str] | None = None,
    customer: str | None = None,
    include_revoked: bool = True,
) -> list[AgentRecord]:
    """Agents the caller may see, by customer then name."""
    stmt = _select().order_by(Customer.name, Agent.name, Agent.enrolled_at)
    if customers is not None:
        stmt = stmt.where(Customer.name.in_(sorted(customers)))
    if customer is not None:
        stmt = stmt.where(Customer.name == parse_customer_name(customer))
    if not include_revoked:
        stmt = stmt.where(Agent.revoked_at.is_(None))
    return [_record(row, name) for row, name in (await db.execute(stmt))]


def key_fingerprint(public_key: str) -> str:
    """``SHA256:...`` of an OpenSSH public key line."""
    return str(asyncssh.import_public_key(public_key).get_fingerprint("sha256"))


async def enroll_agent(
    db: AsyncSession,
    claimed: ClaimedToken,
    *,
    name: str,
    public_key: str,
    facts: Mapping[str, object],
    now: dt.datetime,
) -> AgentRecord:
    """Add the agent a claimed token admits, inside the caller's transaction.

    A live agent of the same customer with the same name, or any agent with the same key,
    is a ConflictError (and the caller's rollback gives the token use back).
    """
    taken = (
        await db.execute(
            select(Agent.id).where(
                Agent.customer_id == claimed.customer_id,
                Agent.name == name,
                Agent.revoked_at.is_(None),
            )
        )
    ).first()
    if taken is not None:
        raise _name_taken(name, claimed.customer)
    fingerprint = key_fingerprint(public_key)
    if (await db.execute(select(Agent.id).where(Agent.key_fingerprint == fingerprint))).first():
        raise ConflictError(
            "this agent key is enrolled already; enroll with a fresh state dir (a new key)",
            code="key_enrolled",
        )
    row = Agent(
        id=AGENT_ID_PREFIX + random_id(16),
        name=name,
        customer_id=claimed.customer_id,
        labels=dict(claimed.labels),
        facts=dict(facts),
        facts_at=now,
        consent=claimed.consent,
        public_key=public_key,
        key_fingerprint=fingerprint,
        enrolled_with=claimed.id,
        enrolled_at=now,
        online=False,
    )
    db.add(row)
    try:
        await db.flush()
    except IntegrityError:
        # Lost a race with an enrollment of the same name or key in another transaction.
        raise _name_taken(name, claimed.customer) from None
    return _record(row, claimed.customer)


def _name_taken(name: str, customer: str) -> ConflictError:
    return ConflictError(
        f"customer {customer!r} has an agent named {name!r} already; enroll with another "
        "name (secondline-agent enroll --name NAME), or ask an admin to revoke the old agent",
        code="name_taken",
    )


async def revoke_agent(db: AsyncSession, agent_id: str, *, by: str, now: dt.datetime) -> bool:
    """Mark the agent revoked and offline; False when it was revoked already."""
    result = await db.execute(
        update(Agent)
        .where(Agent.id == agent_id, Agent.revoked_at.is_(None))
        .values(revoked_at=now, revoked_by=by[:64], online=False, node=None)
    )
    return bool(getattr(result, "rowcount", 0))


async def mark_all_offline(db: AsyncSession) -> int:
    """At start-up: no tunnel survives a broker restart, whatever the table says."""
    result = await db.execute(
        update(Agent).where(Agent.online.is_(True)).values(online=False, node=None)
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def mark_node_offline(db: AsyncSession, node: str, *, dead: bool = False) -> int:
    """A cluster node's agents offline: at its own start (a cluster node must not touch the
    others' tunnels), or, ``dead``, when it died: then only while its lease in the
    database stays lapsed (broker.cluster.lease), so a node that was only silent keeps
    its agents."""
    where = [Agent.online.is_(True), Agent.node == node]
    if dead:
        where.append(lease_lapsed(node))
    result = await db.execute(update(Agent).where(*where).values(online=False, node=None))
    return int(getattr(result, "rowcount", 0) or 0)


async def count_seen_since(db: AsyncSession, since: dt.datetime) -> int:
    """Agents not revoked whose tunnel was up at ``since`` or later (broker.cluster.herd)."""
    stmt = select(func.count()).where(Agent.revoked_at.is_(None), Agent.last_seen >= since)
    return int((await db.execute(stmt)).scalar_one())


async def touch(db: AsyncSession, agent_ids: Iterable[str], now: dt.datetime) -> None:
    """Record that live agents were seen now (their tunnels answer keepalives)."""
    ids = list(agent_ids)
    for start in range(0, len(ids), _TOUCH_CHUNK):
        chunk = ids[start : start + _TOUCH_CHUNK]
        await db.execute(
            update(Agent).where(Agent.id.in_(chunk), Agent.online.is_(True)).values(last_seen=now)
        )
