"""Signing in and out: password and TOTP, first-time TOTP enrolment with a QR code shown once,
throttling per account and per source, cookie rotation, sign-out and "log out everywhere".

Every failed sign-in gets the same answer (unknown user, wrong password, wrong or reused code,
disabled account), costs the same password hashing time, and counts against both the account
name and the source address (``services.login_throttle``, shared with ``/api/v1/auth/login``)."""

from __future__ import annotations

import asyncio
import time
from typing import Final
from urllib.parse import quote, urlsplit

from aiohttp import web
from markupsafe import Markup
from sqlalchemy import select, update

from broker.auth import second_factor, shift_windows, totp
from broker.auth.credentials import verify_password
from broker.console import session_store
from broker.console.auth import console_user, refuse, same_origin
from broker.console.language import Language
from broker.console.messages import (
    DIRECTORY_REFUSED,
    LOGIN_FAILED,
    LOGIN_FORM_EXPIRED,
    LOGIN_THROTTLED,
    TOTP_MISMATCH,
)
from broker.console.oidc_login import provider_name
from broker.console.pages import Page, read_form, redirect, render_page, request_language
from broker.console.session_store import ConsoleUser
from broker.console.state import CONSOLE
from broker.console.web_session import (
    CSRF_FIELD,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    clip_user_agent,
    new_secret,
    safe_next,
    session_id_of,
    tokens_match,
)
from broker.db.models_console import ConsoleSession
from broker.db.models_staff import User
from broker.directory.feature import directory_check
from broker.errors import InputError
from broker.rules import InvalidName, parse_user_name
from broker.rules.outside_text import clean_line
from broker.services import SERVICES

LOGIN_COOKIE_SECONDS: Final = 3600


def _set_cookie(response: web.StreamResponse, name: str, value: str, max_age: int | None) -> None:
    # __Host- cookies must be Secure, Path=/ and carry no Domain: browsers enforce it, so no
    # subdomain or plain-HTTP page can plant or read them.
    response.set_cookie(
        name, value, secure=True, httponly=True, samesite="Strict", path="/", max_age=max_age
    )


def _clear_cookie(response: web.StreamResponse, name: str) -> None:
    response.del_cookie(name, path="/", secure=True, httponly=True, samesite="Strict")


def login_form(
    request: web.Request,
    lang: Language,
    *,
    error: str = "",
    status: int = 200,
    user_name: str = "",
    next_target: str | None = None,
) -> web.Response:
    token = new_secret()
    response = render_page(
        request,
        lang,
        "login.html",
        {
            "csrf": token,
            "error": error,
            "next": safe_next(next_target or request.query.get("next")),
            "user_name": user_name,
            "oidc_name": provider_name(request.app),
        },
        status=status,
    )
    _set_cookie(response, LOGIN_COOKIE, token, LOGIN_COOKIE_SECONDS)
    return response


async def login_page(request: web.Request) -> web.StreamResponse:
    if await console_user(request) is not None:
        raise web.HTTPSeeOther(safe_next(request.query.get("next")))
    return login_form(request, request_language(request, None))


