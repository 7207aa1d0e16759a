"""Code-less SSH windows (the ``per-shift`` policy, docs/identity.md): after a good
authenticator code, at the gateway or through the console's "allow my key for this shift",
a staff key is let in without a code until the window ends. One row per user and key;
opening again moves the end. Console sign-out, disabling the account and removing the key
end windows early (they delete the rows)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from broker.db.models_staff import SshKey, SshShiftWindow


async def is_open(db: AsyncSession, user_id: int, fingerprint: str, now: dt.datetime) -> bool:
    row = (
        await db.execute(
            select(SshShiftWindow.id).where(
                SshShiftWindow.user_id == user_id,
                SshShiftWindow.fingerprint == fingerprint,
                SshShiftWindow.expires_at > now,
            )
        )
    ).first()
    return row is not None


async def open_for(
    db: AsyncSession,
    user_id: int,
    fingerprints: Iterable[str],
    *,
    now: dt.datetime,
    hours: int,
    via: str,
) -> dt.datetime:
    """Open (or move the end of) the window of each key; returns when they end."""
    until = now + dt.timedelta(hours=hours)
    for fingerprint in fingerprints:
        row = (
            await db.execute(
                select(SshShiftWindow).where(
                    SshShiftWindow.user_id == user_id,
                    SshShiftWindow.fingerprint == fingerprint,
                )
            )
        ).scalar_one_or_none()
        if row is None:
            db.add(
                SshShiftWindow(
                    user_id=user_id,
                    fingerprint=fingerprint,
                    opened_at=now,
                    expires_at=until,
                    opened_via=via,
                )
            )
        else:
            row.opened_at, row.expires_at, row.opened_via = now, until, via
    await db.flush()
    return until


async def active_key_fingerprints(db: AsyncSession, user_id: int) -> list[str]:
    rows = await db.execute(
        select(SshKey.fingerprint).where(SshKey.user_id == user_id, SshKey.revoked_at.is_(None))
    )
    return list(rows.scalars().all())


async def end(db: AsyncSession, user_id: int, fingerprint: str | None = None) -> int:
    """End the user's windows (or the one of ``fingerprint``); returns how many ended."""
    query = delete(SshShiftWindow).where(SshShiftWindow.user_id == user_id)
    if fingerprint is not None:
        query = query.where(SshShiftWindow.fingerprint == fingerprint)
    result = await db.execute(query)
    return int(getattr(result, "rowcount", 0) or 0)
