"""Who is calling, as every part of the broker sees it: a :class:`Principal`, found from a
bearer token or a console session (``broker.web.auth``), and the hook through which the
console signs in browsers (``WEB_AUTH``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.auth.scopes import Role
from broker.db.models_staff import Customer, UserCustomer


@dataclass(frozen=True)
class Principal:
    user_id: int
    name: str
    role: Role | None  # None: not signed in (public routes only)
    scopes: frozenset[str]
    customers: frozenset[str] | None  # None: every customer
    token_id: str | None = None
    via: str = "token"  # "token", "web" or "anonymous"


ANONYMOUS: Final = Principal(0, "anonymous", None, frozenset(), frozenset(), via="anonymous")

# Set by the console: the principal of a browser's console session, or None.
WebAuthenticator = Callable[[web.Request], Awaitable[Principal | None]]
WEB_AUTH: Final[web.AppKey[WebAuthenticator]] = web.AppKey("web_auth")


async def load_customers(
    db: async_sessionmaker[AsyncSession], user_id: int
) -> frozenset[str] | None:
    """The customers a staff member is limited to, or None for every customer."""
    async with db() as session:
        rows = await session.execute(
            select(Customer.name)
            .join(UserCustomer, UserCustomer.customer_id == Customer.id)
            .where(UserCustomer.user_id == user_id)
        )
        names = frozenset(rows.scalars().all())
    return names or None
