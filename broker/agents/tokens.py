"""Enrollment tokens: minted for a customer, stored hashed, claimed once per use.

The token text is ``sle1.<id>.<secret>.<fingerprint>`` (docs/protocol.md); only the
SHA-256 of the 32-character secret is stored (190 random bits: a fast hash is enough).
Claiming is one conditional ``UPDATE ... SET uses_left = uses_left - 1 WHERE uses_left > 0
AND not revoked AND not expired``: on PostgreSQL a second transaction racing for the same
row re-checks the condition after the first commits, on SQLite writers are serialised, so
two agents racing for a single-use token never both win.

The checks of a request (:func:`token_spec`) and the reason a claim failed
(:func:`claim_refusal`) are pure; the rest is the thin database layer.
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from agent.enrollment import CONSENT_POLICIES
from agent.enrollment import EnrollmentToken as TokenText
from broker.auth.credentials import digest_secret
from broker.db.models_agents import EnrollmentToken
from broker.db.models_staff import Customer
from broker.errors import ForbiddenError, InputError, NotFoundError
from broker.rules import InvalidName, parse_customer_name, parse_label_key, parse_label_value

DEFAULT_TTL_SECONDS: Final = 3600
TTL_MIN_SECONDS: Final = 60
TTL_MAX_SECONDS: Final = 30 * 24 * 3600
USES_MAX: Final = 10_000
LABELS_MAX: Final = 32
TOKEN_ID_LEN: Final = 12

TokenStatus = Literal["active", "used", "expired", "revoked"]


@dataclass(frozen=True)
class TokenSpec:
    """A checked request for a new token."""

    customer: str
    labels: Mapping[str, str]
    consent: str
    ttl_seconds: int
    uses: int


def token_spec(
    *,
    customer: str,
    labels: Mapping[str, str],
    consent: str,
    ttl_seconds: int,
    uses: int,
) -> TokenSpec:
    """Check what a token is asked to carry; raise :class:`InputError` saying what is wrong."""
    try:
        customer = parse_customer_name(customer)
        if len(labels) > LABELS_MAX:
            raise InputError(f"a token carries at most {LABELS_MAX} labels")
        clean = {parse_label_key(k): parse_label_value(v) for k, v in labels.items()}
    except InvalidName as exc:
        raise InputError(str(exc), code="invalid_name", status=422) from None
    if consent not in CONSENT_POLICIES:
        raise InputError(
            f"consent must be 'attended' or 'unattended', not {consent[:20]!r}", status=422
        )
    if isinstance(ttl_seconds, bool) or not TTL_MIN_SECONDS <= ttl_seconds <= TTL_MAX_SECONDS:
        raise InputError(
            "the token lifetime must be between 1 minute and 30 days, e.g. --ttl 1h", status=422
        )
    if isinstance(uses, bool) or not 1 <= uses <= USES_MAX:
        raise InputError(f"--uses must be between 1 and {USES_MAX}", status=422)
    return TokenSpec(customer, dict(sorted(clean.items())), consent, ttl_seconds, uses)


def token_status(row: EnrollmentToken, now: dt.datetime) -> TokenStatus:
    """Whether a token can still admit an agent, and if not, why."""
    if row.revoked_at is not None:
        return "revoked"
    if row.uses_left <= 0:
        return "used"
    if row.expires_at <= now:
        return "expired"
    return "active"


class TokenRefused(ForbiddenError):
    """An enrollment token cannot be used; ``code`` says why (token_used, ...)."""


def claim_refusal(row: EnrollmentToken | None, secret_ok: bool, now: dt.datetime) -> TokenRefused:
    """The error for a token that could not be claimed (unknown ids and wrong secrets alike)."""
    if row is None or not secret_ok:
        return TokenRefused(
            "this enrollment token is not known to this broker; check that it was copied "
            "completely, or ask your helpdesk for a new one",
            code="token_invalid",
        )
    status = token_status(row, now)
    if status == "revoked":
        return TokenRefused(
            "this enrollment token was revoked; ask your helpdesk for a new one",
            code="token_revoked",
        )
    if status == "expired":
        when = row.expires_at.strftime("%Y-%m-%d %H:%M UTC")
        return TokenRefused(
            f"this enrollment token expired at {when}; ask your helpdesk for a new one",
            code="token_expired",
        )
    # "active" here means another agent claimed the last use between our read and write.
    return TokenRefused(
        "this enrollment token was used already; ask your helpdesk for a new one",
        code="token_used",
    )


@dataclass(frozen=True)
class TokenRow:
    """A token as listed: the row and its customer's name."""

    row: EnrollmentToken
    customer: str


@dataclass(frozen=True)
class NewToken:
    """A token just minted: the only moment its full text exists."""

    row: EnrollmentToken
    customer: str
    text: str


