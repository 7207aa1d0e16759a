"""Tables of the shared transcript store (``broker.transcript.store``): on PostgreSQL every
session's transcript is copied here while it is recorded, so that every node of a cluster
plays, exports and verifies it, and another node can seal it when the node that recorded
it died.

A transcript's two growing files (the ``.cast`` and its chain file) are kept as chunks,
each the whole lines appended since the last copy, keyed by their offset in the file; the
seal is one row, written once; so is each file an SFTP session kept (``<cast>.files/N``)
once it is complete. The rows hold exactly the bytes of the files, so a
transcript put back together from them verifies like the files it was copied from.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from broker.db.base import Base, UtcDateTime


class TranscriptChunk(Base):
    __tablename__ = "transcript_chunks"

    session_id: Mapped[str] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True
    )
    part: Mapped[str] = mapped_column(String(8), primary_key=True)  # cast | chain
    # Where the chunk starts in its file: the chunks of one part are contiguous from 0.
    offset: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class TranscriptSeal(Base):
    __tablename__ = "transcript_seals"

    session_id: Mapped[str] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True
    )
    seal: Mapped[str] = mapped_column(Text)  # the seal file's JSON, as written
    node: Mapped[str] = mapped_column(String(64))  # the node that stored it
    stored_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class TranscriptKeptFile(Base):
    __tablename__ = "transcript_kept_files"

    session_id: Mapped[str] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True
    )
    number: Mapped[int] = mapped_column(Integer, primary_key=True)  # kept=N in its marker
    data: Mapped[bytes] = mapped_column(LargeBinary)
