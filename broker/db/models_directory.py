"""The company directories (LDAP, Active Directory) staff accounts come from."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, Boolean, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from broker.db.base import Base, UtcDateTime


class Directory(Base):
    __tablename__ = "directories"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(32), unique=True)
    url: Mapped[str] = mapped_column(String(500))
    bind_dn: Mapped[str] = mapped_column(String(500))
    # The service account's password; never shown, listed or logged.
    bind_password: Mapped[str] = mapped_column(Text)
    ca_file: Mapped[str | None] = mapped_column(String(500), nullable=True)
    # Where people are, the group mappings, timeouts: see broker.directory.store.
    settings: Mapped[dict[str, object]] = mapped_column(JSON)
    healthy: Mapped[bool] = mapped_column(Boolean)
    health_message: Mapped[str] = mapped_column(Text)
    synced_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
