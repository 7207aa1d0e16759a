"""Tables of remote sessions: the session itself, who took part, and the outbox that carries
each ended session's note to its ticket.

A session row exists before any byte reaches the agent (see broker.sessions); the ticket is
referenced by number only, because the ticket may live in an outside ticket system.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from broker.db.base import Base, UtcDateTime


class RemoteSession(Base):
    __tablename__ = "sessions"
    __table_args__ = (Index("ix_sessions_owner_state", "owner", "state"),)

    id: Mapped[str] = mapped_column(String(24), primary_key=True)  # s-<22 [A-Za-z0-9]>
    ticket_id: Mapped[int] = mapped_column(Integer, index=True)
    # The ticket's customer when the session started: reads are authorised against it.
    customer: Mapped[str] = mapped_column(String(63), index=True)
    agent_id: Mapped[str] = mapped_column(String(19), index=True)
    agent_name: Mapped[str] = mapped_column(String(63))
    owner: Mapped[str] = mapped_column(String(64))
    owner_level: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(8))  # shell | exec | sftp
    command: Mapped[str | None] = mapped_column(Text, nullable=True)  # exec only
    via: Mapped[str] = mapped_column(String(8))  # ssh | web
    source: Mapped[str] = mapped_column(String(64), default="")
    node: Mapped[str] = mapped_column(String(64), default="")
    # The node that took the session over to seal it after a crash (its own after a
    # restart, another one after its node died): claimed by one conditional update, so
    # exactly one node seals and records each interrupted session.
    recovered_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # waiting_consent | live | ended | refused | failed | interrupted
    state: Mapped[str] = mapped_column(String(16), index=True)
    consent: Mapped[str | None] = mapped_column(String(16), nullable=True)
    consent_by: Mapped[str | None] = mapped_column(String(32), nullable=True)
    consent_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    cols: Mapped[int] = mapped_column(Integer, default=80)
    rows: Mapped[int] = mapped_column(Integer, default=24)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    started_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    end_reason: Mapped[str | None] = mapped_column(String(200), nullable=True)
    ended_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    exit_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    exit_signal: Mapped[str | None] = mapped_column(String(32), nullable=True)
    transcript_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    transcript_complete: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    transcript_events: Mapped[int | None] = mapped_column(Integer, nullable=True)
    commands: Mapped[list[dict[str, object]] | None] = mapped_column(JSON, nullable=True)


class SessionParticipant(Base):
    __tablename__ = "session_participants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[str] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))  # owner | joiner | observer
    via: Mapped[str] = mapped_column(String(8))  # ssh | web
    joined_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    left_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    left_reason: Mapped[str | None] = mapped_column(String(200), nullable=True)


class SessionOutbox(Base):
    """A note waiting to reach the ticket system; delivered once, retried until it is."""

    __tablename__ = "session_outbox"
    __table_args__ = (Index("ix_session_outbox_due", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id"), unique=True)
    ticket_id: Mapped[int] = mapped_column(Integer)
    # The ticket system adds nothing for a key it has seen: retries never double a note.
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    author: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    # Transcript files sent with the note (read from the transcript store when sending).
    attachments: Mapped[list[str]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16))  # pending | delivered
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    # A worker holds a row until then, so two broker nodes do not send it at once.
    claimed_until: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(300), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
