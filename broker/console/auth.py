"""Who is at the browser: the console session cookie, the CSRF check for requests that change
something, and the same-origin check; plus the authenticator the REST API calls (``WEB_AUTH``)
so console JavaScript can use /api/v1 with the cookie.

A cookie alone never changes anything: every state-changing request needs the session's CSRF
token (form field ``_csrf`` or header ``X-CSRF-Token``) and, where the browser says where it
comes from (``Origin``, ``Sec-Fetch-Site``), our own origin."""

from __future__ import annotations

from typing import Final

from aiohttp import web

from broker.auth.principal import Principal
from broker.config import BrokerConfig, own_urls
from broker.console import session_store
from broker.console.errors import CsrfRefused, OriginRefused
from broker.console.live import hold_upgrade
from broker.console.session_store import ConsoleUser
from broker.console.state import CONSOLE
from broker.console.web_session import CSRF_HEADER, SAFE_METHODS, SESSION_COOKIE, tokens_match
from broker.origin import origin_allowed
from broker.services import SERVICES

_USER: Final = web.RequestKey("console_user", ConsoleUser)
_LOOKED_UP: Final = web.RequestKey("console_user_looked_up", bool)


async def console_user(request: web.Request) -> ConsoleUser | None:
    """The person signed in with this request's cookie, or None (looked up once per request)."""
    if request.get(_LOOKED_UP):
        return request.get(_USER)
    request[_LOOKED_UP] = True
    found = await session_store.load(request.app[SERVICES], request.cookies.get(SESSION_COOKIE))
    if isinstance(found, ConsoleUser):
        request[_USER] = found
        return found
    return None


def same_origin(request: web.Request, config: BrokerConfig) -> bool:
    """Whether the browser says this request comes from our own pages.

    Browsers send ``Origin`` on every POST and WebSocket upgrade, and ``Sec-Fetch-Site`` on
    every request; a client that sends neither (curl, scripts) is judged by its CSRF token."""
    origin = request.headers.get("Origin")
    if origin is not None and not origin_allowed(origin, *own_urls(config)):
        return False
    site = request.headers.get("Sec-Fetch-Site")
    return site is None or site in ("same-origin", "none")


async def refuse(request: web.Request, actor: str, action: str, reason: str) -> None:
    await request.app[SERVICES].audit.record(
        actor=actor,
        action=action,
        target=f"{request.method} {request.path}"[:200],
        outcome="denied",
        source=request.remote or "",
        details={"reason": reason, "origin": request.headers.get("Origin", "")[:100]},
    )


async def check_state_change(request: web.Request, user: ConsoleUser, token: str | None) -> None:
    """Raise (after auditing) unless a state-changing request is same-origin and carries the
    session's CSRF token."""
    services = request.app[SERVICES]
    if not same_origin(request, services.config):
        await refuse(request, user.name, "console.origin_refused", "cross-origin request")
        raise OriginRefused(
            "this request came from another site and was refused; use the console itself"
        )
    if not tokens_match(user.csrf_token, token):
        await refuse(request, user.name, "console.csrf_refused", "missing or wrong CSRF token")
        raise CsrfRefused(
            "the form's security token is missing or out of date; reload the page and try again"
        )


async def web_authenticator(request: web.Request) -> Principal | None:
    """``WEB_AUTH`` for /api/v1: the console session, with CSRF on state-changing methods."""
    user = await console_user(request)
    if user is None:
        return None
    if request.method not in SAFE_METHODS:
        await check_state_change(request, user, request.headers.get(CSRF_HEADER))
    if request.headers.get("Upgrade", "").lower() == "websocket":
        hold_upgrade(request.app[CONSOLE].live, request, user)
    return user.principal()
