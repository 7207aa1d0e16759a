"""The authenticator code as a second factor, one mechanism for the console sign-in and the
SSH gateway: a code matches the account's TOTP secret and its time step is claimed in the
database, so each code works once wherever it is typed (two racing sign-ins: one wins).

Both callers count failures in ``services.login_throttle`` under the same keys
(``user:NAME`` and ``src:ADDRESS``): ten wrong codes lock the account and the address out of
both the console and the gateway for the same window."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from broker.auth import totp
from broker.db.models_staff import User


def throttle_keys(user_name: str, source: str) -> tuple[str, str]:
    return f"user:{user_name}", f"src:{source}"


async def claim_code(db: AsyncSession, user: User, code: str | None, now: dt.datetime) -> bool:
    """True when ``code`` is the account's current code and had not been used: its step is
    then spent. False for a wrong, malformed, reused or (no secret enrolled) any code."""
    if user.totp_secret is None:
        return False
    step = totp.matched_step(user.totp_secret, code, now.timestamp(), user.totp_last_step)
    if step is None:
        return False
    result = await db.execute(
        update(User)
        .where(User.id == user.id, User.totp_last_step < step)
        .values(totp_last_step=step)
    )
    return int(getattr(result, "rowcount", 0) or 0) == 1
