"""The configured connectors, in the database: adding, listing, removing, their health and
the cursor of their change feed. Every change is audited; the credential is stored
encrypted (``sealing``) for the sync to use and never handed out by a listing or written to
a log."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.audit.log import AuditLog
from broker.connectors.errors import ConnectorConflict, ConnectorInputError, ConnectorNotFound
from broker.connectors.remote import ExternalSystem
from broker.connectors.rt import RtSystem
from broker.connectors.sealing import CredentialSealer, CredentialUnreadable, is_sealed
from broker.connectors.settings import (
    DEFAULT_PREFIX,
    ConnectorSettingsError,
    LevelMap,
    check_credential,
    check_kind,
    check_name,
    check_prefix,
    check_url,
    default_levels,
    parse_levels,
)
from broker.connectors.webhook import WebhookSystem
from broker.connectors.zammad import ZammadSystem
from broker.connectors.znuny import ZnunySystem
from broker.db.models_connectors import Connector
from broker.db.models_staff import Customer

# For a connector of all customers: the external field that names our customer.
DEFAULT_CUSTOMER_FIELD = "Customer"


@dataclass(frozen=True)
class ConnectorRecord:
    id: int
    name: str
    kind: str
    url: str
    prefix: str
    customer: str | None
    levels: LevelMap
    customer_field: str
    healthy: bool
    health_message: str
    checked_at: dt.datetime | None
    cursor: str | None
    credential: str = field(repr=False)

    def public(self) -> dict[str, object]:
        """What admins see: everything but the credential."""
        return {
            "name": self.name,
            "kind": self.kind,
            "url": self.url,
            "prefix": self.prefix,
            "customer": self.customer,
            "levels": self.levels.as_text(),
            "customer_field": None if self.customer else self.customer_field,
            "healthy": self.healthy,
            "health": self.health_message,
            "checked_at": self.checked_at.isoformat() if self.checked_at else None,
        }


@dataclass(frozen=True)
class NewConnector:
    name: str
    kind: str
    url: str
    credential: str
    customer: str | None = None
    prefix: str | None = None
    levels: str | None = None


# One client class per kind, each made from the URL, the credential and the level map.
SYSTEM_CLASSES: dict[str, Callable[[str, str, LevelMap], ExternalSystem]] = {
    "rt": RtSystem,
    "zammad": ZammadSystem,
    "znuny": ZnunySystem,
    "webhook": WebhookSystem,
}


def build_system(record: ConnectorRecord) -> ExternalSystem:
    """The client of the connector's kind."""
    make = SYSTEM_CLASSES.get(record.kind)
    if make is None:
        raise ConnectorInputError(f"connector kind {record.kind!r} is not available")
    return make(record.url, record.credential, record.levels)


class ConnectorStore:
    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        audit: AuditLog,
        clock: Callable[[], dt.datetime],
        sealer: CredentialSealer,
    ) -> None:
        self._db = db
        self._audit = audit
        self._clock = clock
        self._sealer = sealer

    async def add(self, new: NewConnector, *, actor: str, source: str = "") -> ConnectorRecord:
        try:
            name = check_name(new.name)
            kind = check_kind(new.kind)
            url = check_url(new.url)
            prefix = check_prefix(new.prefix or DEFAULT_PREFIX[kind])
            levels = parse_levels(new.levels) if new.levels else default_levels(kind)
            credential = check_credential(new.credential, kind)
        except ConnectorSettingsError as exc:
            raise ConnectorInputError(exc.message) from None
        now = self._clock()
        try:
            async with self._db() as db, db.begin():
                customer_id = None
                if new.customer is not None:
                    customer_id = await db.scalar(
                        select(Customer.id).where(Customer.name == new.customer)
                    )
                    if customer_id is None:
                        raise ConnectorInputError(
                            f"there is no customer {new.customer[:63]!r}; "
                            "see `secondline customer list`"
                        )
                db.add(
                    Connector(
                        name=name,
                        kind=kind,
                        url=url,
                        prefix=prefix,
                        customer_id=customer_id,
                        settings={
                            "levels": levels.as_json(),
                            "customer_field": DEFAULT_CUSTOMER_FIELD,
                        },
                        credential=self._sealer.seal(credential),
                        healthy=True,
                        health_message="not checked yet",
                        checked_at=None,
                        cursor=None,
                        created_by=actor,
                        created_at=now,
                    )
                )
                await db.flush()
        except IntegrityError:
            raise ConnectorConflict(
                f"a connector named {name!r} or with the prefix {prefix!r} exists already; "
                "choose another name or --prefix"
            ) from None
        await self._audit.record(
            actor=actor,
            action="connector.add",
            target=name,
            source=source,
            details={"kind": kind, "url": url, "prefix": prefix, "customer": new.customer},
        )
        return await self.get(name)

    async def get(self, name: str) -> ConnectorRecord:
        async with self._db() as db:
            row = (
                await db.execute(
                    select(Connector, Customer.name)
                    .outerjoin(Customer, Customer.id == Connector.customer_id)
                    .where(Connector.name == name)
                )
            ).one_or_none()
        if row is None:
            raise ConnectorNotFound(
                f"there is no connector {name[:40]!r}; see `secondline connector list`"
            )
        return self._record(row[0], row[1])

    async def all(self) -> list[ConnectorRecord]:
        async with self._db() as db:
            rows = (
                await db.execute(
                    select(Connector, Customer.name)
                    .outerjoin(Customer, Customer.id == Connector.customer_id)
                    .order_by(Connector.name)
                )
            ).all()
        return [self._record(r[0], r[1]) for r in rows]

    async def by_prefix(self, prefix: str) -> ConnectorRecord | None:
        for record in await self.all():
            if record.prefix == prefix:
                return record
        return None

    async def remove(self, name: str, *, actor: str, source: str = "") -> None:
        """Forget the connector; its mirrored tickets stay, as tickets of the built-in store."""
        record = await self.get(name)
        async with self._db() as db, db.begin():
            await db.execute(delete(Connector).where(Connector.id == record.id))
        await self._audit.record(
            actor=actor, action="connector.remove", target=name, source=source, details={}
        )

    async def set_health(self, record: ConnectorRecord, healthy: bool, message: str) -> bool:
        """Record the connector's health; True when it changed (the caller audits that)."""
        async with self._db() as db, db.begin():
            await db.execute(
                update(Connector)
                .where(Connector.id == record.id)
                .values(healthy=healthy, health_message=message[:1000], checked_at=self._clock())
            )
        changed = healthy != record.healthy
        if changed:
            await self._audit.record(
                actor="secondline",
                action="connector.healthy" if healthy else "connector.unhealthy",
                target=record.name,
                outcome="ok" if healthy else "failed",
                details={"message": message[:500]},
            )
        return changed

    async def set_cursor(self, record: ConnectorRecord, cursor: str) -> None:
        async with self._db() as db, db.begin():
            await db.execute(
                update(Connector).where(Connector.id == record.id).values(cursor=cursor)
            )

    async def seal_plain(self) -> int:
        """Encrypt credentials stored in plain text by a broker from before encryption; how
        many were sealed."""
        async with self._db() as db, db.begin():
            rows = (await db.execute(select(Connector.id, Connector.credential))).all()
            plain = [(row_id, value) for row_id, value in rows if not is_sealed(value)]
            for row_id, value in plain:
                await db.execute(
                    update(Connector)
                    .where(Connector.id == row_id, Connector.credential == value)
                    .values(credential=self._sealer.seal(value))
                )
        return len(plain)

    def _record(self, row: Connector, customer: str | None) -> ConnectorRecord:
        settings = row.settings or {}
        healthy, message = row.healthy, row.health_message
        try:
            credential = self._sealer.open(row.credential)
        except CredentialUnreadable as exc:
            # The system is then called without one, refuses, and the connector stays
            # unhealthy with this reason in `connector list`.
            credential, healthy, message = "", False, str(exc)
        return ConnectorRecord(
            id=row.id,
            name=row.name,
            kind=row.kind,
            url=row.url,
            prefix=row.prefix,
            customer=customer,
            levels=LevelMap.from_json(settings.get("levels")),
            customer_field=str(settings.get("customer_field") or DEFAULT_CUSTOMER_FIELD),
            healthy=healthy,
            health_message=message,
            checked_at=row.checked_at,
            cursor=row.cursor,
            credential=credential,
        )
