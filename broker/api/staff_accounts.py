"""Staff accounts and their SSH keys: who the caller is, adding, listing, showing and
disabling accounts, registering and removing keys; and who may change whose keys and
tokens (an admin anyone's, everyone their own)."""

from __future__ import annotations

from typing import NoReturn

from sqlalchemy import select

from broker import staff_store
from broker.api.cluster_control import tell_nodes
from broker.api.routing import ApiContext, ApiRouter, QueryParam
from broker.api.staff import KeyAdd, Me, UserCreate, UserOut, user_out
from broker.db.models_staff import User
from broker.errors import ForbiddenError, InputError
from broker.sessions.runtime import SESSIONS

router = ApiRouter(tag="staff")


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
    return user_out(rec)


@router.route("GET", "/users", summary="List staff accounts", response=UserOut, many=True)
async def list_users(ctx: ApiContext) -> list[UserOut]:
    async with ctx.services.db() as db:
        users = (await db.execute(select(User).order_by(User.name))).scalars().all()
        return [user_out(await staff_store.user_record(db, u)) for u in users]


@router.route("GET", "/users/{name}", summary="Show one staff account", response=UserOut)
async def show_user(ctx: ApiContext) -> UserOut:
    async with ctx.services.db() as db:
        user = await staff_store.get_user(db, staff_store.valid_user_name(ctx.path("name")))
        return user_out(await staff_store.user_record(db, user))


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
    return user_out(rec)


async def may_manage(ctx: ApiContext, name: str) -> None:
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


async def refuse_own(ctx: ApiContext, action: str, name: str, why: str, code: str) -> NoReturn:
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
    await may_manage(ctx, name)
    if "admin" not in ctx.principal.scopes and "session" not in ctx.principal.scopes:
        # A registered key opens shells: a token that may not open one may not add one.
        await refuse_own(
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
    return user_out(rec)


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
    await may_manage(ctx, name)
    fingerprint = (ctx.query("fingerprint") or "").strip()
    if not fingerprint.startswith("SHA256:") or len(fingerprint) > 100:
        raise InputError("give the key's fingerprint as SHA256:…, as `user key list` shows it")
    s = ctx.services
    async with s.db() as db, db.begin():
        user = await staff_store.get_user(db, name)
        owner = await staff_store.key_source(db, user, fingerprint)
    if owner == "directory":
        # The directory owns its keys: the next sync would bring the key back.
        await refuse_own(
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
    return user_out(rec)
