"""The console as a broker feature: routes, the static front end, the REST API's cookie
authenticator, and the watcher that closes live pages of ended sessions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

from aiohttp import web

from broker.auth.principal import WEB_AUTH
from broker.console import (
    events,
    live,
    login,
    pages_admin,
    pages_kb,
    pages_kb_edit,
    pages_sessions,
    pages_tickets,
    session_store,
    ssh_shift,
)
from broker.console.api_calls import ApiCalls
from broker.console.auth import web_authenticator
from broker.console.i18n import Catalogues
from broker.console.live import LiveConnections
from broker.console.pages import page_handler
from broker.console.render import Renderer
from broker.console.state import CONSOLE, ConsoleState
from broker.services import SERVICES, Services
from broker.supervision import OnFailure, Supervisor

log = logging.getLogger(__name__)

# web/dist next to the package in a source checkout (`make web` builds it).
WEB_DIST: Final = Path(__file__).resolve().parents[2] / "web" / "dist"
PURGE_SECONDS: Final = 3600
#: At shutdown, how long the watcher and the purger may take to finish their round.
STOP_GRACE_S: Final = 5.0


async def _root(_request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther("/console/")


async def _front_end_missing(_request: web.Request) -> web.StreamResponse:
    return web.Response(
        status=404, text="the console's front end is not built; run `make web` on the broker"
    )


def _add_static(app: web.Application, dist: Path) -> None:
    if dist.is_dir():
        # follow_symlinks=False: a link inside dist can never lead out of it.
        app.router.add_static("/static/", dist, follow_symlinks=False, show_index=False)
    else:
        log.warning("console front end missing at %s; run `make web`", dist)
        app.router.add_get("/static/{tail:.*}", _front_end_missing)


async def _watch_ctx(app: web.Application) -> AsyncIterator[None]:
    state = app[CONSOLE]
    services = app[SERVICES]
    tasks = Supervisor("console")
    stop = tasks.stopping
    # RESTART for both: they keep nothing between rounds (the watcher reads the held
    # connections and the database afresh), and without them a signed-out console would
    # keep its live pages, and expired sign-ins would pile up.
    tasks.keep(
        "live page watcher",
        lambda: live.watch(state.live, services, stop),
        on_failure=OnFailure.RESTART,
    )
    tasks.keep("sign-in purger", lambda: _purge(services, stop), on_failure=OnFailure.RESTART)
    try:
        yield
    finally:
        await state.live.close_where(lambda _h: True, "shutdown")
        await tasks.stop(grace=STOP_GRACE_S)


async def _purge(services: Services, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await session_store.purge(services)
        except Exception:  # a task boundary: try again at the next round
            log.exception("purging console sessions failed")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(PURGE_SECONDS):
                await stop.wait()


def setup(app: web.Application, *, api: ApiCalls, dist: Path = WEB_DIST) -> None:
    """Add the console to the broker app; ``api`` runs the REST API's handlers in-process."""
    app[CONSOLE] = ConsoleState(
        renderer=Renderer.create(Catalogues.load()),
        api=api,
        live=LiveConnections(),
    )
    app[WEB_AUTH] = web_authenticator
    r = app.router
    r.add_get("/", _root)
    r.add_get("/console", _root)
    r.add_get("/console/login", login.login_page)
    r.add_post("/console/login", login.login_submit)
    r.add_get("/console/totp-setup", login.totp_setup_page)
    r.add_post("/console/totp-setup", login.totp_setup_submit)
    r.add_post("/console/logout", page_handler(login.logout))
    r.add_post("/console/logout-everywhere", page_handler(login.logout_everywhere))
    r.add_get("/console/settings", page_handler(login.settings_page))
    r.add_post("/console/settings/language", page_handler(login.settings_language))
    r.add_post("/console/settings/ssh-shift", page_handler(ssh_shift.allow_keys_for_shift))
    pages_tickets.add_routes(r)
    pages_sessions.add_routes(r)
    pages_admin.add_routes(r)
    pages_kb.add_routes(r)
    pages_kb_edit.add_routes(r)
    events.add_routes(r)
    _add_static(app, dist)
    app.cleanup_ctx.append(_watch_ctx)
