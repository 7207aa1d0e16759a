"""Hooks other features give the session machinery (``app[SESSION_START_HOOKS]``, set before
the sessions feature starts): each runs in the transaction that marks a session live, so
what it writes (a connector's event) commits with the start or not at all."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from broker.sessions.facts import SessionFacts

SessionStartHook = Callable[[AsyncSession, SessionFacts, dt.datetime], Awaitable[None]]
SESSION_START_HOOKS: Final = web.AppKey("session_start_hooks", list[SessionStartHook])
