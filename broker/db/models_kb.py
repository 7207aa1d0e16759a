"""Tables of the knowledge base: articles, every saved version, where each came from, which
tickets it solved, and the search documents the full-text index is built from.

The full-text structures themselves (SQLite FTS5 table and triggers, PostgreSQL tsvector
column and GIN index) are in migration 0002, since autogenerate cannot express them.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from broker.db.base import Base, UtcDateTime


class KbArticle(Base):
    """The current version of an article; ``content`` holds what ``ArticleContent`` holds."""

    __tablename__ = "kb_articles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)  # draft | published | retired
    title: Mapped[str] = mapped_column(String(200))
    content: Mapped[dict[str, object]] = mapped_column(JSON)
    version: Mapped[int] = mapped_column(Integer)
    author: Mapped[str] = mapped_column(String(64))
    reviewer: Mapped[str | None] = mapped_column(String(64), nullable=True)
    solved_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    published_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    retired_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)


class KbArticleVersion(Base):
    """Every save and every status change of an article, with the content as it was then."""

    __tablename__ = "kb_article_versions"
    __table_args__ = (UniqueConstraint("article_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    article_id: Mapped[int] = mapped_column(
        ForeignKey("kb_articles.id", ondelete="CASCADE"), index=True
    )
    version: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(16))  # create | edit | publish | retire | reopen
    status: Mapped[str] = mapped_column(String(16))
    content: Mapped[dict[str, object]] = mapped_column(JSON)
    saved_by: Mapped[str] = mapped_column(String(64))
    saved_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    note: Mapped[str] = mapped_column(String(500), default="")


class KbArticleSource(Base):
    """A ticket or session an article was written from; shown to staff serving ``customer``."""

    __tablename__ = "kb_article_sources"
    __table_args__ = (UniqueConstraint("article_id", "kind", "ref"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    article_id: Mapped[int] = mapped_column(
        ForeignKey("kb_articles.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(8))  # ticket | session
    ref: Mapped[str] = mapped_column(String(32))  # T-1042 | s-<22>
    customer: Mapped[str] = mapped_column(String(63))


class KbSolved(Base):
    """Staff said this article solved this ticket: links them, and counts the article's help."""

    __tablename__ = "kb_solved"
    __table_args__ = (UniqueConstraint("article_id", "ticket_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    article_id: Mapped[int] = mapped_column(
        ForeignKey("kb_articles.id", ondelete="CASCADE"), index=True
    )
    ticket_id: Mapped[int] = mapped_column(Integer, index=True)
    customer: Mapped[str] = mapped_column(String(63))
    marked_by: Mapped[str] = mapped_column(String(64))
    marked_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class KbNotHelped(Base):
    """Staff said this suggested article did not help with this ticket: the ticket's
    suggestions put it last, and it weighs against the article everywhere else."""

    __tablename__ = "kb_not_helped"
    __table_args__ = (UniqueConstraint("article_id", "ticket_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    article_id: Mapped[int] = mapped_column(
        ForeignKey("kb_articles.id", ondelete="CASCADE"), index=True
    )
    ticket_id: Mapped[int] = mapped_column(Integer, index=True)
    customer: Mapped[str] = mapped_column(String(63))
    marked_by: Mapped[str] = mapped_column(String(64))
    marked_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class KbTranslation(Base):
    """Two articles that are the German and the English version of one: a row each way."""

    __tablename__ = "kb_translations"

    article_id: Mapped[int] = mapped_column(
        ForeignKey("kb_articles.id", ondelete="CASCADE"), primary_key=True
    )
    translation_id: Mapped[int] = mapped_column(
        ForeignKey("kb_articles.id", ondelete="CASCADE"), unique=True
    )


class KbSearchDoc(Base):
    """One searchable document: a published-or-not article, or a solved ticket.

    The text columns are what the index reads; ``stems`` holds German word forms and
    ``concepts`` the glossary concept tokens of the words (see ``broker.kb.analysis``).
    ``os_terms`` and ``tag_terms`` are space-padded folded words for the OS and tag filters.
    Tickets carry their ``customer`` so results can be scoped.
    """

    __tablename__ = "kb_search_docs"
    __table_args__ = (
        UniqueConstraint("kind", "ref_id"),
        Index("ix_kb_search_docs_kind_status", "kind", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))  # article | ticket
    ref_id: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    customer: Mapped[str] = mapped_column(String(63), default="")
    title: Mapped[str] = mapped_column(Text)
    problem: Mapped[str] = mapped_column(Text)
    solution: Mapped[str] = mapped_column(Text)
    commands: Mapped[str] = mapped_column(Text)
    tags: Mapped[str] = mapped_column(Text)
    stems: Mapped[str] = mapped_column(Text)
    concepts: Mapped[str] = mapped_column(Text, default="")
    glossary: Mapped[str] = mapped_column(String(16), default="")  # analysis.glossary_version
    os_terms: Mapped[str] = mapped_column(Text, default="")
    tag_terms: Mapped[str] = mapped_column(Text, default="")
    solved_count: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class KbTicketSync(Base):
    """One row: how far solved tickets have been copied into the search documents."""

    __tablename__ = "kb_ticket_sync"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    synced_until: Mapped[dt.datetime] = mapped_column(UtcDateTime)