async def _customer(db: AsyncSession, name: str, customers: frozenset[str] | None) -> Customer:
    if customers is not None and name not in customers:
        raise NotFoundError(f"there is no customer {name!r}; see `secondline customer list`")
    row = (await db.execute(select(Customer).where(Customer.name == name))).scalar_one_or_none()
    if row is None:
        raise NotFoundError(f"there is no customer {name!r}; see `secondline customer list`")
    return row


async def create_token(
    db: AsyncSession,
    spec: TokenSpec,
    *,
    fingerprint: str,
    created_by: str,
    customers: frozenset[str] | None,
    now: dt.datetime,
) -> NewToken:
    """Mint a token for ``spec`` pinning the broker certificate with ``fingerprint``."""
    customer = await _customer(db, spec.customer, customers)
    text = TokenText.generate(fingerprint)
    row = EnrollmentToken(
        id=text.token_id,
        secret_hash=digest_secret(text.secret),
        customer_id=customer.id,
        labels=dict(spec.labels),
        consent=spec.consent,
        uses_left=spec.uses,
        max_uses=spec.uses,
        created_by=created_by[:64],
        created_at=now,
        expires_at=now + dt.timedelta(seconds=spec.ttl_seconds),
    )
    db.add(row)
    await db.flush()
    return NewToken(row, customer.name, text.serialize())


async def list_tokens(db: AsyncSession, customers: frozenset[str] | None) -> list[TokenRow]:
    """Every token the caller may see, newest first."""
    stmt = (
        select(EnrollmentToken, Customer.name)
        .join(Customer, Customer.id == EnrollmentToken.customer_id)
        .order_by(EnrollmentToken.created_at.desc(), EnrollmentToken.id)
    )
    if customers is not None:
        stmt = stmt.where(Customer.name.in_(sorted(customers)))
    return [TokenRow(row, name) for row, name in (await db.execute(stmt))]


def _token_id(text: str) -> str:
    if len(text) != TOKEN_ID_LEN or not all(
        c.isascii() and (c.islower() or c.isdigit()) for c in text
    ):
        raise InputError(
            "an enrollment token id is 12 characters from a-z and 0-9 (see `secondline token "
            "list`)",
            code="invalid_name",
        )
    return text


async def get_token(db: AsyncSession, token_id: str, customers: frozenset[str] | None) -> TokenRow:
    """One token the caller may see, or NotFoundError."""
    stmt = (
        select(EnrollmentToken, Customer.name)
        .join(Customer, Customer.id == EnrollmentToken.customer_id)
        .where(EnrollmentToken.id == _token_id(token_id))
    )
    found = (await db.execute(stmt)).one_or_none()
    if found is None or (customers is not None and found[1] not in customers):
        raise NotFoundError(
            f"there is no enrollment token {token_id!r}; see `secondline token list`"
        )
    return TokenRow(found[0], found[1])


async def revoke_token(
    db: AsyncSession, token_id: str, customers: frozenset[str] | None, now: dt.datetime
) -> TokenRow:
    """Revoke a token (revoking twice keeps the first time)."""
    found = await get_token(db, token_id, customers)
    await db.execute(
        update(EnrollmentToken)
        .where(EnrollmentToken.id == found.row.id, EnrollmentToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    await db.refresh(found.row)
    return found


@dataclass(frozen=True)
class ClaimedToken:
    """What a successfully claimed token grants the new agent."""

    id: str
    customer_id: int
    customer: str
    labels: Mapping[str, str]
    consent: str


async def claim_token(db: AsyncSession, token: TokenText, now: dt.datetime) -> ClaimedToken:
    """Use up one use of ``token`` inside the caller's transaction, or raise TokenRefused."""
    found = (
        await db.execute(
            select(EnrollmentToken, Customer.name)
            .join(Customer, Customer.id == EnrollmentToken.customer_id)
            .where(EnrollmentToken.id == token.token_id)
        )
    ).one_or_none()
    row = found[0] if found else None
    secret_ok = row is not None and hmac.compare_digest(
        digest_secret(token.secret), row.secret_hash
    )
    if row is None or found is None or not secret_ok or token_status(row, now) != "active":
        raise claim_refusal(row, secret_ok, now)
    result = await db.execute(
        update(EnrollmentToken)
        .where(
            EnrollmentToken.id == row.id,
            EnrollmentToken.uses_left > 0,
            EnrollmentToken.revoked_at.is_(None),
            EnrollmentToken.expires_at > now,
        )
        .values(uses_left=EnrollmentToken.uses_left - 1, last_used_at=now)
        .execution_options(synchronize_session=False)
    )
    if getattr(result, "rowcount", 0) != 1:
        await db.refresh(row)
        raise claim_refusal(row, True, now)
    return ClaimedToken(row.id, row.customer_id, found[1], dict(row.labels), row.consent)
