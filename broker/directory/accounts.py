"""Applying what a directory says to Secondline's accounts, in one transaction per person.

A directory account's role, customers, display name and directory keys are the directory's:
each sync writes them. Access taken away by the directory (``source_refusal``) disables the
account as an admin's disable does (tokens revoked, console sessions void, shift windows
closed); access given back clears only what the directory took, never an admin's disable.
A local account of the same name is never taken over."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from broker import staff_store
from broker.auth import shift_windows
from broker.db.models_staff import ApiToken, Customer, SshKey, User, UserCustomer
from broker.directory.rules import Verdict
from broker.errors import BrokerError
from broker.rules import InvalidName, parse_user_name

log = logging.getLogger(__name__)

SOURCE = "directory"


@dataclass(frozen=True)
class Applied:
    """What one person's sync did: ``lost`` is True when access was taken away just now."""

    name: str
    user_id: int | None
    created: bool = False
    lost: bool = False
    regained: bool = False
    refusal: str | None = None
    skipped: str | None = None  # why the person was not applied (name taken, bad name)


async def apply(
    db: AsyncSession,
    *,
    directory: str,
    name: str,
    dn: str | None,
    verdict: Verdict,
    now: dt.datetime,
    create: bool,
    source: str = SOURCE,
) -> Applied:
    """Apply ``verdict`` to ``name``'s account from ``directory`` (an OpenID provider's name
    with ``source="oidc"``, whose accounts are also bound to the subject ``dn``)."""
    try:
        name = parse_user_name(name)
    except InvalidName as exc:
        return Applied(name[:64], None, skipped=str(exc))
    user = (await db.execute(select(User).where(User.name == name))).scalar_one_or_none()
    if user is not None and (user.source != source or user.source_name != directory):
        return Applied(name, user.id, skipped=f"the account {name} is not from {directory}")
    if user is not None and source != SOURCE and user.external_id != dn:
        # The provider gave this user name to another person (a new subject).
        return Applied(name, user.id, skipped=f"the account {name} belongs to another person")
    customer_ids: set[int] = set()
    if verdict.allowed and verdict.customers:
        customer_ids = await _known_customers(db, name, verdict.customers)
        if not customer_ids:
            # No customer rows would mean "every customer": refused instead.
            verdict = Verdict(None, refusal="none of the customers named for you exists here")
    created = False
    if user is None:
        if not verdict.allowed or not create:
            return Applied(name, None, refusal=verdict.refusal)
        user = User(
            name=name,
            role=verdict.role or "level1",
            display_name="",
            password_hash=None,
            created_at=now,
            source=source,
            source_name=directory,
            external_id=dn,
        )
        db.add(user)
        await db.flush()
        created = True
    if dn is not None:
        user.external_id = dn[:500]
    if not verdict.allowed:
        lost = user.source_refusal is None and not user.disabled
        if user.source_refusal != verdict.refusal:
            user.source_refusal = (verdict.refusal or "")[:200]
        if lost:
            await _take_access(db, user, now)
        if source == SOURCE:
            await _set_keys(db, user, (), now)
        return Applied(name, user.id, lost=lost, refusal=verdict.refusal)
    regained = user.source_refusal is not None
    if regained:
        user.source_refusal = None
        user.disabled = False
    assert verdict.role is not None
    role_changed = user.role != verdict.role
    user.role = verdict.role
    user.display_name = verdict.display_name
    customers_changed = await _set_customers(db, user, customer_ids)
    if (role_changed or customers_changed) and not created:
        # Pages and tokens carry what the role and customers allowed: sign in again.
        user.session_epoch += 1
        await _revoke_tokens(db, user, now)
    if source == SOURCE:
        await _set_keys(db, user, verdict.ssh_keys, now)
    return Applied(name, user.id, created=created, regained=regained)


async def _take_access(db: AsyncSession, user: User, now: dt.datetime) -> None:
    user.disabled = True
    user.session_epoch += 1
    await shift_windows.end(db, user.id)
    await _revoke_tokens(db, user, now)


async def _revoke_tokens(db: AsyncSession, user: User, now: dt.datetime) -> None:
    await db.execute(
        update(ApiToken)
        .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )


async def _known_customers(db: AsyncSession, user: str, names: tuple[str, ...]) -> set[int]:
    known = {
        c.name: c.id
        for c in (
            await db.execute(select(Customer).where(Customer.name.in_(sorted(names))))
        ).scalars()
    }
    for missing in sorted(set(names) - set(known)):
        log.warning("directory: %s is given customer %r, which Secondline lacks", user, missing)
    return set(known.values())


async def _set_customers(db: AsyncSession, user: User, want: set[int]) -> bool:
    have = set(
        (await db.execute(select(UserCustomer.customer_id).where(UserCustomer.user_id == user.id)))
        .scalars()
        .all()
    )
    if have == want:
        return False
    await db.execute(delete(UserCustomer).where(UserCustomer.user_id == user.id))
    for customer_id in sorted(want):
        db.add(UserCustomer(user_id=user.id, customer_id=customer_id))
    return True


async def _set_keys(db: AsyncSession, user: User, lines: tuple[str, ...], now: dt.datetime) -> None:
    """The directory's keys replace the directory keys held; keys registered in Secondline stay."""
    wanted: dict[str, tuple[str, str]] = {}
    for line in lines:
        try:
            text, fingerprint, comment = staff_store.parse_ssh_public_key(line)
        except BrokerError as exc:
            log.warning("directory: a key of %s is not usable: %s", user.name, exc)
            continue
        wanted[fingerprint] = (text, comment)
    held = (
        (await db.execute(select(SshKey).where(SshKey.user_id == user.id, SshKey.source == SOURCE)))
        .scalars()
        .all()
    )
    for key in held:
        if key.fingerprint not in wanted:
            await db.delete(key)
            await shift_windows.end(db, user.id, key.fingerprint)
    have = {k.fingerprint for k in held}
    for fingerprint, (text, comment) in wanted.items():
        if fingerprint in have:
            continue
        taken = await db.scalar(select(SshKey.user_id).where(SshKey.fingerprint == fingerprint))
        if taken is not None:
            if taken != user.id:
                log.warning("directory: a key of %s is registered to another account", user.name)
            continue
        db.add(
            SshKey(
                user_id=user.id,
                fingerprint=fingerprint,
                public_key=text,
                comment=comment[:200],
                created_at=now,
                source=SOURCE,
            )
        )
    await db.flush()


async def directory_accounts(db: AsyncSession, directory: str) -> dict[str, User]:
    rows = await db.execute(
        select(User).where(User.source == SOURCE, User.source_name == directory)
    )
    return {u.name: u for u in rows.scalars()}
