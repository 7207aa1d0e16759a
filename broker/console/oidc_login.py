"""Signing in to the console with OpenID Connect (authorization code with PKCE).

``/console/oidc/start`` sends the browser to the provider with a fresh ``state``, ``nonce``
and PKCE verifier, kept in a ``__Host-`` cookie of that browser only (SameSite=Lax: the
provider's redirect back is a cross-site navigation). ``/console/oidc/callback`` takes the
code only with the same ``state``, trades it with the verifier, and checks the ID token
(:mod:`broker.oidc.tokens`). The account is made or updated from the token's claims (source
``oidc``); the authenticator code is asked unless the token's ``amr`` says the provider did
multi-factor. ``next`` goes through :func:`safe_next` on the way in and on the way out.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import html
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Final
from urllib.parse import quote

from aiohttp import web
from sqlalchemy import select

from broker.auth import second_factor, totp
from broker.console import session_store
from broker.console.auth import refuse, same_origin
from broker.console.messages import DIRECTORY_REFUSED, LOGIN_THROTTLED, TOTP_MISMATCH
from broker.console.pages import read_form, render_page, request_language
from broker.console.session_store import ConsoleUser
from broker.console.state import CONSOLE
from broker.console.web_session import (
    CSRF_FIELD,
    SESSION_COOKIE,
    Stage,
    clip_user_agent,
    safe_next,
    tokens_match,
)
from broker.db.models_staff import User
from broker.directory import accounts
from broker.directory.rules import decide
from broker.errors import InputError
from broker.oidc.provider import OidcSettings, Pending, Provider, ProviderError
from broker.oidc.tokens import IdToken, TokenRefused, person_of, verify_id_token
from broker.services import SERVICES

log = logging.getLogger(__name__)

OIDC: Final = web.AppKey("oidc", Provider)
OIDC_COOKIE: Final = "__Host-secondline-oidc"
PENDING_SECONDS: Final = 600
SOURCE: Final = "oidc"
START_AGAIN: Final = (
    "The sign-in could not be finished (it took too long, or was started in another "
    "browser or tab). Start it again."
)


def provider_name(app: web.Application) -> str | None:
    """The sign-in button's provider name, or None when OpenID Connect is off."""
    provider = app.get(OIDC)
    return provider.settings.name if provider is not None else None


def _redirect_uri(request: web.Request) -> str:
    return request.app[SERVICES].config.public_url.rstrip("/") + "/console/oidc/callback"


def _encode(pending: Pending) -> str:
    raw = json.dumps([pending.state, pending.nonce, pending.verifier, pending.next])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode(value: str | None) -> Pending | None:
    if not value or len(value) > 2048:
        return None
    try:
        items = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    except (ValueError, binascii.Error):
        return None
    if not isinstance(items, list) or len(items) != 4 or not all(isinstance(i, str) for i in items):
        return None
    return Pending(items[0], items[1], items[2], safe_next(items[3]))


def _provider(request: web.Request) -> Provider:
    provider = request.app.get(OIDC)
    if provider is None:
        raise web.HTTPNotFound(text="OpenID Connect sign-in is not set up on this broker")
    return provider


def _login_error(request: web.Request, message: str, status: int) -> web.Response:
    from broker.console.login import login_form  # the login page imports this module

    response = login_form(request, request_language(request, None), error=message, status=status)
    response.del_cookie(OIDC_COOKIE, path="/", secure=True, httponly=True, samesite="Lax")
    return response


async def start(request: web.Request) -> web.StreamResponse:
    provider = _provider(request)
    target = safe_next(request.query.get("next"))
    try:
        url, pending = await provider.start(_redirect_uri(request), target)
    except ProviderError as exc:
        log.warning("oidc: %s", exc.message)
        return _login_error(request, exc.message, 503)
    response = web.HTTPSeeOther(url)
    response.set_cookie(
        OIDC_COOKIE,
        _encode(pending),
        secure=True,
        httponly=True,
        samesite="Lax",
        path="/",
        max_age=PENDING_SECONDS,
    )
    raise response


