"""The configured directories, in the database: adding (validated), listing, removing, and
their health. Every change is audited; the service account's password is stored for the
sync to use and never handed out by a listing or written to a log."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.audit.log import AuditLog
from broker.db.models_directory import Directory
from broker.directory.ldap_client import Connection
from broker.directory.rules import (
    DirectorySettings,
    SettingsError,
    group_cn,
    parse_customer_groups,
    parse_roles,
    valid_attribute,
)
from broker.errors import ConflictError, InputError, NotFoundError

_NAME_RE: Final = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
_DN_RE: Final = re.compile(r"^[^\x00-\x1f]{3,500}$")
MIN_SYNC: Final = 10
MAX_SYNC: Final = 86_400


@dataclass(frozen=True)
class DirectoryRecord:
    id: int
    name: str
    connection: Connection = field(repr=False)
    settings: DirectorySettings
    healthy: bool
    health_message: str
    synced_at: dt.datetime | None

    def public(self) -> dict[str, object]:
        """What admins see: everything but the service account's password."""
        s = self.settings
        return {
            "name": self.name,
            "url": self.connection.url,
            "bind_dn": self.connection.bind_dn,
            "base_dn": s.base_dn,
            "user_attribute": s.user_attribute,
            "roles": ",".join(f"cn={g}={r}" for g, r in s.roles),
            "customer_groups": ",".join(f"cn={g}={c}" for g, c in s.customer_groups),
            "customer_attribute": s.customer_attribute,
            "ssh_key_attribute": s.ssh_key_attribute,
            "sync_seconds": s.sync_seconds,
            "timeout_seconds": s.timeout_seconds,
            "on_outage": s.on_outage,
            "healthy": self.healthy,
            "health": self.health_message,
            "synced_at": self.synced_at.isoformat() if self.synced_at else None,
        }


@dataclass(frozen=True, kw_only=True)
class NewDirectory:
    name: str
    url: str
    bind_dn: str
    bind_password: str = field(repr=False)
    base_dn: str
    roles: str
    customer_groups: str | None = None
    customer_attribute: str | None = None
    user_attribute: str = "uid"
    user_object_class: str = "person"
    ssh_key_attribute: str | None = "sshPublicKey"
    sync_seconds: int = 300
    timeout_seconds: float = 5.0
    on_outage: str = "keep"
    ca_file: str | None = None


