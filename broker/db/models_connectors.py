"""Tables of the ticket-system connectors: the external systems an admin configured, and the
link from each mirrored ticket to its original there."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from broker.db.base import Base, UtcDateTime


class Connector(Base):
    """One external ticket system, for one customer or (``customer_id`` NULL) for all."""

    __tablename__ = "connectors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(32), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # rt | zammad | znuny | webhook
    url: Mapped[str] = mapped_column(String(500))
    # Staff type PREFIX-<number> (e.g. RT-1234) to name a mirrored ticket.
    prefix: Mapped[str] = mapped_column(String(10), unique=True)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), nullable=True)
    # Kind-specific settings (the level mapping, ...): see broker.connectors.settings.
    settings: Mapped[dict[str, object]] = mapped_column(JSON)
    # The API token or password; never shown, listed or logged.
    credential: Mapped[str] = mapped_column(Text)
    healthy: Mapped[bool] = mapped_column(Boolean)
    health_message: Mapped[str] = mapped_column(Text)
    checked_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    # Where the change feed was read up to (RT: the last transaction id seen).
    cursor: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class ExternalTicket(Base):
    """A ticket mirrored from a connector: our ticket row, its number and link there, and the
    external values last seen, so a sync applies only what changed over there."""

    __tablename__ = "external_tickets"
    __table_args__ = (UniqueConstraint("connector_id", "external_id"),)

    ticket_id: Mapped[int] = mapped_column(
        ForeignKey("tickets.id", ondelete="CASCADE"), primary_key=True
    )
    connector_id: Mapped[int] = mapped_column(
        ForeignKey("connectors.id", ondelete="CASCADE"), index=True
    )
    external_id: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(String(500))
    seen_queue: Mapped[str] = mapped_column(String(200))
    seen_status: Mapped[str] = mapped_column(String(32))
    seen_owner: Mapped[str] = mapped_column(String(200))
    seen_title: Mapped[str] = mapped_column(String(200))
    # Set when the original was merged into another ticket: notes go there.
    merged_into: Mapped[str | None] = mapped_column(String(64), nullable=True)
    synced_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class ConnectorOutbox(Base):
    """A change made in Secondline to a mirrored ticket (an escalation or hand-back, an
    assignment, a status action), on its way to the external system; written in the
    transaction of the change itself, so none is lost."""

    __tablename__ = "connector_outbox"
    __table_args__ = (Index("ix_connector_outbox_due", "connector_id", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    connector_id: Mapped[int] = mapped_column(ForeignKey("connectors.id", ondelete="CASCADE"))
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(64))
    # The note that goes with the change carries this key, so a retry finds it (see tickets).
    key: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # level | assign | status | note | event
    # level: where the ticket goes (RT: the queue); assign: the owner; status: ours;
    # event: the webhook event's type (its JSON body is in text, its id in key).
    value: Mapped[str] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text)  # the note saying who changed what, and why ("")
    state: Mapped[str] = mapped_column(String(16))  # pending | delivered
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    claimed_until: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)


class WebhookReceipt(Base):
    """An event id a webhook connector's system sent us, kept for a week: the same id
    again is a replay (or a retry of one that arrived) and changes nothing."""

    __tablename__ = "webhook_receipts"

    connector_id: Mapped[int] = mapped_column(
        ForeignKey("connectors.id", ondelete="CASCADE"), primary_key=True
    )
    event_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    received_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, index=True)