async def _failed(request: web.Request, actor: str, reason: str) -> None:
    services = request.app[SERVICES]
    await services.audit.record(
        actor=actor[:64] or "anonymous",
        action="login.failed",
        outcome="denied",
        source=request.remote or "",
        details={"via": "oidc", "reason": reason[:300]},
    )


async def callback(request: web.Request) -> web.StreamResponse:
    provider = _provider(request)
    services = request.app[SERVICES]
    pending = _decode(request.cookies.get(OIDC_COOKIE))
    state = request.query.get("state", "")[:200]
    if pending is None or not hmac.compare_digest(pending.state.encode(), state.encode()):
        await _failed(request, "", "state missing or mismatched")
        return _login_error(request, START_AGAIN, 400)
    if "error" in request.query or "code" not in request.query:
        await _failed(request, "", f"provider error {request.query.get('error', '')[:60]}")
        return _login_error(request, START_AGAIN, 400)
    settings = provider.settings
    try:
        raw = await provider.exchange(
            request.query["code"][:2048], pending.verifier, _redirect_uri(request)
        )
        keys = await provider.keys()
        try:
            token = _verify(raw, keys, settings, pending)
        except TokenRefused:
            # The provider may have rotated its keys: fetch them once more, then decide.
            token = _verify(raw, await provider.keys(refresh=True), settings, pending)
    except ProviderError as exc:
        await _failed(request, "", exc.message)
        return _login_error(request, exc.message, 503)
    except TokenRefused as exc:
        await _failed(request, "", exc.reason)
        return _login_error(request, START_AGAIN, 401)
    person = person_of(token, settings.groups_claim)
    if person is None:
        await _failed(request, token.subject, "no usable preferred_username")
        return _login_error(request, START_AGAIN, 401)
    verdict = decide(person, settings.rules)
    now = services.clock()
    async with services.db() as db, db.begin():
        applied = await accounts.apply(
            db,
            directory=settings.name,
            name=person.name,
            dn=token.subject,
            verdict=verdict,
            now=now,
            create=True,
            source=SOURCE,
        )
    why = applied.skipped or applied.refusal
    lang = request_language(request, None)
    if why or applied.user_id is None:
        await _failed(request, person.name, why or "no account")
        text = request.app[CONSOLE].renderer.gettext(lang, DIRECTORY_REFUSED)
        return _login_error(request, text.format(reason=why or "no account"), 403)
    mfa = token.mfa(settings.mfa_values)
    async with services.db() as db, db.begin():
        user = (await db.execute(select(User).where(User.id == applied.user_id))).scalar_one()
        stage: Stage = "active" if mfa else ("enrol" if user.totp_secret is None else "code")
        new = await session_store.create(
            db,
            user,
            stage=stage,
            now=now,
            source=request.remote or "",
            user_agent=clip_user_agent(request.headers.get("User-Agent")),
            pending_totp=totp.new_secret() if stage == "enrol" else None,
        )
    target = pending.next
    await services.audit.record(
        actor=person.name,
        action="login" if stage == "active" else "login.oidc_code_needed",
        source=request.remote or "",
        details={"via": "oidc", "provider_mfa": mfa, "stage": stage},
    )
    location = {
        "active": target,
        "enrol": "/console/totp-setup?next=" + quote(target, safe=""),
        "code": "/console/oidc/code?next=" + quote(target, safe=""),
    }[stage]
    # Not a redirect: this response ends a navigation that started at the provider, and a
    # browser sends no SameSite=Strict cookie (ours) on any step of a cross-site chain. A
    # page of ours that moves on starts a same-site navigation, which carries the cookie.
    target_html = html.escape(location, quote=True)
    response = web.Response(
        text=(
            f'<!doctype html><meta charset="utf-8"><meta http-equiv="refresh" '
            f'content="0;url={target_html}"><title>Secondline</title>'
            f'<p><a href="{target_html}">Secondline</a></p>'
        ),
        content_type="text/html",
    )
    _session_cookie(response, new.cookie_value)
    response.del_cookie(OIDC_COOKIE, path="/", secure=True, httponly=True, samesite="Lax")
    return response


