"""Live updates of console pages over Server-Sent Events.

A live page (queue, ticket, live sessions) opens ``GET /console/events?view=...`` with its
filters. The server re-renders the page's live parts every :data:`POLL_SECONDS` through the
same templates and API calls as the page itself, and sends a part only when its HTML changed:
``event: update`` with ``{"target": element id, "html": ...}``. The HTML is produced by our
autoescaping templates, so the page may insert it as it is.

The stream is held in :class:`broker.console.live.LiveConnections`: when the session ends
(sign-out, log out everywhere, a disabled account), the server sends ``event: signed_out``
and closes it. A client that cannot take the data in time is cut off, never waited for."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

from aiohttp import web

from broker.console.auth import console_user
from broker.console.pages import Page, request_language
from broker.console.pages_sessions import render_sessions_rows
from broker.console.pages_tickets import render_queue_rows, render_ticket_live
from broker.console.state import CONSOLE
from broker.errors import BrokerError

log = logging.getLogger(__name__)

POLL_SECONDS: Final = 3.0
KEEPALIVE_SECONDS: Final = 20.0
WRITE_TIMEOUT: Final = 10.0

LiveView = Callable[[Page, Mapping[str, str]], Awaitable[dict[str, str]]]
VIEWS: Final[Mapping[str, LiveView]] = {
    "queue": render_queue_rows,
    "ticket": render_ticket_live,
    "sessions": render_sessions_rows,
}


def sse_event(name: str, data: object) -> bytes:
    """One event; the JSON has no raw line breaks, so it is a single data line."""
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _send(response: web.StreamResponse, chunk: bytes) -> None:
    async with asyncio.timeout(WRITE_TIMEOUT):
        await response.write(chunk)


async def events(request: web.Request) -> web.StreamResponse:
    user = await console_user(request)
    if user is None:
        return web.Response(status=401, text="sign in first")
    view = VIEWS.get(request.query.get("view", ""))
    if view is None:
        return web.Response(status=404, text="no such live view")
    state = request.app[CONSOLE]
    page = Page(request, user, request_language(request, user), state, None)
    query = {k: v[:100] for k, v in list(request.query.items())[:10]}
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    ended = asyncio.Event()
    reason: list[str] = []

    async def close(why: str) -> None:
        reason.append(why)
        ended.set()

    sent: dict[str, str] = {}
    async with state.live.hold(user, close=close):
        try:
            await _send(response, b"retry: 5000\n\n")
            idle = 0.0
            while not ended.is_set():
                try:
                    parts = await view(page, query)
                except BrokerError as error:
                    await _send(response, sse_event("gone", {"code": error.code}))
                    break
                changed = {k: v for k, v in parts.items() if sent.get(k) != v}
                for target, html in changed.items():
                    await _send(response, sse_event("update", {"target": target, "html": html}))
                sent.update(changed)
                idle = 0.0 if changed else idle + POLL_SECONDS
                if idle >= KEEPALIVE_SECONDS:
                    await _send(response, b": keepalive\n\n")
                    idle = 0.0
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(POLL_SECONDS):
                        await ended.wait()
            if reason:
                await _send(response, sse_event(reason[0], {}))
        except (ConnectionResetError, TimeoutError):
            log.info("live page of %s went away or could not keep up", user.name)
    with contextlib.suppress(ConnectionResetError):
        await response.write_eof()
    return response


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/console/events", events)
