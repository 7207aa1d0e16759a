"""Staff accounts, SSH keys, API tokens, sign-in, and customers."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import NoReturn

import pyotp
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select, update

from broker import staff_store
from broker.api.cluster_control import tell_nodes
from broker.api.routing import ApiContext, ApiRouter, QueryParam
from broker.auth.credentials import verify_password
from broker.auth.scopes import ROLE_SCOPES
from broker.db.models_staff import ApiToken, Customer, User
from broker.directory.feature import directory_check
from broker.errors import (
    AuthError,
    ConflictError,
    ForbiddenError,
    InputError,
    NotFoundError,
    UnavailableError,
)
from broker.rules import InvalidName, parse_user_name
from broker.rules.outside_text import clean_line
from broker.sessions.runtime import SESSIONS

router = ApiRouter(tag="staff")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UserCreate(Strict):
    name: str = Field(max_length=64)
    role: str = Field(max_length=16)
    display_name: str = Field(default="", max_length=200)
    password: str | None = Field(default=None, max_length=1024)
    ssh_keys: list[str] = Field(default_factory=list, max_length=20)
    customers: list[str] = Field(default_factory=list, max_length=1000)


class KeyOut(BaseModel):
    fingerprint: str
    comment: str
    created_at: dt.datetime
    source: str = Field(description="local (registered here) or directory (read from it)")


class UserOut(BaseModel):
    name: str
    role: str
    display_name: str
    disabled: bool
    customers: list[str]
    ssh_keys: list[KeyOut]
    totp_enrolled: bool
    created_at: dt.datetime
    source: str = Field(description="where the account comes from: local, directory or oidc")
    source_name: str | None = Field(description="the directory's or OpenID provider's name")
    source_refusal: str | None = Field(description="why the source takes access away")


class KeyAdd(Strict):
    public_key: str = Field(max_length=16_384)


class TokenCreate(Strict):
    scopes: list[str] | None = Field(default=None, max_length=8)
    ttl_seconds: int | None = None
    label: str = Field(default="", max_length=100)


class TokenOut(BaseModel):
    id: str
    user: str
    scopes: list[str]
    label: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None


class NewTokenOut(TokenOut):
    token: str


class LoginIn(Strict):
    user: str = Field(max_length=64)
    password: str = Field(max_length=1024)
    totp: str | None = Field(default=None, max_length=10)
    ttl_seconds: int | None = None


class CustomerCreate(Strict):
    name: str = Field(max_length=63)
    display_name: str = Field(default="", max_length=200)
    language: str = Field(default="en", max_length=8, description="note language: en or de")


class CustomerChange(Strict):
    language: str = Field(max_length=8, description="note language: en or de")


class CustomerOut(BaseModel):
    name: str
    display_name: str
    language: str
    created_at: dt.datetime


def _customer_out(c: Customer) -> CustomerOut:
    return CustomerOut(
        name=c.name, display_name=c.display_name, language=c.language, created_at=c.created_at
    )


class Me(BaseModel):
    name: str
    role: str | None
    scopes: list[str]
    customers: list[str] | None


def _user_out(rec: staff_store.UserRecord) -> UserOut:
    u = rec.user
    return UserOut(
        name=u.name,
        role=u.role,
        display_name=u.display_name,
        disabled=u.disabled,
        customers=rec.customers,
        ssh_keys=[
            KeyOut(
                fingerprint=k.fingerprint,
                comment=k.comment,
                created_at=k.created_at,
                source=k.source,
            )
            for k in rec.keys
        ],
        totp_enrolled=u.totp_secret is not None,
        created_at=u.created_at,
        source=u.source,
        source_name=u.source_name,
        source_refusal=u.source_refusal,
    )


def _token_out(row: ApiToken, user: str) -> TokenOut:
    return TokenOut(
        id=row.id,
        user=user,
        scopes=row.scopes,
        label=row.label,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )


@router.route("GET", "/me", summary="Who the caller is", response=Me)
async def me(ctx: ApiContext) -> Me:
    p = ctx.principal
    return Me(
        name=p.name,
        role=p.role,
        scopes=sorted(p.scopes),
        customers=sorted(p.customers) if p.customers is not None else None,
    )


@router.route(
    "POST",
    "/users",
    summary="Add a staff account",
    scope="admin",
    body=UserCreate,
    response=UserOut,
    status=201,
)
async def add_user(ctx: ApiContext) -> UserOut:
    body = ctx.payload(UserCreate)
    s = ctx.services
    async with s.db() as db, db.begin():
        user = await staff_store.add_user(
            db,
            name=body.name,
            role=body.role,
            display_name=body.display_name,
            password=body.password,
            ssh_keys=body.ssh_keys,
            customers=body.customers,
            now=s.clock(),
        )
        rec = await staff_store.user_record(db, user)
    await s.audit.record(
        actor=ctx.principal.name,
        action="user.add",
        target=user.name,
        source=ctx.source,
        details={
            "role": user.role,
            "customers": rec.customers,
            "keys": [k.fingerprint for k in rec.keys],
        },
    )
    return _user_out(rec)


@router.route("GET", "/users", summary="List staff accounts", response=UserOut, many=True)
async def list_users(ctx: ApiContext) -> list[UserOut]:
    async with ctx.services.db() as db:
        users = (await db.execute(select(User).order_by(User.name))).scalars().all()
        return [_user_out(await staff_store.user_record(db, u)) for u in users]


@router.route("GET", "/users/{name}", summary="Show one staff account", response=UserOut)
async def show_user(ctx: ApiContext) -> UserOut:
    async with ctx.services.db() as db:
        user = await staff_store.get_user(db, staff_store.valid_user_name(ctx.path("name")))
        return _user_out(await staff_store.user_record(db, user))


@router.route(
    "POST",
    "/users/{name}/disable",
    summary="Disable an account and revoke its tokens",
    scope="admin",
    response=UserOut,
)
async def disable_user(ctx: ApiContext) -> UserOut:
    s = ctx.services
    async with s.db() as db, db.begin():
        user = await staff_store.get_user(db, staff_store.valid_user_name(ctx.path("name")))
        revoked = await staff_store.disable_user(db, user, s.clock())
        rec = await staff_store.user_record(db, user)
    sessions = ctx.request.app.get(SESSIONS)
    if sessions is not None:
        sessions.manager.end_account_sessions(user.name)
    await tell_nodes(
        ctx.request.app, "user.disable", user.name, by=ctx.principal.name, source=ctx.source
    )
    await s.audit.record(
        actor=ctx.principal.name,
        action="user.disable",
        target=user.name,
        source=ctx.source,
        details={"tokens_revoked": revoked},
    )
    return _user_out(rec)


async def _may_manage(ctx: ApiContext, name: str) -> None:
    if "admin" not in ctx.principal.scopes and ctx.principal.name != name:
        await ctx.services.audit.record(
            actor=ctx.principal.name,
            action="user.manage_refused",
            target=name,
            outcome="denied",
            source=ctx.source,
            details={"route": f"{ctx.request.method} {ctx.request.path}"[:200]},
        )
        raise ForbiddenError("only an admin may change another person's keys or tokens")


async def _refuse_own(ctx: ApiContext, action: str, name: str, why: str, code: str) -> NoReturn:
    """Refuse (audited) what a staff member asks for themselves beyond the calling token."""
    await ctx.services.audit.record(
        actor=ctx.principal.name,
        action=action,
        target=name,
        outcome="denied",
        source=ctx.source,
        details={"reason": why},
    )
    raise ForbiddenError(why, code=code)


@router.route(
    "POST",
    "/users/{name}/keys",
    summary="Register an SSH public key",
    scope="read",
    body=KeyAdd,
    response=UserOut,
    status=201,
)
async def add_key(ctx: ApiContext) -> UserOut:
    name = staff_store.valid_user_name(ctx.path("name"))
    await _may_manage(ctx, name)
    if "admin" not in ctx.principal.scopes and "session" not in ctx.principal.scopes:
        # A registered key opens shells: a token that may not open one may not add one.
        await _refuse_own(
            ctx,
            "user.key_refused",
            name,
            "adding an SSH key needs the 'session' scope, which this token does not carry",
            "scope_missing",
        )
    s = ctx.services
    async with s.db() as db, db.begin():
        user = await staff_store.get_user(db, name)
        key = await staff_store.add_key(db, user, ctx.payload(KeyAdd).public_key, s.clock())
        rec = await staff_store.user_record(db, user)
    await s.audit.record(
        actor=ctx.principal.name,
        action="user.key_add",
        target=name,
        source=ctx.source,
        details={"fingerprint": key.fingerprint},
    )
    return _user_out(rec)


@router.route(
    "DELETE",
    "/users/{name}/keys",
    summary="Remove an SSH public key (by its SHA256 fingerprint)",
    scope="read",
    response=UserOut,
    query=(QueryParam("fingerprint", description="SHA256:… as `user key list` shows it"),),
)
async def remove_key(ctx: ApiContext) -> UserOut:
    name = staff_store.valid_user_name(ctx.path("name"))
    await _may_manage(ctx, name)
    fingerprint = (ctx.query("fingerprint") or "").strip()
    if not fingerprint.startswith("SHA256:") or len(fingerprint) > 100:
        raise InputError("give the key's fingerprint as SHA256:…, as `user key list` shows it")
    s = ctx.services
    async with s.db() as db, db.begin():
        user = await staff_store.get_user(db, name)
        owner = await staff_store.key_source(db, user, fingerprint)
    if owner == "directory":
        # The directory owns its keys: the next sync would bring the key back.
        await _refuse_own(
            ctx,
            "user.key_remove_refused",
            name,
            f"the key {fingerprint} comes from the directory {user.source_name}; remove it "
            "there (the next sync removes it here), or disable the account now",
            "directory_owned",
        )
    async with s.db() as db, db.begin():
        user = await staff_store.get_user(db, name)
        await staff_store.remove_key(db, user, fingerprint)
        rec = await staff_store.user_record(db, user)
    await s.audit.record(
        actor=ctx.principal.name,
        action="user.key_remove",
        target=name,
        source=ctx.source,
        details={"fingerprint": fingerprint},
    )
    return _user_out(rec)


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
    await _may_manage(ctx, name)
    body = ctx.payload(TokenCreate)
    s = ctx.services
    principal = ctx.principal
    if "admin" not in principal.scopes and principal.role is not None:
        # A token mints nothing wider than itself, or a read-only token would be a full one.
        wanted = frozenset(body.scopes) if body.scopes else ROLE_SCOPES[principal.role]
        wider = sorted(wanted - principal.scopes)
        if wider:
            await _refuse_own(
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
    out = _token_out(new.row, name)
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
    await _may_manage(ctx, name)
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
    return [_token_out(r, name) for r in rows]


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
        await _may_manage(ctx, user.name)
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
    return NewTokenOut(**_token_out(new.row, body.user).model_dump(), token=new.plaintext)


@router.route(
    "POST",
    "/customers",
    summary="Add a customer",
    scope="admin",
    body=CustomerCreate,
    response=CustomerOut,
    status=201,
)
async def add_customer(ctx: ApiContext) -> CustomerOut:
    body = ctx.payload(CustomerCreate)
    s = ctx.services
    async with s.db() as db, db.begin():
        c = await staff_store.add_customer(
            db, body.name, body.display_name, s.clock(), body.language
        )
    await s.audit.record(
        actor=ctx.principal.name, action="customer.add", target=c.name, source=ctx.source
    )
    return _customer_out(c)


@router.route("GET", "/customers", summary="List customers", response=CustomerOut, many=True)
async def list_customers(ctx: ApiContext) -> list[CustomerOut]:
    allowed = ctx.principal.customers
    async with ctx.services.db() as db:
        rows = await staff_store.list_customers(db)
    return [_customer_out(c) for c in rows if allowed is None or c.name in allowed]


@router.route("GET", "/customers/{name}", summary="Show a customer", response=CustomerOut)
async def show_customer(ctx: ApiContext) -> CustomerOut:
    name = staff_store.valid_customer_name(ctx.path("name"))
    allowed = ctx.principal.customers
    if allowed is not None and name not in allowed:
        raise NotFoundError(f"there is no customer {name!r}; see `secondline customer list`")
    async with ctx.services.db() as db:
        c = await staff_store.get_customer(db, name)
    return _customer_out(c)


@router.route(
    "PATCH",
    "/customers/{name}",
    summary="Change a customer's settings (the language of its session notes)",
    scope="admin",
    body=CustomerChange,
    response=CustomerOut,
)
async def change_customer(ctx: ApiContext) -> CustomerOut:
    body = ctx.payload(CustomerChange)
    name = staff_store.valid_customer_name(ctx.path("name"))
    language = staff_store.valid_note_language(body.language)
    s = ctx.services
    async with s.db() as db, db.begin():
        c = await staff_store.get_customer(db, name)
        c.language = language
    await s.audit.record(
        actor=ctx.principal.name,
        action="customer.change",
        target=c.name,
        source=ctx.source,
        details={"language": language},
    )
    return _customer_out(c)
