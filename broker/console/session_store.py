"""Console sessions in the database: create on sign-in, look up per request, end on sign-out.

Only the SHA-256 of the cookie secret is stored; validity is decided by
:mod:`broker.console.web_session`."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from broker.auth.principal import Principal, load_customers
from broker.auth.scopes import ROLE_SCOPES, Role, parse_role
from broker.console.web_session import (
    Invalid,
    SessionFacts,
    SessionLimits,
    Stage,
    needs_touch,
    new_secret,
    session_id_of,
    why_invalid,
)
from broker.db.models_console import ConsoleSession
from broker.db.models_staff import User
from broker.services import Services


@dataclass(frozen=True)
class ConsoleUser:
    """The person behind a valid console session."""

    session_id: str
    user_id: int
    name: str
    display_name: str
    role: Role
    language: str | None
    csrf_token: str
    customers: frozenset[str] | None
    pending_totp: str | None = None

    @property
    def level(self) -> int | None:
        return {"level1": 1, "level2": 2, "level3": 3}.get(self.role)

    def principal(self) -> Principal:
        return Principal(
            self.user_id,
            self.name,
            self.role,
            ROLE_SCOPES[self.role],
            self.customers,
            via="web",
        )


@dataclass(frozen=True)
class NewSession:
    cookie_value: str
    session_id: str
    csrf_token: str


async def create(
    db: AsyncSession,
    user: User,
    *,
    stage: Stage,
    now: dt.datetime,
    source: str,
    user_agent: str,
    pending_totp: str | None = None,
) -> NewSession:
    """Add a session row for ``user``; the cookie value is returned and never stored."""
    cookie = new_secret()
    session_id = session_id_of(cookie)
    assert session_id is not None
    csrf = new_secret()
    db.add(
        ConsoleSession(
            id=session_id,
            user_id=user.id,
            stage=stage,
            epoch=user.session_epoch,
            csrf_token=csrf,
            pending_totp=pending_totp,
            created_at=now,
            last_seen_at=now,
            source=source[:64],
            user_agent=user_agent[:200],
        )
    )
    await db.flush()
    return NewSession(cookie, session_id, csrf)


async def load(
    services: Services, cookie_value: str | None, *, stage: Stage = "active"
) -> ConsoleUser | Invalid | None:
    """The signed-in person for a cookie; the reason it is invalid; or None without a session.

    A valid session's last use is recorded (at most once a minute); an invalid one is deleted,
    so a stolen copy of an expired cookie finds nothing."""
    session_id = session_id_of(cookie_value)
    if session_id is None:
        return None
    now = services.clock()
    config = services.config
    limits = SessionLimits(config.web_session_idle_seconds, config.web_session_max_seconds)
    async with services.db() as db, db.begin():
        row = (
            await db.execute(
                select(ConsoleSession, User)
                .join(User, User.id == ConsoleSession.user_id)
                .where(ConsoleSession.id == session_id)
            )
        ).one_or_none()
        if row is None:
            return None
        session, user = row[0], row[1]
        facts = SessionFacts(
            stage=session.stage,
            epoch=session.epoch,
            created_at=session.created_at,
            last_seen_at=session.last_seen_at,
            user_disabled=user.disabled,
            user_epoch=user.session_epoch,
        )
        why = why_invalid(facts, limits, now, stage=stage)
        if why is not None:
            if why != "stage":
                await db.execute(delete(ConsoleSession).where(ConsoleSession.id == session_id))
            return why
        if needs_touch(session.last_seen_at, now):
            session.last_seen_at = now
        found = ConsoleUser(
            session_id=session_id,
            user_id=user.id,
            name=user.name,
            display_name=user.display_name,
            role=parse_role(user.role),
            language=user.language,
            csrf_token=session.csrf_token,
            customers=None,
            pending_totp=session.pending_totp,
        )
    customers = await load_customers(services.db, user.id)
    return ConsoleUser(**{**found.__dict__, "customers": customers})


async def end(db: AsyncSession, session_id: str) -> None:
    await db.execute(delete(ConsoleSession).where(ConsoleSession.id == session_id))


async def end_everywhere(db: AsyncSession, user_id: int) -> int:
    """Void every console session of a person (bumping the epoch) and return the new epoch."""
    user = (await db.execute(select(User).where(User.id == user_id))).scalar_one()
    user.session_epoch += 1
    await db.execute(delete(ConsoleSession).where(ConsoleSession.user_id == user_id))
    return user.session_epoch


async def still_valid(services: Services, session_ids: set[str]) -> set[str]:
    """Which of ``session_ids`` may still be used now (for live pages and terminals)."""
    if not session_ids:
        return set()
    now = services.clock()
    config = services.config
    limits = SessionLimits(config.web_session_idle_seconds, config.web_session_max_seconds)
    async with services.db() as db:
        rows = (
            await db.execute(
                select(ConsoleSession, User)
                .join(User, User.id == ConsoleSession.user_id)
                .where(ConsoleSession.id.in_(sorted(session_ids)))
            )
        ).all()
    valid: set[str] = set()
    for session, user in rows:
        facts = SessionFacts(
            session.stage,
            session.epoch,
            session.created_at,
            session.last_seen_at,
            user.disabled,
            user.session_epoch,
        )
        if why_invalid(facts, limits, now) is None:
            valid.add(session.id)
    return valid


async def touch(services: Services, session_ids: set[str]) -> None:
    """Record use of sessions that hold an open terminal: typing into a terminal is work,
    though it makes no page requests, so it must not run into the idle timeout."""
    if not session_ids:
        return
    async with services.db() as db, db.begin():
        await db.execute(
            update(ConsoleSession)
            .where(ConsoleSession.id.in_(sorted(session_ids)))
            .values(last_seen_at=services.clock())
        )


async def purge(services: Services) -> int:
    """Delete rows no cookie can use any more (expired, idle or voided); returns how many."""
    now = services.clock()
    config = services.config
    oldest = now - dt.timedelta(seconds=config.web_session_max_seconds)
    idle = now - dt.timedelta(seconds=config.web_session_idle_seconds)
    async with services.db() as db, db.begin():
        result = await db.execute(
            delete(ConsoleSession).where(
                (ConsoleSession.created_at < oldest) | (ConsoleSession.last_seen_at < idle)
            )
        )
    return int(getattr(result, "rowcount", 0) or 0)


async def set_language(db: AsyncSession, user_id: int, language: str | None) -> None:
    await db.execute(update(User).where(User.id == user_id).values(language=language))
