"""Who is calling an HTTP endpoint: bearer tokens (CLI, integrations) or a console session
(browser). The REST API (``broker.api.routing``) and the web edge's own endpoints (terminal
WebSocket, downloads) authenticate the same way, here.

Credentials in a query string are refused outright: URLs end up in logs and histories."""

from __future__ import annotations

import logging
from typing import Final

from aiohttp import web
from sqlalchemy import select

from broker.auth.credentials import parse_api_token, secret_matches
from broker.auth.principal import ANONYMOUS, WEB_AUTH, Principal, load_customers
from broker.auth.scopes import parse_role
from broker.db.models_staff import ApiToken, User
from broker.errors import AuthError, InputError
from broker.services import Services

log = logging.getLogger(__name__)

_QUERY_CREDENTIALS: Final = frozenset(
    {"token", "access_token", "api_key", "apikey", "auth", "bearer", "key", "session"}
)


async def _refuse(request: web.Request, services: Services, why: str, detail: str) -> AuthError:
    # Unauthenticated: counted into one summary per source and minute (broker.audit.anonymous).
    await services.anonymous.refused(
        source=request.remote or "", action="auth.refused", target=request.path, reason=detail
    )
    return AuthError(why)


async def principal_for_token(services: Services, token: str) -> Principal | None:
    """The staff member a bearer token stands for, or None when it is not valid now."""
    parsed = parse_api_token(token)
    if parsed is None:
        return None
    token_id, secret = parsed
    now = services.clock()
    async with services.db() as db:
        row = (
            await db.execute(
                select(ApiToken, User)
                .join(User, User.id == ApiToken.user_id)
                .where(ApiToken.id == token_id)
            )
        ).one_or_none()
    if row is None:
        return None
    tok, user = row[0], row[1]
    if not secret_matches(secret, tok.secret_hash) or tok.revoked_at is not None or user.disabled:
        return None
    if tok.expires_at is not None and tok.expires_at <= now:
        return None
    return Principal(
        user.id,
        user.name,
        parse_role(user.role),
        frozenset(tok.scopes),
        await load_customers(services.db, user.id),
        token_id=tok.id,
    )


async def authenticate(request: web.Request, services: Services, *, public: bool) -> Principal:
    for name in request.query:
        if name.lower() in _QUERY_CREDENTIALS:
            await _refuse(request, services, "", f"credential in query string ({name})")
            raise InputError(
                "credentials are never accepted in a URL; send the token in the "
                "Authorization: Bearer header",
                code="credential_in_query",
            )
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise await _refuse(
                request,
                services,
                "use the Authorization: Bearer <token> header",
                "malformed authorization header",
            )
        principal = await principal_for_token(services, token.strip())
        if principal is None:
            raise await _refuse(
                request,
                services,
                "the API token is missing, expired or revoked; run `secondline login` "
                "or ask an admin for a new token",
                "invalid token",
            )
        return principal
    web_auth = request.app.get(WEB_AUTH)
    if web_auth is not None:
        found: Principal | None = await web_auth(request)
        if found is not None:
            return found
    if public:
        return ANONYMOUS
    raise await _refuse(
        request,
        services,
        "sign in first: send an API token in the Authorization: Bearer header",
        "no credentials",
    )
