"""API tokens: minting (never wider than the calling token), listing and revoking them, and
signing in with password and TOTP for one."""

from __future__ import annotations

import asyncio
import time

import pyotp
from sqlalchemy import select, update

from broker import staff_store
from broker.api.routing import ApiContext, ApiRouter
from broker.api.staff import LoginIn, NewTokenOut, TokenCreate, TokenOut, token_out
from broker.api.staff_accounts import may_manage, refuse_own
from broker.auth.credentials import verify_password
from broker.auth.scopes import ROLE_SCOPES
from broker.db.models_staff import ApiToken, User
from broker.directory.feature import directory_check
from broker.errors import (
    AuthError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    UnavailableError,
)
from broker.rules import InvalidName, parse_user_name
from broker.rules.outside_text import clean_line

# The same tag as the accounts' routes: one section of the API's description.
router = ApiRouter(tag="staff")


@router.route(
    "POST",
    "/users/{name}/tokens",
    summary="Mint an API token (shown once)",
    scope="read",
    body=TokenCreate,
    response=NewTokenOut,
    status=201,
)
async def create_token(ctx: ApiContext) -> NewTokenOut:
    name = staff_store.valid_user_name(ctx.path("name"))
    await may_manage(ctx, name)
    body = ctx.payload(TokenCreate)
    s = ctx.services
    principal = ctx.principal
    if "admin" not in principal.scopes and principal.role is not None:
        # A token mints nothing wider than itself, or a read-only token would be a full one.
        wanted = frozenset(body.scopes) if body.scopes else ROLE_SCOPES[principal.role]
        wider = sorted(wanted - principal.scopes)
        if wider:
            await refuse_own(
                ctx,
                "token.refused",
                name,
                f"scope {wider[0]!r} is wider than the token you call with carries "
                f"({', '.join(sorted(principal.scopes))}); ask for those scopes or fewer",
                "scope_too_wide",
            )
    try:
        async with s.db() as db, db.begin():
            user = await staff_store.get_user(db, name)
            new = await staff_store.mint_token(
                db,
                user,
                scopes=body.scopes,
                ttl_seconds=body.ttl_seconds or s.config.token_default_ttl_seconds,
                label=clean_line(body.label, 100),
                now=s.clock(),
                max_tokens=s.config.max_tokens_per_user,
            )
    except (ForbiddenError, ConflictError) as exc:
        # A disabled owner, a scope too wide, or the live-token limit: all are refusals.
        await s.audit.record(
            actor=ctx.principal.name,
            action="token.refused",
            target=name,
            outcome="denied",
            source=ctx.source,
            details={"code": exc.code, "reason": exc.message},
        )
        raise
    await s.audit.record(
        actor=ctx.principal.name,
        action="token.create",
        target=name,
        source=ctx.source,
        details={"token": new.row.id, "scopes": new.row.scopes},
    )
    out = token_out(new.row, name)
    return NewTokenOut(**out.model_dump(), token=new.plaintext)


@router.route(
    "GET",
    "/users/{name}/tokens",
    summary="List a person's API tokens",
    response=TokenOut,
    many=True,
)
async def list_tokens(ctx: ApiContext) -> list[TokenOut]:
    name = staff_store.valid_user_name(ctx.path("name"))
    await may_manage(ctx, name)
    async with ctx.services.db() as db:
        user = await staff_store.get_user(db, name)
        rows = (
            (
                await db.execute(
                    select(ApiToken)
                    .where(ApiToken.user_id == user.id)
                    .order_by(ApiToken.created_at)
                )
            )
            .scalars()
            .all()
        )
    return [token_out(r, name) for r in rows]