async def login_submit(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    renderer = request.app[CONSOLE].renderer
    lang = request_language(request, None)
    try:
        form = await read_form(request)
    except InputError as exc:
        return login_form(request, lang, status=exc.http_status, error=exc.message)
    name = str(form.get("user", ""))[:64].strip().lower()
    password = str(form.get("password", ""))[:1024]
    code = str(form.get("code", ""))[:16]
    target = safe_next(str(form.get("next", ""))[:400])
    source = request.remote or ""
    if not same_origin(request, services.config) or not tokens_match(
        request.cookies.get(LOGIN_COOKIE, ""), str(form.get(CSRF_FIELD, ""))
    ):
        # Nobody is signed in yet: counted into the source's summary (broker.audit.anonymous).
        await services.anonymous.refused(
            source=source,
            action="console.csrf_refused",
            target=f"{request.method} {request.path}"[:200],
            reason="sign-in form",
        )
        return login_form(
            request,
            lang,
            next_target=target,
            status=403,
            error=renderer.gettext(lang, LOGIN_FORM_EXPIRED),
        )
    now_mono = time.monotonic()
    keys = second_factor.throttle_keys(name, source)
    throttle = services.login_throttle
    if any(throttle.retry_after(k, now_mono) > 0 for k in keys):
        await services.audit.record(
            actor=clean_line(name, 64) or "anonymous",
            action="login.throttled",
            outcome="denied",
            source=source,
            details={"via": "console"},
        )
        return login_form(
            request,
            lang,
            next_target=target,
            status=429,
            user_name=name,
            error=renderer.gettext(lang, LOGIN_THROTTLED),
        )
    try:
        valid_name = parse_user_name(name)
    except InvalidName:
        valid_name = ""
    directory = await directory_check(request.app, valid_name, password)
    now = services.clock()
    async with services.db() as db, db.begin():
        user = None
        if valid_name:
            user = (
                await db.execute(select(User).where(User.name == valid_name))
            ).scalar_one_or_none()
        if directory.outcome == "not_directory":
            # Always hash, so an unknown name costs as long as a known one; in a thread,
            # because argon2 takes a good part of a second the event loop must not wait for.
            ok = await asyncio.to_thread(
                verify_password, user.password_hash if user else None, password
            )
        else:
            # The directory checked the password (a bind as the person) and synced them.
            ok = directory.outcome == "ok"
        ok = ok and user is not None and not user.disabled
        enrol = False
        if ok and user is not None:
            if user.totp_secret is None:
                enrol = True
            else:
                ok = await second_factor.claim_code(db, user, code, now)
        new = None
        if ok and user is not None:
            new = await session_store.create(
                db,
                user,
                stage="enrol" if enrol else "active",
                now=now,
                source=source,
                user_agent=clip_user_agent(request.headers.get("User-Agent")),
                pending_totp=totp.new_secret() if enrol else None,
            )
            old = request.cookies.get(SESSION_COOKIE)
            old_id = session_id_of(old) if old else None
            if old_id is not None:
                await session_store.end(db, old_id)
    if new is None or user is None:
        if directory.outcome != "unavailable":
            for key in keys:
                throttle.failed(key, now_mono)
        details = {"via": "console"}
        error, status = renderer.gettext(lang, LOGIN_FAILED), 401
        if directory.outcome in ("refused", "unavailable"):
            # Said only after the directory accepted the password, or when it is down (then
            # for every directory name alike): neither tells who has an account.
            details["reason"] = directory.message
            error = directory.message
            if directory.outcome == "refused":
                error = renderer.gettext(lang, DIRECTORY_REFUSED).format(reason=directory.message)
            else:
                status = 503
        await services.audit.record(
            actor=clean_line(name, 64) or "anonymous",
            action="login.failed",
            outcome="denied",
            source=source,
            details=details,
        )
        return login_form(
            request, lang, next_target=target, status=status, user_name=name, error=error
        )
    if enrol:
        await services.audit.record(
            actor=user.name,
            action="login.totp_enrolment",
            source=source,
            details={"via": "console"},
        )
        response: web.StreamResponse = web.HTTPSeeOther(
            "/console/totp-setup?next=" + quote(target, safe="")
        )
    else:
        await services.audit.record(
            actor=user.name, action="login", source=source, details={"via": "console"}
        )
        response = web.HTTPSeeOther(target)
    _set_cookie(response, SESSION_COOKIE, new.cookie_value, None)
    _clear_cookie(response, LOGIN_COOKIE)
    raise response  # type: ignore[misc]


async def _enrolling(request: web.Request) -> ConsoleUser | None:
    found = await session_store.load(
        request.app[SERVICES], request.cookies.get(SESSION_COOKIE), stage="enrol"
    )
    return found if isinstance(found, ConsoleUser) else None


def _host(public_url: str) -> str:
    return urlsplit(public_url).hostname or "secondline"


async def totp_setup_page(request: web.Request) -> web.StreamResponse:
    """Show a new secret and its QR code. Each visit draws a new secret, so a QR code is
    shown once: a reload, a back button or a second tab only ever show an unused one."""
    user = await _enrolling(request)
    if user is None:
        raise web.HTTPSeeOther("/console/login")
    services = request.app[SERVICES]
    secret = totp.new_secret()
    async with services.db() as db, db.begin():
        await db.execute(
            update(ConsoleSession)
            .where(ConsoleSession.id == user.session_id)
            .values(pending_totp=secret)
        )
    uri = totp.provisioning_uri(secret, user.name, _host(services.config.public_url))
    return render_page(
        request,
        request_language(request, user),
        "totp_setup.html",
        {
            "csrf": user.csrf_token,
            "user_name": user.name,
            "secret": " ".join(secret[i : i + 4] for i in range(0, len(secret), 4)),
            "uri": uri,
            # segno builds the SVG from the URI alone; it holds no outside text.
            "qr": Markup(totp.qr_svg(uri)),  # noqa: S704
            "next": safe_next(request.query.get("next")),
            "error": "",
        },
    )


def _totp_setup_error(
    request: web.Request,
    lang: Language,
    user: ConsoleUser,
    target: str,
    error: str,
    status: int,
) -> web.Response:
    """The set-up page again, without a secret (a new one needs a reload), and the error."""
    return render_page(
        request,
        lang,
        "totp_setup.html",
        {
            "csrf": user.csrf_token,
            "user_name": user.name,
            "secret": "",
            "qr": "",
            "uri": "",
            "next": target,
            "error": error,
        },
        status=status,
    )


async def totp_setup_submit(request: web.Request) -> web.StreamResponse:
    user = await _enrolling(request)
    if user is None:
        raise web.HTTPSeeOther("/console/login")
    services = request.app[SERVICES]
    renderer = request.app[CONSOLE].renderer
    lang = request_language(request, user)
    try:
        form = await read_form(request)
    except InputError as exc:
        return _totp_setup_error(request, lang, user, "", exc.message, exc.http_status)
    target = safe_next(str(form.get("next", ""))[:400])
    if not same_origin(request, services.config) or not tokens_match(
        user.csrf_token, str(form.get(CSRF_FIELD, ""))
    ):
        await refuse(request, user.name, "console.csrf_refused", "TOTP enrolment form")
        raise web.HTTPSeeOther("/console/login")
    now = services.clock()
    now_mono = time.monotonic()
    keys = second_factor.throttle_keys(user.name, request.remote or "")
    if any(services.login_throttle.retry_after(k, now_mono) > 0 for k in keys):
        raise web.HTTPSeeOther("/console/login")
    step = (
        totp.matched_step(user.pending_totp, str(form.get("code", ""))[:16], now.timestamp(), 0)
        if user.pending_totp
        else None
    )
    if step is None:
        for key in keys:
            services.login_throttle.failed(key, now_mono)
        await services.audit.record(
            actor=user.name,
            action="login.totp_enrolment_failed",
            outcome="denied",
            source=request.remote or "",
        )
        return _totp_setup_error(
            request, lang, user, target, renderer.gettext(lang, TOTP_MISMATCH), 401
        )
    async with services.db() as db, db.begin():
        row = (await db.execute(select(User).where(User.id == user.user_id))).scalar_one()
        row.totp_secret = user.pending_totp
        row.totp_last_step = step
        await session_store.end(db, user.session_id)
        new = await session_store.create(
            db,
            row,
            stage="active",
            now=now,
            source=request.remote or "",
            user_agent=clip_user_agent(request.headers.get("User-Agent")),
        )
    await services.audit.record(
        actor=user.name, action="user.totp_enrolled", source=request.remote or ""
    )
    await services.audit.record(
        actor=user.name, action="login", source=request.remote or "", details={"via": "console"}
    )
    response = web.HTTPSeeOther(target)
    _set_cookie(response, SESSION_COOKIE, new.cookie_value, None)
    raise response


async def logout(page: Page) -> web.StreamResponse:
    services = page.request.app[SERVICES]
    async with services.db() as db, db.begin():
        await session_store.end(db, page.user.session_id)
        # Signing out ends the shift: the SSH gateway asks for a code again (docs/identity.md).
        ended = await shift_windows.end(db, page.user.user_id)
    await page.state.live.close_session(page.user.session_id, "signed_out")
    await services.audit.record(
        actor=page.user.name,
        action="logout",
        source=page.request.remote or "",
        details={"ssh_windows_ended": ended},
    )
    response = web.HTTPSeeOther("/console/login")
    _clear_cookie(response, SESSION_COOKIE)
    raise response


async def logout_everywhere(page: Page) -> web.StreamResponse:
    services = page.request.app[SERVICES]
    async with services.db() as db, db.begin():
        epoch = await session_store.end_everywhere(db, page.user.user_id)
        ended = await shift_windows.end(db, page.user.user_id)
    closed = await page.state.live.close_user(page.user.user_id, "signed_out")
    await services.audit.record(
        actor=page.user.name,
        action="logout.everywhere",
        source=page.request.remote or "",
        details={"epoch": epoch, "live_closed_here": closed, "ssh_windows_ended": ended},
    )
    response = web.HTTPSeeOther("/console/login")
    _clear_cookie(response, SESSION_COOKIE)
    raise response


LANGUAGE_CHOICES: Final = ("auto", "en", "de")


async def settings_page(page: Page) -> web.StreamResponse:
    return page.render("settings.html", current=page.user.language or "auto")


async def settings_language(page: Page) -> web.StreamResponse:
    choice = page.field("language", cap=8)
    if choice not in LANGUAGE_CHOICES:
        choice = "auto"
    services = page.request.app[SERVICES]
    async with services.db() as db, db.begin():
        await session_store.set_language(
            db, page.user.user_id, None if choice == "auto" else choice
        )
    raise redirect("/console/settings", done="language")
