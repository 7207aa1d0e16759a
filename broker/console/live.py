"""Open live connections of console sessions (event streams, terminals) and the watcher that
closes them when their session ends: sign-out, "log out everywhere", a disabled account or the
absolute timeout. The watcher reads the database, so a change made by any broker node (or the
CLI) reaches every node's pages within :data:`CHECK_SECONDS`.

Other features hold their browser connections here::

    user = await console_user(request)           # broker.console.auth
    async with live.hold(user, close=close_ws, keeps_alive=True):
        ...                                      # serve the WebSocket

``close`` is awaited once, with the reason (``"signed_out"``), when the session ends.

WebSocket upgrades that sign in with the console cookie are held here by the REST API's
cookie authenticator itself (:func:`hold_upgrade`), so a terminal WebSocket is closed within
seconds of its session ending even where its handler does not hold it: the connection is cut
(the browser sees close code 1006). A handler that holds its socket with :meth:`hold` closes
it politely instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web

from broker.console import session_store
from broker.console.session_store import ConsoleUser
from broker.services import Services

log = logging.getLogger(__name__)

# Disabling an account must close its pages within 5 s; checking every 2 s leaves room for a
# slow database round trip.
CHECK_SECONDS: Final = 2.0
TOUCH_EVERY: Final = 30  # checks, i.e. once a minute

Closer = Callable[[str], Awaitable[object]]


@dataclass(eq=False)
class Held:
    session_id: str
    user_id: int
    close: Closer
    keeps_alive: bool
    closed: bool = False


@dataclass
class LiveConnections:
    """Every live connection this node holds, by console session."""

    _held: set[Held] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self._held)

    @contextlib.asynccontextmanager
    async def hold(
        self, user: ConsoleUser, *, close: Closer, keeps_alive: bool = False
    ) -> AsyncIterator[Held]:
        """Track one connection of ``user`` while the block runs.

        ``keeps_alive``: the connection is interactive work (a terminal), so it keeps the
        session from running into its idle timeout."""
        held = self.add(user, close=close, keeps_alive=keeps_alive)
        try:
            yield held
        finally:
            self.discard(held)

    def add(self, user: ConsoleUser, *, close: Closer, keeps_alive: bool = False) -> Held:
        """Track a connection until :meth:`discard` (for holders that are no ``async with``)."""
        held = Held(user.session_id, user.user_id, close, keeps_alive)
        self._held.add(held)
        return held

    def discard(self, held: Held) -> None:
        self._held.discard(held)

    def session_ids(self) -> set[str]:
        return {h.session_id for h in self._held}

    def interactive_session_ids(self) -> set[str]:
        return {h.session_id for h in self._held if h.keeps_alive}

    async def close_where(self, predicate: Callable[[Held], bool], reason: str) -> int:
        """Close every held connection matching ``predicate``; returns how many."""
        doomed = [h for h in self._held if predicate(h) and not h.closed]
        for held in doomed:
            held.closed = True
            try:
                await held.close(reason)
            except Exception:  # a connection boundary: one broken peer must not stop the rest
                log.exception("closing a live connection failed")
        return len(doomed)

    async def close_user(self, user_id: int, reason: str) -> int:
        return await self.close_where(lambda h: h.user_id == user_id, reason)

    async def close_session(self, session_id: str, reason: str) -> int:
        return await self.close_where(lambda h: h.session_id == session_id, reason)


async def check_once(live: LiveConnections, services: Services, *, touch: bool) -> int:
    """Close connections whose session is no longer valid; returns how many were closed."""
    ids = live.session_ids()
    if not ids:
        return 0
    if touch:
        await session_store.touch(services, live.interactive_session_ids())
    valid = await session_store.still_valid(services, ids)
    gone = ids - valid
    if not gone:
        return 0
    return await live.close_where(lambda h: h.session_id in gone, "signed_out")


async def watch(live: LiveConnections, services: Services, stop: asyncio.Event) -> None:
    """Run :func:`check_once` every :data:`CHECK_SECONDS` until ``stop`` is set."""
    tick = 0
    while not stop.is_set():
        tick += 1
        try:
            await check_once(live, services, touch=tick % TOUCH_EVERY == 0)
        except Exception:  # a task boundary: a database hiccup must not end the watcher
            log.exception("checking live console sessions failed")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CHECK_SECONDS):
                await stop.wait()


def hold_upgrade(live: LiveConnections, request: web.Request, user: ConsoleUser) -> None:
    """Hold a WebSocket upgrade of ``user`` until its handler finishes; when the session ends,
    cut the connection."""

    async def cut(_reason: str) -> None:
        transport = request.transport
        if transport is not None:
            transport.close()

    held = live.add(user, close=cut, keeps_alive=True)
    request.task.add_done_callback(lambda _task: live.discard(held))