def _session_cookie(response: web.StreamResponse, value: str) -> None:
    response.set_cookie(
        SESSION_COOKIE, value, secure=True, httponly=True, samesite="Strict", path="/"
    )


def _verify(raw: str, keys: dict[str, object], settings: OidcSettings, pending: Pending) -> IdToken:
    return verify_id_token(
        raw,
        keys,
        issuer=settings.issuer,
        client_id=settings.client_id,
        nonce=pending.nonce,
        now=time.time(),
    )


async def _coding(request: web.Request) -> ConsoleUser | None:
    found = await session_store.load(
        request.app[SERVICES], request.cookies.get(SESSION_COOKIE), stage="code"
    )
    return found if isinstance(found, ConsoleUser) else None


def _code_form(
    request: web.Request, user: ConsoleUser, target: str, error: str = "", status: int = 200
) -> web.Response:
    return render_page(
        request,
        request_language(request, user),
        "oidc_code.html",
        {"csrf": user.csrf_token, "next": target, "error": error, "user_name": user.name},
        status=status,
    )


async def code_page(request: web.Request) -> web.StreamResponse:
    user = await _coding(request)
    if user is None:
        raise web.HTTPSeeOther("/console/login")
    return _code_form(request, user, safe_next(request.query.get("next")))


async def code_submit(request: web.Request) -> web.StreamResponse:
    user = await _coding(request)
    if user is None:
        raise web.HTTPSeeOther("/console/login")
    services = request.app[SERVICES]
    renderer = request.app[CONSOLE].renderer
    lang = request_language(request, user)
    try:
        form = await read_form(request)
    except InputError as exc:
        return _code_form(request, user, "/console/", exc.message, exc.http_status)
    target = safe_next(str(form.get("next", ""))[:400])
    if not same_origin(request, services.config) or not tokens_match(
        user.csrf_token, str(form.get(CSRF_FIELD, ""))
    ):
        await refuse(request, user.name, "console.csrf_refused", "OpenID code form")
        raise web.HTTPSeeOther("/console/login")
    now_mono = time.monotonic()
    keys = second_factor.throttle_keys(user.name, request.remote or "")
    if any(services.login_throttle.retry_after(k, now_mono) > 0 for k in keys):
        return _code_form(request, user, target, renderer.gettext(lang, LOGIN_THROTTLED), 429)
    now = services.clock()
    async with services.db() as db, db.begin():
        row = (await db.execute(select(User).where(User.id == user.user_id))).scalar_one()
        ok = not row.disabled and await second_factor.claim_code(
            db, row, str(form.get("code", ""))[:16], now
        )
        new = None
        if ok:
            await session_store.end(db, user.session_id)
            new = await session_store.create(
                db,
                row,
                stage="active",
                now=now,
                source=request.remote or "",
                user_agent=clip_user_agent(request.headers.get("User-Agent")),
            )
    if new is None:
        for key in keys:
            services.login_throttle.failed(key, now_mono)
        await _failed(request, user.name, "wrong or reused authenticator code")
        return _code_form(request, user, target, renderer.gettext(lang, TOTP_MISMATCH), 401)
    await services.audit.record(
        actor=user.name,
        action="login",
        source=request.remote or "",
        details={"via": "oidc", "provider_mfa": False},
    )
    response = web.HTTPSeeOther(target)
    _session_cookie(response, new.cookie_value)
    raise response


async def _oidc_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = OidcSettings.of(app[SERVICES].config)
    provider = Provider(settings) if settings is not None else None
    if provider is not None:
        app[OIDC] = provider
    try:
        yield
    finally:
        if provider is not None:
            await provider.close()


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(_oidc_ctx)
    app.router.add_get("/console/oidc/start", start)
    app.router.add_get("/console/oidc/callback", callback)
    app.router.add_get("/console/oidc/code", code_page)
    app.router.add_post("/console/oidc/code", code_submit)