def _check_url(url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in ("ldap", "ldaps") or not parts.hostname:
        raise SettingsError(
            f"the directory URL {url[:100]!r} is not ldap[s]://HOST[:PORT]; "
            "e.g. ldaps://dc1.example.com"
        )
    if parts.path not in ("", "/") or parts.query or parts.username:
        raise SettingsError("give the directory URL as ldap[s]://HOST[:PORT] only")
    return f"{parts.scheme.lower()}://{parts.netloc}"


def _check_dn(text: str, what: str) -> str:
    if not _DN_RE.fullmatch(text.strip()) or "=" not in text:
        raise SettingsError(f"{what} {text[:100]!r} is not a DN; e.g. dc=example,dc=com")
    return text.strip()


def validate(new: NewDirectory) -> tuple[str, Connection, DirectorySettings]:
    if not _NAME_RE.fullmatch(new.name):
        raise SettingsError(
            f"the directory name {new.name[:40]!r} must be lower-case letters, digits and '-' "
            "(at most 32), e.g. corp"
        )
    password = new.bind_password.rstrip("\r\n")
    if not password or "\x00" in password or len(password) > 1024:
        raise SettingsError("the bind password file is empty or holds more than a password")
    if not MIN_SYNC <= new.sync_seconds <= MAX_SYNC:
        raise SettingsError(f"the sync interval must be {MIN_SYNC} s to {MAX_SYNC} s")
    if not 0.5 <= new.timeout_seconds <= 60:
        raise SettingsError("the directory timeout must be 0.5 s to 60 s")
    if new.on_outage not in ("keep", "end"):
        raise SettingsError("on an outage, either keep the sessions going (keep) or end them (end)")
    if new.customer_groups and new.customer_attribute:
        raise SettingsError("name customers by groups or by an attribute, not both")
    settings = DirectorySettings(
        base_dn=_check_dn(new.base_dn, "the base DN"),
        user_attribute=valid_attribute(new.user_attribute, "the user attribute"),
        user_object_class=valid_attribute(new.user_object_class, "the user object class"),
        roles=parse_roles(new.roles),
        customer_groups=parse_customer_groups(new.customer_groups or ""),
        customer_attribute=(
            valid_attribute(new.customer_attribute, "the customer attribute")
            if new.customer_attribute
            else None
        ),
        ssh_key_attribute=(
            valid_attribute(new.ssh_key_attribute, "the SSH key attribute")
            if new.ssh_key_attribute
            else None
        ),
        sync_seconds=new.sync_seconds,
        timeout_seconds=new.timeout_seconds,
        on_outage="end" if new.on_outage == "end" else "keep",
    )
    connection = Connection(
        url=_check_url(new.url),
        bind_dn=_check_dn(new.bind_dn, "the bind DN"),
        bind_password=password,
        ca_file=new.ca_file or None,
    )
    return new.name, connection, settings


def _settings_json(s: DirectorySettings) -> dict[str, object]:
    return {
        "base_dn": s.base_dn,
        "user_attribute": s.user_attribute,
        "user_object_class": s.user_object_class,
        "roles": [[g, r] for g, r in s.roles],
        "customer_groups": [[g, c] for g, c in s.customer_groups],
        "customer_attribute": s.customer_attribute,
        "ssh_key_attribute": s.ssh_key_attribute,
        "sync_seconds": s.sync_seconds,
        "timeout_seconds": s.timeout_seconds,
        "on_outage": s.on_outage,
    }


def _record(row: Directory) -> DirectoryRecord:
    raw = row.settings
    # Written by validate() above: re-parse the mappings so a hand-edited row cannot widen them.
    roles = parse_roles(",".join(f"{g}={r}" for g, r in raw["roles"]))  # type: ignore[attr-defined]
    groups = tuple((group_cn(str(g)), str(c)) for g, c in raw["customer_groups"])  # type: ignore[attr-defined]
    settings = DirectorySettings(
        base_dn=str(raw["base_dn"]),
        user_attribute=str(raw["user_attribute"]),
        user_object_class=str(raw["user_object_class"]),
        roles=roles,
        customer_groups=groups,
        customer_attribute=str(raw["customer_attribute"]) if raw["customer_attribute"] else None,
        ssh_key_attribute=str(raw["ssh_key_attribute"]) if raw["ssh_key_attribute"] else None,
        sync_seconds=int(str(raw["sync_seconds"])),
        timeout_seconds=float(str(raw["timeout_seconds"])),
        on_outage="end" if raw["on_outage"] == "end" else "keep",
    )
    connection = Connection(row.url, row.bind_dn, row.bind_password, row.ca_file)
    return DirectoryRecord(
        row.id, row.name, connection, settings, row.healthy, row.health_message, row.synced_at
    )


class DirectoryStore:
    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        audit: AuditLog,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self._db = db
        self._audit = audit
        self._clock = clock

    async def add(self, new: NewDirectory, *, actor: str, source: str = "") -> DirectoryRecord:
        try:
            name, connection, settings = validate(new)
        except SettingsError as exc:
            raise InputError(str(exc), code="directory_invalid") from None
        row = Directory(
            name=name,
            url=connection.url,
            bind_dn=connection.bind_dn,
            bind_password=connection.bind_password,
            ca_file=connection.ca_file,
            settings=_settings_json(settings),
            healthy=False,
            health_message="not synced yet",
            synced_at=None,
            created_by=actor,
            created_at=self._clock(),
        )
        try:
            async with self._db() as db, db.begin():
                db.add(row)
        except IntegrityError:
            raise ConflictError(
                f"there is a directory named {name} already; see `secondline directory list`",
                code="directory_exists",
            ) from None
        record = _record(row)
        await self._audit.record(
            actor=actor,
            action="directory.add",
            target=name,
            source=source,
            details={k: v for k, v in record.public().items() if k not in ("health", "healthy")},
        )
        return record

    async def all(self) -> list[DirectoryRecord]:
        async with self._db() as db:
            rows = (await db.execute(select(Directory).order_by(Directory.id))).scalars().all()
        return [_record(r) for r in rows]

    async def get(self, name: str) -> DirectoryRecord:
        async with self._db() as db:
            row = (
                await db.execute(select(Directory).where(Directory.name == name[:32]))
            ).scalar_one_or_none()
        if row is None:
            raise NotFoundError(
                f"there is no directory {name[:32]!r}; see `secondline directory list`",
                code="directory_not_found",
            )
        return _record(row)

    async def remove(self, name: str, *, actor: str, source: str = "") -> None:
        record = await self.get(name)
        async with self._db() as db, db.begin():
            await db.execute(delete(Directory).where(Directory.id == record.id))
        await self._audit.record(actor=actor, action="directory.remove", target=name, source=source)

    async def set_health(
        self, record: DirectoryRecord, healthy: bool, message: str, *, synced: bool
    ) -> bool:
        """Store the health; True when it changed (then it is audited once)."""
        now = self._clock()
        async with self._db() as db, db.begin():
            row = await db.get(Directory, record.id)
            if row is None:
                return False
            changed = row.healthy != healthy or row.health_message != message
            values: dict[str, object] = {"healthy": healthy, "health_message": message[:2000]}
            if synced:
                values["synced_at"] = now
            await db.execute(update(Directory).where(Directory.id == record.id).values(**values))
        if changed:
            await self._audit.record(
                actor="directory-sync",
                action="directory.health",
                target=record.name,
                outcome="ok" if healthy else "failed",
                details={"message": message[:500]},
            )
        return changed
