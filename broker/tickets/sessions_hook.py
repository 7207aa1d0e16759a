"""The sessions of a ticket, for ``ticket show``: the hook the sessions part fills.

Two ways, first match wins:

1. The sessions feature sets ``app[TICKET_SESSIONS]`` to an async function
   ``(ticket number) -> sequence of JSON-ready mappings``; ``show`` prints what it returns.
2. Otherwise, when a ``sessions`` table with a ``ticket_id`` column is among the models,
   its rows for the ticket are read, limited to the columns in :data:`SESSION_COLUMNS`
   (so nothing secret is ever printed by accident).

Without either, a ticket has no sessions to show (an empty list).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Final

from aiohttp import web
from sqlalchemy import String, Table, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.db import all_models
from broker.rules import format_ticket_id

SessionsOfTicket = Callable[[int], Awaitable[Sequence[Mapping[str, object]]]]
TICKET_SESSIONS: Final[web.AppKey[SessionsOfTicket]] = web.AppKey("ticket_sessions")

SESSION_TABLE: Final = "sessions"
SESSION_COLUMNS: Final = (
    "id",
    "agent_id",
    "agent_name",
    "owner",
    "kind",
    "via",
    "state",
    "status",
    "started_at",
    "ended_at",
    "end_reason",
    "exit_status",
    "participants",
    "transcript_digest",
)
_MAX_SESSIONS: Final = 500


def _json_ready(value: object) -> object:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if value is None or isinstance(value, str | int | float | bool | list | dict):
        return value
    return str(value)


def session_table() -> Table | None:
    """The sessions table, once the sessions part registered one with a ``ticket_id``."""
    table = all_models.metadata.tables.get(SESSION_TABLE)
    if table is None or "ticket_id" not in table.c:
        return None
    return table


async def sessions_from_table(
    db: async_sessionmaker[AsyncSession], ticket_id: int
) -> list[dict[str, object]]:
    table = session_table()
    if table is None:
        return []
    column = table.c.ticket_id
    key: object = format_ticket_id(ticket_id) if isinstance(column.type, String) else ticket_id
    shown = [table.c[name] for name in SESSION_COLUMNS if name in table.c]
    order = [table.c[name] for name in ("started_at", "id") if name in table.c]
    async with db() as session:
        rows = await session.execute(
            select(*shown).where(column == key).order_by(*order).limit(_MAX_SESSIONS)
        )
        return [{k: _json_ready(v) for k, v in row.items()} for row in rows.mappings()]


async def sessions_of(
    app: web.Application, db: async_sessionmaker[AsyncSession], ticket_id: int
) -> list[dict[str, object]]:
    """The sessions of ticket ``ticket_id`` as JSON-ready dicts, oldest first."""
    hook = app.get(TICKET_SESSIONS)
    if hook is not None:
        return [{str(k): _json_ready(v) for k, v in s.items()} for s in await hook(ticket_id)]
    return await sessions_from_table(db, ticket_id)
