"""Customers, staff accounts, SSH keys and API tokens in the database."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import asyncssh
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from broker.auth import shift_windows
from broker.auth.credentials import hash_password, mint_api_token
from broker.auth.scopes import ROLE_SCOPES, check_scopes, parse_role
from broker.db.models_staff import ApiToken, Customer, SshKey, User, UserCustomer
from broker.errors import ConflictError, ForbiddenError, InputError, NotFoundError
from broker.rules import (
    InvalidName,
    parse_customer_name,
    parse_user_name,
    sanitize_display_text,
)
from broker.rules.outside_text import clean_line


def valid_user_name(text: str) -> str:
    try:
        return parse_user_name(text)
    except InvalidName as exc:
        raise InputError(str(exc), code="invalid_name") from None


def valid_customer_name(text: str) -> str:
    try:
        return parse_customer_name(text)
    except InvalidName as exc:
        raise InputError(str(exc), code="invalid_name") from None


def valid_display_name(text: str) -> str:
    """A display name: at most 200 characters of plain text on one line.

    Shown in the CLI's tables and the console: controls (CR/LF, escape sequences) and bidi
    or invisible characters would let a name rewrite what an admin's terminal shows."""
    if len(text) > 200:
        raise InputError("the display name is longer than 200 characters")
    if sanitize_display_text(text, 200) != text:
        raise InputError(
            "the display name must be plain text on one line, without control, bidi or "
            "invisible characters and without leading or trailing spaces",
            code="invalid_display_name",
        )
    return text


def parse_ssh_public_key(text: str) -> tuple[str, str, str]:
    """(OpenSSH line, SHA256 fingerprint, comment) of one public key, or InputError."""
    line = text.strip()
    if not line or "\n" in line or len(line) > 16_384:
        raise InputError("give exactly one SSH public key line (as in id_ed25519.pub)")
    try:
        key = asyncssh.import_public_key(line)
    except (asyncssh.KeyImportError, ValueError):
        raise InputError(
            "this is not an SSH public key; give the .pub file, e.g. ~/.ssh/id_ed25519.pub",
            code="invalid_ssh_key",
        ) from None
    comment = clean_line(key.get_comment() or "", 200)
    return key.export_public_key().decode().strip(), key.get_fingerprint("sha256"), comment


async def get_user(db: AsyncSession, name: str) -> User:
    user = (await db.execute(select(User).where(User.name == name))).scalar_one_or_none()
    if user is None:
        raise NotFoundError(f"there is no staff member {name!r}; see `secondline user list`")
    return user


async def get_customer(db: AsyncSession, name: str) -> Customer:
    row = (await db.execute(select(Customer).where(Customer.name == name))).scalar_one_or_none()
    if row is None:
        raise NotFoundError(f"there is no customer {name!r}; see `secondline customer list`")
    return row


# The languages a session note can be written in (the console's catalogues have both).
NOTE_LANGUAGES: Final = ("en", "de")


def valid_note_language(text: str) -> str:
    if text not in NOTE_LANGUAGES:
        raise InputError(
            f"a customer's note language is {' or '.join(NOTE_LANGUAGES)}, not {text[:20]!r}",
            code="validation_failed",
        )
    return text


async def add_customer(
    db: AsyncSession, name: str, display_name: str, now: dt.datetime, language: str = "en"
) -> Customer:
    name = valid_customer_name(name)
    valid_display_name(display_name)
    customer = Customer(
        name=name,
        display_name=display_name or name,
        created_at=now,
        language=valid_note_language(language),
    )
    db.add(customer)
    try:
        await db.flush()
    except IntegrityError:
        raise ConflictError(f"customer {name!r} exists already", code="exists") from None
    return customer


async def list_customers(db: AsyncSession) -> Sequence[Customer]:
    return (await db.execute(select(Customer).order_by(Customer.name))).scalars().all()


@dataclass(frozen=True)
class UserRecord:
    user: User
    customers: list[str]
    keys: list[SshKey]


async def user_record(db: AsyncSession, user: User) -> UserRecord:
    customers = (
        (
            await db.execute(
                select(Customer.name)
                .join(UserCustomer, UserCustomer.customer_id == Customer.id)
                .where(UserCustomer.user_id == user.id)
                .order_by(Customer.name)
            )
        )
        .scalars()
        .all()
    )
    keys = (
        (
            await db.execute(
                select(SshKey).where(SshKey.user_id == user.id, SshKey.revoked_at.is_(None))
            )
        )
        .scalars()
        .all()
    )
    return UserRecord(user, list(customers), list(keys))


async def add_user(
    db: AsyncSession,
    *,
    name: str,
    role: str,
    display_name: str,
    password: str | None,
    ssh_keys: Sequence[str],
    customers: Sequence[str],
    now: dt.datetime,
) -> User:
    name = valid_user_name(name)
    try:
        parsed_role = parse_role(role)
        password_hash = hash_password(password) if password is not None else None
    except ValueError as exc:
        raise InputError(str(exc)) from None
    valid_display_name(display_name)
    if (await db.execute(select(User.id).where(User.name == name))).first() is not None:
        raise ConflictError(f"staff member {name!r} exists already", code="exists")
    customer_rows = [await get_customer(db, valid_customer_name(c)) for c in customers]
    parsed_keys = [parse_ssh_public_key(k) for k in ssh_keys]
    user = User(
        name=name,
        role=parsed_role,
        display_name=display_name,
        password_hash=password_hash,
        created_at=now,
    )
    db.add(user)
    await db.flush()
    for customer in customer_rows:
        db.add(UserCustomer(user_id=user.id, customer_id=customer.id))
    for line, fingerprint, comment in parsed_keys:
        await _add_key(db, user, line, fingerprint, comment, now)
    await db.flush()
    return user


