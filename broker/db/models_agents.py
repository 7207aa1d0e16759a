"""Tables for enrolled agents and the enrollment tokens that admit them."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from broker.db.base import Base, UtcDateTime


class EnrollmentToken(Base):
    __tablename__ = "enrollment_tokens"

    id: Mapped[str] = mapped_column(String(12), primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    labels: Mapped[dict[str, str]] = mapped_column(JSON)
    consent: Mapped[str] = mapped_column(String(16))  # attended | unattended
    # Claimed with a conditional UPDATE (uses_left > 0), so two racing agents cannot both win.
    uses_left: Mapped[int] = mapped_column(Integer)
    max_uses: Mapped[int] = mapped_column(Integer, default=1)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)


class Agent(Base):
    __tablename__ = "agents"
    __table_args__ = (
        # A name is unique per customer among agents that are not revoked, so a machine
        # that was revoked can enroll again under its old name.
        Index(
            "uq_agents_customer_live_name",
            "customer_id",
            "name",
            unique=True,
            sqlite_where=text("revoked_at IS NULL"),
            postgresql_where=text("revoked_at IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(19), primary_key=True)  # ag-<16 [a-z0-9]>
    name: Mapped[str] = mapped_column(String(63), index=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    labels: Mapped[dict[str, str]] = mapped_column(JSON)
    facts: Mapped[dict[str, object]] = mapped_column(JSON)
    facts_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    consent: Mapped[str] = mapped_column(String(16))
    public_key: Mapped[str] = mapped_column(Text)  # OpenSSH line of the agent's host key
    key_fingerprint: Mapped[str] = mapped_column(String(100), unique=True)
    enrolled_with: Mapped[str] = mapped_column(String(12))  # enrollment token id
    enrolled_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    # Presence, written by the broker node holding the tunnel. A node marks every agent
    # offline when it starts (a SIGKILLed node cannot say goodbye); an offline write
    # names the connected_at it ends, so a stale disconnect never hides a newer tunnel.
    online: Mapped[bool] = mapped_column(default=False)
    node: Mapped[str | None] = mapped_column(String(64), nullable=True)
    connected_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    last_seen: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    revoked_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
