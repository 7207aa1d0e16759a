"""Articles in the database: create, save (each save a version), change status, read,
history, and "this solved it" marks. Callers check permissions and audit (see ``actions``);
this module checks content and the status table, and keeps the search document in step."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import and_, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from broker.db.models_kb import (
    KbArticle,
    KbArticleSource,
    KbArticleVersion,
    KbNotHelped,
    KbSolved,
    KbTranslation,
)
from broker.db.models_sessions import RemoteSession
from broker.kb.article import (
    ArticleContent,
    StatusAction,
    check_content,
    format_article_id,
    os_terms,
    publish_gaps,
    secrets_left,
    transition,
)
from broker.kb.errors import REDACTION_NEEDED, ArticleNotFound, StatusRefused
from broker.kb.search_docs import DocFields, upsert_doc
from broker.rules.outside_text import clean_line

NOTE_MAX = 500


@dataclass(frozen=True)
class Source:
    kind: str  # ticket | session
    ref: str
    customer: str


@dataclass(frozen=True)
class ArticleRecord:
    id: int
    status: str
    version: int
    content: ArticleContent
    author: str
    reviewer: str | None
    solved_count: int
    created_at: dt.datetime
    updated_at: dt.datetime
    published_at: dt.datetime | None
    retired_at: dt.datetime | None
    sources: tuple[Source, ...]

    @property
    def ref(self) -> str:
        return format_article_id(self.id)


@dataclass(frozen=True)
class VersionRecord:
    version: int
    action: str
    status: str
    saved_by: str
    saved_at: dt.datetime
    note: str
    content: ArticleContent


def doc_fields(status: str, content: ArticleContent, solved_count: int) -> DocFields:
    """What the search index reads of an article."""
    title, problem, solution, commands, tags = content.search_texts()
    return DocFields(
        status=status,
        title=title,
        problem=problem,
        solution=solution,
        commands=commands,
        tags=tags,
        os_terms=os_terms(content.os),
        tag_terms=" " + " ".join(content.tags) + " " if content.tags else "",
        solved_count=solved_count,
    )


async def _row(db: AsyncSession, article_id: int, *, lock: bool = False) -> KbArticle:
    query = select(KbArticle).where(KbArticle.id == article_id)
    if lock:
        query = query.with_for_update()
    row = (await db.execute(query)).scalar_one_or_none()
    if row is None:
        raise ArticleNotFound(
            f"there is no article {format_article_id(article_id)}; "
            "find it with `secondline kb search`"
        )
    return row


async def _record(db: AsyncSession, row: KbArticle) -> ArticleRecord:
    sources = (
        await db.execute(
            select(KbArticleSource)
            .where(KbArticleSource.article_id == row.id)
            .order_by(KbArticleSource.id)
        )
    ).scalars()
    return ArticleRecord(
        id=row.id,
        status=row.status,
        version=row.version,
        content=ArticleContent.from_dict(row.content),
        author=row.author,
        reviewer=row.reviewer,
        solved_count=row.solved_count,
        created_at=row.created_at,
        updated_at=row.updated_at,
        published_at=row.published_at,
        retired_at=row.retired_at,
        sources=tuple(Source(s.kind, s.ref, s.customer) for s in sources),
    )


def _version(row: KbArticle, action: str, by: str, now: dt.datetime, note: str) -> KbArticleVersion:
    return KbArticleVersion(
        article_id=row.id,
        version=row.version,
        action=action,
        status=row.status,
        content=row.content,
        saved_by=by,
        saved_at=now,
        note=clean_line(note, NOTE_MAX),
    )


async def create(
    db: AsyncSession,
    content: ArticleContent,
    *,
    author: str,
    now: dt.datetime,
    sources: Sequence[Source] = (),
) -> ArticleRecord:
    """A new draft (version 1) with its sources."""
    content = check_content(content)
    row = KbArticle(
        status="draft",
        title=content.title,
        content=content.as_dict(),
        version=1,
        author=author,
        reviewer=None,
        solved_count=0,
        created_at=now,
        updated_at=now,
    )
    db.add(row)
    await db.flush()
    for src in dict.fromkeys(sources):
        db.add(
            KbArticleSource(article_id=row.id, kind=src.kind, ref=src.ref, customer=src.customer)
        )
    db.add(_version(row, "create", author, now, ""))
    await upsert_doc(db, "article", row.id, doc_fields(row.status, content, 0), now)
    return await _record(db, row)


async def get(db: AsyncSession, article_id: int) -> ArticleRecord:
    return await _record(db, await _row(db, article_id))


async def save(
    db: AsyncSession,
    article_id: int,
    content: ArticleContent,
    *,
    by: str,
    now: dt.datetime,
    base_version: int | None = None,
    note: str = "",
) -> ArticleRecord:
    """Store ``content`` as the next version; ``base_version`` guards against lost updates."""
    row = await _row(db, article_id, lock=True)
    if row.status == "retired":
        raise StatusRefused(
            f"article {format_article_id(article_id)} is retired; reopen it as a draft to edit it"
        )
    if base_version is not None and base_version != row.version:
        raise StatusRefused(
            f"article {format_article_id(article_id)} was saved as version {row.version} since "
            f"you opened version {base_version}; reload it and apply your change again",
            code="version_conflict",
        )
    content = check_content(content)
    if row.status == "published":
        gaps = publish_gaps(content)
        if gaps:
            raise StatusRefused(
                f"a published article needs a {' and a '.join(gaps)}; fill them in or retire it"
            )
    row.content = content.as_dict()
    row.title = content.title
    row.version += 1
    row.updated_at = now
    db.add(_version(row, "edit", by, now, note))
    await upsert_doc(db, "article", row.id, doc_fields(row.status, content, row.solved_count), now)
    return await _record(db, row)


async def change_status(
    db: AsyncSession, article_id: int, action: StatusAction, *, by: str, now: dt.datetime
) -> ArticleRecord:
    """Publish, retire or reopen; the change is a version of its own."""
    row = await _row(db, article_id, lock=True)
    target = transition(row.status, action, article=article_id)
    content = ArticleContent.from_dict(row.content)
    if action == "publish":
        gaps = publish_gaps(content)
        if gaps:
            raise StatusRefused(
                f"article {format_article_id(article_id)} has no {' and no '.join(gaps)} yet; "
                "write them before publishing",
                code="article_incomplete",
            )
        secrets = secrets_left(content)
        if secrets:
            raise StatusRefused(
                f"article {format_article_id(article_id)} still holds a secret in "
                f"{'; in '.join(secrets)}; replace it (e.g. by \u2039redacted\u203a) and "
                "publish again",
                code=REDACTION_NEEDED,
            )
        row.reviewer = by
        row.published_at = now
    if action == "retire":
        row.retired_at = now
    row.status = target
    row.version += 1
    row.updated_at = now
    db.add(_version(row, action, by, now, ""))
    await upsert_doc(db, "article", row.id, doc_fields(target, content, row.solved_count), now)
    return await _record(db, row)


async def versions(db: AsyncSession, article_id: int) -> list[VersionRecord]:
    await _row(db, article_id)
    rows = (
        await db.execute(
            select(KbArticleVersion)
            .where(KbArticleVersion.article_id == article_id)
            .order_by(KbArticleVersion.version)
        )
    ).scalars()
    return [
        VersionRecord(
            r.version,
            r.action,
            r.status,
            r.saved_by,
            r.saved_at,
            r.note,
            ArticleContent.from_dict(r.content),
        )
        for r in rows
    ]


async def mark_solved(
    db: AsyncSession,
    article_id: int,
    *,
    ticket_id: int,
    customer: str,
    by: str,
    now: dt.datetime,
) -> tuple[ArticleRecord, bool]:
    """Link the article to the ticket it solved; False when that was marked already."""
    row = await _row(db, article_id, lock=True)
    if row.status != "published":
        raise StatusRefused(
            f"article {format_article_id(article_id)} is {row.status}; only published articles "
            "are marked as a solution"
        )
    exists = (
        await db.execute(
            select(func.count())
            .select_from(KbSolved)
            .where(KbSolved.article_id == article_id, KbSolved.ticket_id == ticket_id)
        )
    ).scalar_one()
    if exists:
        return await _record(db, row), False
    db.add(
        KbSolved(
            article_id=article_id,
            ticket_id=ticket_id,
            customer=customer,
            marked_by=by,
            marked_at=now,
        )
    )
    # Counted in SQL, so two marks at once on two tickets both count.
    await db.execute(
        update(KbArticle)
        .where(KbArticle.id == article_id)
        .values(solved_count=KbArticle.solved_count + 1)
    )
    await db.refresh(row)
    content = ArticleContent.from_dict(row.content)
    await upsert_doc(db, "article", row.id, doc_fields(row.status, content, row.solved_count), now)
    return await _record(db, row), True


async def mark_not_helped(
    db: AsyncSession,
    article_id: int,
    *,
    ticket_id: int,
    customer: str,
    by: str,
    now: dt.datetime,
) -> bool:
    """Note that the article did not help with the ticket; False when noted already."""
    row = await _row(db, article_id)
    if row.status != "published":
        raise StatusRefused(
            f"article {format_article_id(article_id)} is {row.status}; only published articles "
            "are suggested"
        )
    exists = (
        await db.execute(
            select(func.count())
            .select_from(KbNotHelped)
            .where(KbNotHelped.article_id == article_id, KbNotHelped.ticket_id == ticket_id)
        )
    ).scalar_one()
    if exists:
        return False
    db.add(
        KbNotHelped(
            article_id=article_id,
            ticket_id=ticket_id,
            customer=customer,
            marked_by=by,
            marked_at=now,
        )
    )
    await db.flush()
    return True


async def not_helped_counts(db: AsyncSession, ids: Sequence[int]) -> dict[int, int]:
    """How often each article was marked "did not help" (articles never marked: absent)."""
    if not ids:
        return {}
    rows = await db.execute(
        select(KbNotHelped.article_id, func.count())
        .where(KbNotHelped.article_id.in_(list(ids)))
        .group_by(KbNotHelped.article_id)
    )
    return {a: int(n) for a, n in rows.all()}


async def not_helped_for(db: AsyncSession, ticket_id: int) -> set[int]:
    """The articles marked "did not help" for this ticket."""
    rows = await db.execute(
        select(KbNotHelped.article_id).where(KbNotHelped.ticket_id == ticket_id)
    )
    return set(rows.scalars())


async def translations(db: AsyncSession, ids: Sequence[int]) -> dict[int, int]:
    """The other-language version of each article that has one."""
    if not ids:
        return {}
    rows = await db.execute(
        select(KbTranslation.article_id, KbTranslation.translation_id).where(
            KbTranslation.article_id.in_(list(ids))
        )
    )
    return {a: t for a, t in rows.all()}


async def link_translation(db: AsyncSession, article_id: int, translation_id: int) -> None:
    """Link two articles as each other's other-language version (callers check that
    neither has one yet)."""
    db.add(KbTranslation(article_id=article_id, translation_id=translation_id))
    db.add(KbTranslation(article_id=translation_id, translation_id=article_id))
    await db.flush()


async def untranslated(db: AsyncSession, *, limit: int) -> list[ArticleRecord]:
    """Published articles without a version in the other language, most helpful first."""
    linked = select(KbTranslation.article_id)
    rows = (
        await db.execute(
            select(KbArticle)
            .where(KbArticle.status == "published", KbArticle.id.not_in(linked))
            .order_by(KbArticle.solved_count.desc(), KbArticle.id)
            .limit(limit)
        )
    ).scalars()
    return [await _record(db, row) for row in rows]


@dataclass(frozen=True)
class SessionSource:
    """The recorded work an article came from: its ticket, whose it is, and how long the
    sessions on it took (from start to end, summed)."""

    ticket_id: int
    customer: str
    seconds: float


async def session_sources(db: AsyncSession, ids: Sequence[int]) -> dict[int, SessionSource]:
    """Per article, its first source ticket with recorded sessions that ended."""
    if not ids:
        return {}
    rows = await db.execute(
        select(
            KbArticleSource.article_id,
            RemoteSession.ticket_id,
            RemoteSession.customer,
            RemoteSession.started_at,
            RemoteSession.created_at,
            RemoteSession.ended_at,
        )
        .join(
            RemoteSession,
            and_(KbArticleSource.kind == "session", RemoteSession.id == KbArticleSource.ref),
        )
        .where(KbArticleSource.article_id.in_(list(ids)), RemoteSession.ended_at.is_not(None))
        .order_by(KbArticleSource.article_id, KbArticleSource.id)
    )
    out: dict[int, SessionSource] = {}
    for article_id, ticket_id, customer, started, created, ended in rows.all():
        if ended is None:  # filtered above; the column is nullable
            continue
        seconds = max(0.0, (ended - (started or created)).total_seconds())
        known = out.get(article_id)
        if known is None:
            out[article_id] = SessionSource(ticket_id, customer, seconds)
        elif known.ticket_id == ticket_id:
            out[article_id] = SessionSource(ticket_id, customer, known.seconds + seconds)
    return out


async def solved_tickets(db: AsyncSession, article_id: int) -> list[tuple[int, str]]:
    """The tickets an article solved, with their customers, oldest first."""
    rows = await db.execute(
        select(KbSolved.ticket_id, KbSolved.customer)
        .where(KbSolved.article_id == article_id)
        .order_by(KbSolved.marked_at, KbSolved.id)
    )
    return [(t, c) for t, c in rows.all()]


async def records(db: AsyncSession, ids: Sequence[int]) -> dict[int, ArticleRecord]:
    if not ids:
        return {}
    rows = (await db.execute(select(KbArticle).where(KbArticle.id.in_(ids)))).scalars()
    return {row.id: await _record(db, row) for row in rows}


async def list_articles(
    db: AsyncSession, *, statuses: Sequence[str], limit: int
) -> list[ArticleRecord]:
    rows = (
        await db.execute(
            select(KbArticle)
            .where(KbArticle.status.in_(list(statuses)))
            .order_by(KbArticle.updated_at.desc(), KbArticle.id.desc())
            .limit(limit)
        )
    ).scalars()
    return [await _record(db, row) for row in rows]
