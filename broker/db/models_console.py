"""Server-side web console sessions: one row per signed-in browser (or sign-in in progress).

The browser holds only a random secret in a ``__Host-`` cookie; the row is keyed by its
SHA-256, so a database leak gives nobody a usable cookie."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from broker.db.base import Base, UtcDateTime


class ConsoleSession(Base):
    __tablename__ = "console_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 hex of the cookie
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # "active" once password and code were checked; "enrol" while a first TOTP is set up.
    stage: Mapped[str] = mapped_column(String(16))
    # users.session_epoch when the row was made: a bump (disable, log out everywhere) voids it.
    epoch: Mapped[int] = mapped_column(Integer)
    csrf_token: Mapped[str] = mapped_column(String(64))
    # The secret being enrolled ("enrol" stage only); it moves to users.totp_secret on success.
    pending_totp: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    last_seen_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    source: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(200), default="")