async def _add_key(
    db: AsyncSession, user: User, line: str, fingerprint: str, comment: str, now: dt.datetime
) -> SshKey:
    exists = (await db.execute(select(SshKey.id).where(SshKey.fingerprint == fingerprint))).first()
    if exists is not None:
        raise ConflictError(
            f"the SSH key {fingerprint} is registered already; each key names one person",
            code="key_exists",
        )
    key = SshKey(
        user_id=user.id,
        fingerprint=fingerprint,
        public_key=line,
        comment=comment[:200],
        created_at=now,
    )
    db.add(key)
    return key


async def add_key(db: AsyncSession, user: User, text: str, now: dt.datetime) -> SshKey:
    line, fingerprint, comment = parse_ssh_public_key(text)
    key = await _add_key(db, user, line, fingerprint, comment, now)
    await db.flush()
    return key


async def key_source(db: AsyncSession, user: User, fingerprint: str) -> str | None:
    """Where one of ``user``'s keys comes from (local, directory), or None without it."""
    found = await db.scalar(
        select(SshKey.source).where(SshKey.user_id == user.id, SshKey.fingerprint == fingerprint)
    )
    return str(found) if found is not None else None


async def remove_key(db: AsyncSession, user: User, fingerprint: str) -> SshKey:
    """Delete one of ``user``'s SSH keys (by its SHA256 fingerprint), or NotFoundError.

    The row goes, not just a mark: the same key may be registered again later (to this
    person or, once handed over, to another); the audit log keeps the fingerprint."""
    key = (
        await db.execute(
            select(SshKey).where(SshKey.user_id == user.id, SshKey.fingerprint == fingerprint)
        )
    ).scalar_one_or_none()
    if key is None:
        raise NotFoundError(
            f"{user.name} has no SSH key {fingerprint[:100]!r}; "
            f"see `secondline user key list {user.name}`"
        )
    await db.delete(key)
    await shift_windows.end(db, user.id, fingerprint)
    await db.flush()
    return key


async def disable_user(db: AsyncSession, user: User, now: dt.datetime) -> int:
    """Disable an account and revoke its tokens at once; returns how many were revoked."""
    user.disabled = True
    user.session_epoch += 1
    await shift_windows.end(db, user.id)
    result = await db.execute(
        update(ApiToken)
        .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return int(getattr(result, "rowcount", 0) or 0)


@dataclass(frozen=True)
class NewToken:
    row: ApiToken
    plaintext: str


async def mint_token(
    db: AsyncSession,
    user: User,
    *,
    scopes: Sequence[str] | None,
    ttl_seconds: int,
    label: str,
    now: dt.datetime,
    max_tokens: int,
) -> NewToken:
    if user.disabled:
        raise ForbiddenError(f"{user.name} is disabled; enable the account first")
    role = parse_role(user.role)
    wanted = frozenset(scopes) if scopes else ROLE_SCOPES[role]
    why = check_scopes(role, wanted)
    if why is not None:
        raise ForbiddenError(why, code="scope_too_wide")
    if not 60 <= ttl_seconds <= 366 * 24 * 3600:
        raise InputError("the token lifetime must be between 1 minute and 366 days")
    if len(label) > 100:
        raise InputError("the token label is longer than 100 characters")
    # Count and insert under a lock on the owner's row, or concurrent mints all count below
    # the limit and all insert (seen: 5 live tokens at a limit of 3). An UPDATE takes that
    # lock on both backends (PostgreSQL: the row; SQLite: the database's write lock, which
    # FOR UPDATE would not), so the count below sees every mint committed before it.
    await db.execute(
        update(User)
        .where(User.id == user.id)
        .values(session_epoch=User.session_epoch)
        .execution_options(synchronize_session=False)
    )
    live = (
        await db.execute(
            select(func.count(ApiToken.id)).where(
                ApiToken.user_id == user.id,
                ApiToken.revoked_at.is_(None),
                (ApiToken.expires_at.is_(None)) | (ApiToken.expires_at > now),
            )
        )
    ).scalar_one()
    if live >= max_tokens:
        raise ConflictError(
            f"{user.name} has {live} live API tokens and the limit is {max_tokens}; revoke "
            "tokens no longer used (DELETE /api/v1/tokens/ID) and try again",
            code="token_limit",
        )
    minted = mint_api_token()
    row = ApiToken(
        id=minted.token_id,
        user_id=user.id,
        secret_hash=minted.secret_hash,
        scopes=sorted(wanted),
        label=label,
        created_at=now,
        expires_at=now + dt.timedelta(seconds=ttl_seconds),
    )
    db.add(row)
    await db.flush()
    return NewToken(row, minted.plaintext)