@router.route("DELETE", "/tokens/{id}", summary="Revoke an API token", scope="read", status=204)
async def revoke_token(ctx: ApiContext) -> None:
    token_id = ctx.path("id")
    s = ctx.services
    async with s.db() as db, db.begin():
        row = (
            await db.execute(select(ApiToken, User).join(User).where(ApiToken.id == token_id[:16]))
        ).one_or_none()
        if row is None:
            raise NotFoundError("there is no such token")
        tok, user = row[0], row[1]
        await may_manage(ctx, user.name)
        await db.execute(update(ApiToken).where(ApiToken.id == tok.id).values(revoked_at=s.clock()))
    await s.audit.record(
        actor=ctx.principal.name,
        action="token.revoke",
        target=user.name,
        source=ctx.source,
        details={"token": tok.id},
    )


@router.route(
    "POST",
    "/auth/login",
    summary="Exchange password (and TOTP) for an API token",
    scope=None,
    body=LoginIn,
    response=NewTokenOut,
    status=201,
    public=True,
)
async def login(ctx: ApiContext) -> NewTokenOut:
    body = ctx.payload(LoginIn)
    s = ctx.services
    now_mono = time.monotonic()
    keys = (f"user:{body.user}", f"src:{ctx.source}")
    if any(s.login_throttle.retry_after(k, now_mono) > 0 for k in keys):
        await s.audit.record(
            actor=body.user[:64], action="login.throttled", outcome="denied", source=ctx.source
        )
        raise AuthError("too many failed sign-ins; wait 15 minutes and try again", code="throttled")
    try:
        valid_name = parse_user_name(body.user)
    except InvalidName:
        valid_name = ""
    directory = await directory_check(ctx.request.app, valid_name, body.password)
    if directory.outcome == "unavailable":
        await s.audit.record(
            actor=body.user[:64],
            action="login.failed",
            outcome="denied",
            source=ctx.source,
            details={"reason": directory.message},
        )
        raise UnavailableError(directory.message, code="directory_unavailable")
    try:
        async with s.db() as db, db.begin():
            # A name that is no valid user name is nobody's (and PostgreSQL refuses a NUL in
            # a query): the password is still checked against nothing, taking as long.
            user = (
                (await db.execute(select(User).where(User.name == valid_name))).scalar_one_or_none()
                if valid_name
                else None
            )
            if directory.outcome == "not_directory":
                # argon2 takes a good part of a second: in a thread, or every sign-in attempt
                # (the throttle counts them, it cannot stop them arriving) would stall the loop.
                ok = await asyncio.to_thread(
                    verify_password, user.password_hash if user else None, body.password
                )
            else:
                ok = directory.outcome == "ok"
            if ok and user is not None and user.totp_secret is not None:
                step = int(s.clock().timestamp()) // 30
                totp = pyotp.TOTP(user.totp_secret)
                matched = [
                    st
                    for st in (step - 1, step, step + 1)
                    if body.totp is not None and totp.at(st * 30) == body.totp
                ]
                # Each code works once: a step at or before the last one used is refused.
                ok = bool(matched) and matched[0] > user.totp_last_step
                if ok:
                    user.totp_last_step = matched[0]
            if not ok or user is None or user.disabled:
                for k in keys:
                    s.login_throttle.failed(k, now_mono)
                failure = True
            else:
                failure = False
                new = await staff_store.mint_token(
                    db,
                    user,
                    scopes=None,
                    ttl_seconds=body.ttl_seconds or s.config.token_default_ttl_seconds,
                    label="login",
                    now=s.clock(),
                    max_tokens=s.config.max_tokens_per_user,
                )
    except ConflictError as exc:
        # The right credentials, but the account holds its limit of live tokens.
        await s.audit.record(
            actor=body.user,
            action="token.refused",
            target=body.user,
            outcome="denied",
            source=ctx.source,
            details={"code": exc.code, "reason": exc.message, "via": "login"},
        )
        raise
    if failure:
        await s.audit.record(
            actor=body.user[:64], action="login.failed", outcome="denied", source=ctx.source
        )
        # One answer for unknown users, wrong passwords, wrong codes and disabled accounts.
        raise AuthError("user name, password or code is wrong", code="login_failed")
    await s.audit.record(
        actor=body.user, action="login", source=ctx.source, details={"token": new.row.id}
    )
    return NewTokenOut(**token_out(new.row, body.user).model_dump(), token=new.plaintext)
