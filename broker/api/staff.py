"""Staff accounts, SSH keys, API tokens, sign-in and customers on the wire: what a request
may carry (strict: unknown fields are refused) and what an answer holds, made from the
store's rows. The routes are in broker.api.staff_accounts (accounts and their SSH keys),
broker.api.staff_tokens (API tokens and sign-in) and broker.api.customers."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field

from broker import staff_store
from broker.db.models_staff import ApiToken, Customer


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


def customer_out(c: Customer) -> CustomerOut:
    return CustomerOut(
        name=c.name, display_name=c.display_name, language=c.language, created_at=c.created_at
    )


class Me(BaseModel):
    name: str
    role: str | None
    scopes: list[str]
    customers: list[str] | None


def user_out(rec: staff_store.UserRecord) -> UserOut:
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


def token_out(row: ApiToken, user: str) -> TokenOut:
    return TokenOut(
        id=row.id,
        user=user,
        scopes=row.scopes,
        label=row.label,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )
