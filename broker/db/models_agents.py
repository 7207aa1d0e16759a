"""Tables for enrolled agents and the enrollment tokens that admit them."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from broker.db.base import Base, UtcDateTime


class EnrollmentToken(Base):
    __tablename__ = "enrollment_tokens"

    id: Mapped[str] = mapped_column(String(12), primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    labels: Mapped[dict[str, str]] = mapped_column(JSON)
    consent: Mapped[str] = mapped_column(String(16))  # attended | unattended
    uses_left: Mapped[int] = mapped_column(Integer)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)


class Agent(Base):
    __tablename__ = "agents"

    id: Mapped[str] = mapped_column(String(19), primary_key=True)  # ag-<16 [a-z0-9]>
    name: Mapped[str] = mapped_column(String(63), index=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    labels: Mapped[dict[str, str]] = mapped_column(JSON)
    facts: Mapped[dict[str, object]] = mapped_column(JSON)
    consent: Mapped[str] = mapped_column(String(16))
    public_key: Mapped[str] = mapped_column(Text)  # OpenSSH line of the agent's host key
    key_fingerprint: Mapped[str] = mapped_column(String(100), unique=True)
    enrolled_with: Mapped[str] = mapped_column(String(12))  # enrollment token id
    enrolled_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    # Presence: the broker node holding the tunnel writes these; "online" is derived from
    # connected_at/disconnected_at so a crashed node's agents read as offline after restart.
    online: Mapped[bool] = mapped_column(default=False)
    connected_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    last_seen: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
