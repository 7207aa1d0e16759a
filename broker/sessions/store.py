"""The session rows and their participants, in the database. The outbox that carries each
session's note to its ticket is ``broker.tickets.outbox``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Final

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from broker.db.models_cluster import lease_lapsed
from broker.db.models_sessions import RemoteSession, SessionParticipant
from broker.db.models_staff import User
from broker.secret_scrubber import scrub_secrets
from broker.sessions.facts import SessionFacts
from broker.sessions.lifecycle import END_STATES, UNENDED_ROW_STATES

# States of a session that has not ended: it counts against the owner's limit and is
# "live" to `session list --live`; after a crash these become "interrupted".
LIVE_STATES: Final = UNENDED_ROW_STATES
ENDED_STATES: Final = END_STATES


async def insert_session(
    db: AsyncSession, facts: SessionFacts, *, state: str, now: dt.datetime, node: str
) -> None:
    db.add(
        RemoteSession(
            id=facts.session_id,
            ticket_id=facts.ticket_id,
            customer=facts.customer,
            agent_id=facts.agent_id,
            agent_name=facts.agent_name,
            owner=facts.owner,
            owner_level=facts.owner_level,
            kind=facts.kind,
            # A one-command session's command line is shown in lists: scrubbed like the
            # command index (the .cast keeps what ran).
            command=None if facts.command is None else scrub_secrets(facts.command),
            via=facts.via,
            source=facts.source[:64],
            node=node[:64],
            state=state,
            cols=facts.cols,
            rows=facts.rows,
            created_at=now,
        )
    )
    await db.flush()


async def disabled_accounts(db: AsyncSession, names: set[str]) -> set[str]:
    """Which of ``names`` are disabled accounts."""
    stmt = select(User.name).where(User.name.in_(sorted(names)), User.disabled.is_(True))
    return set((await db.execute(stmt)).scalars().all())


async def count_live(db: AsyncSession, owner: str) -> int:
    """Sessions of ``owner`` that have not ended (on any node)."""
    stmt = select(func.count(RemoteSession.id)).where(
        RemoteSession.owner == owner, RemoteSession.state.in_(LIVE_STATES)
    )
    return int((await db.execute(stmt)).scalar_one())


async def update_session(
    db: AsyncSession, session_id: str, *, only_from: Sequence[str] = (), **values: object
) -> None:
    """Change a session row; with ``only_from``, only while it is in one of those states."""
    stmt = update(RemoteSession).where(RemoteSession.id == session_id)
    if only_from:
        stmt = stmt.where(RemoteSession.state.in_(list(only_from)))
    await db.execute(stmt.values(**values))


async def get_session(db: AsyncSession, session_id: str) -> RemoteSession | None:
    return (
        await db.execute(select(RemoteSession).where(RemoteSession.id == session_id))
    ).scalar_one_or_none()


async def list_sessions(
    db: AsyncSession,
    *,
    live: bool,
    ticket_id: int | None,
    customers: frozenset[str] | None,
    limit: int,
) -> Sequence[RemoteSession]:
    stmt = select(RemoteSession).order_by(RemoteSession.created_at.desc()).limit(limit)
    if live:
        stmt = stmt.where(RemoteSession.state.in_(LIVE_STATES))
    if ticket_id is not None:
        stmt = stmt.where(RemoteSession.ticket_id == ticket_id)
    if customers is not None:
        stmt = stmt.where(RemoteSession.customer.in_(sorted(customers)))
    return (await db.execute(stmt)).scalars().all()


async def unfinished(db: AsyncSession, *, node: str | None = None) -> Sequence[RemoteSession]:
    """Sessions a crashed broker left behind; of cluster node ``node`` only, when given (the
    other nodes' live sessions are theirs), with those it had taken over to seal before it
    stopped. A single node takes every one: its name may have changed with the host's since
    the crash."""
    stmt = select(RemoteSession).where(RemoteSession.state.in_(LIVE_STATES))
    if node is not None:
        stmt = stmt.where(or_(RemoteSession.node == node, RemoteSession.recovered_by == node))
    return (await db.execute(stmt)).scalars().all()


async def recovered_by(db: AsyncSession, session_id: str) -> str | None:
    """The node that took the session over to seal it as interrupted, if one did."""
    stmt = select(RemoteSession.recovered_by).where(RemoteSession.id == session_id)
    return (await db.execute(stmt)).scalar_one_or_none()


async def claim_recovery(
    db: AsyncSession, session_id: str, *, by: str, gone: str | None = None
) -> bool:
    """Take an unended session over to seal it; True for exactly one claimant.

    One conditional update: it succeeds only while nobody else holds the claim (or the
    holder is ``by`` itself, after its own restart, or ``gone``, a node that died while
    sealing it), so two nodes that both saw a node die never both seal its sessions; and,
    for a session of ``gone``, only while ``gone``'s lease in the database stays lapsed,
    so a node that was only silent (starting slowly, cut off from NATS) keeps recording
    its sessions and nobody else seals them.
    """
    holders = [RemoteSession.recovered_by.is_(None), RemoteSession.recovered_by == by]
    where = [RemoteSession.id == session_id, RemoteSession.state.in_(LIVE_STATES)]
    if gone is not None:
        holders.append(RemoteSession.recovered_by == gone)
        where.append(lease_lapsed(gone))
    result = await db.execute(
        update(RemoteSession).where(*where, or_(*holders)).values(recovered_by=by)
    )
    return bool(getattr(result, "rowcount", 0) == 1)


async def add_participant(
    db: AsyncSession, session_id: str, *, name: str, role: str, via: str, now: dt.datetime
) -> None:
    db.add(SessionParticipant(session_id=session_id, name=name, role=role, via=via, joined_at=now))


async def participant_left(
    db: AsyncSession, session_id: str, *, name: str, role: str, now: dt.datetime, reason: str
) -> None:
    """Close the newest open participation of ``name`` in ``role``."""
    row = (
        await db.execute(
            select(SessionParticipant)
            .where(
                SessionParticipant.session_id == session_id,
                SessionParticipant.name == name,
                SessionParticipant.role == role,
                SessionParticipant.left_at.is_(None),
            )
            .order_by(SessionParticipant.id.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    if row is not None:
        row.left_at = now
        row.left_reason = reason[:200]


async def close_participants(
    db: AsyncSession, session_id: str, *, now: dt.datetime, reason: str
) -> None:
    await db.execute(
        update(SessionParticipant)
        .where(SessionParticipant.session_id == session_id, SessionParticipant.left_at.is_(None))
        .values(left_at=now, left_reason=reason[:200])
    )


async def participants(db: AsyncSession, session_id: str) -> Sequence[SessionParticipant]:
    stmt = (
        select(SessionParticipant)
        .where(SessionParticipant.session_id == session_id)
        .order_by(SessionParticipant.id)
    )
    return (await db.execute(stmt)).scalars().all()
