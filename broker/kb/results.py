"""Search hits turned into results people read: title, status, a highlighted snippet of the
field that matched best, and for articles their tags, OS names and how often they helped."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from broker.db.models_kb import KbArticle
from broker.kb import store
from broker.kb.analysis import QueryTerms
from broker.kb.article import ArticleContent, format_article_id
from broker.kb.highlight import Segment, count_matches, highlight
from broker.kb.languages import guess_language
from broker.kb.machine_fit import article_families, article_software
from broker.kb.search_docs import Hit, doc_kinds
from broker.rules.names import format_ticket_id
from broker.secret_scrubber import scrub_secrets


@dataclass(frozen=True)
class Provenance:
    """ "This solved T-1042 in 4 minutes": the source ticket (None when the viewer may not
    see it) and the minutes its recorded sessions took, rounded up."""

    ticket: str | None
    minutes: int


@dataclass(frozen=True)
class Result:
    kind: str  # article | ticket
    id: int
    ref: str
    status: str
    title: list[Segment]
    snippet_field: str
    snippet: list[Segment]
    rank: float
    tags: tuple[str, ...] = ()
    os: tuple[str, ...] = ()
    solved_count: int = 0
    families: frozenset[str] = frozenset()  # OS families the article is for (machine_fit)
    software: frozenset[str] = frozenset()  # packages and services it names (machine_fit)
    provenance: Provenance | None = None
    language: str = ""  # of an article: de | en


def best_snippet(fields: Sequence[tuple[str, str]], terms: QueryTerms) -> tuple[str, list[Segment]]:
    """The field with the most matching words (the first one on a tie), highlighted."""
    best_name, best_text, best_count = "", "", -1
    for name, text in fields:
        if not text:
            continue
        count = count_matches(text, terms)
        if count > best_count:
            best_name, best_text, best_count = name, text, count
    return best_name, highlight(best_text, terms) if best_text else []


async def article_results(db: AsyncSession, terms: QueryTerms, hits: Sequence[Hit]) -> list[Result]:
    ids = [h.ref_id for h in hits]
    if not ids:
        return []
    rows = {
        row.id: row
        for row in (await db.execute(select(KbArticle).where(KbArticle.id.in_(ids)))).scalars()
    }
    out: list[Result] = []
    for hit in hits:
        row = rows.get(hit.ref_id)
        if row is None:
            continue
        content = ArticleContent.from_dict(row.content)
        commands = [c.command for c in content.commands]
        # Snippets are scrubbed like the index: a draft, or an article published before
        # publishing checked for secrets, may still hold one.
        name, snippet = best_snippet(
            [
                ("problem", scrub_secrets(content.problem)),
                ("solution", scrub_secrets(content.solution)),
                ("cause", scrub_secrets(content.cause)),
                ("commands", scrub_secrets("\n".join(commands))),
            ],
            terms,
        )
        out.append(
            Result(
                kind="article",
                id=row.id,
                ref=format_article_id(row.id),
                status=row.status,
                title=highlight(scrub_secrets(content.title), terms, max_words=64),
                snippet_field=name,
                snippet=snippet,
                rank=hit.rank,
                tags=content.tags,
                os=content.os,
                solved_count=row.solved_count,
                families=article_families(content.os, commands),
                software=article_software(commands, content.tags),
                language=content.language or guess_language(content.title, content.problem),
            )
        )
    return out


async def ticket_results(db: AsyncSession, terms: QueryTerms, hits: Sequence[Hit]) -> list[Result]:
    docs = await doc_kinds(db, "ticket", [h.ref_id for h in hits])
    out: list[Result] = []
    for hit in hits:
        doc = docs.get(hit.ref_id)
        if doc is None:
            continue
        name, snippet = best_snippet(
            [("description", doc.problem), ("solution", doc.solution)], terms
        )
        out.append(
            Result(
                kind="ticket",
                id=doc.ref_id,
                ref=format_ticket_id(doc.ref_id),
                status=doc.status,
                title=highlight(doc.title, terms, max_words=64),
                snippet_field=name,
                snippet=snippet,
                rank=hit.rank,
            )
        )
    return out


async def in_language(
    db: AsyncSession, terms: QueryTerms, results: list[Result], language: str | None
) -> list[Result]:
    """Each article shown in ``language`` where its published version in it exists (its
    passage highlighted there), each pair once."""
    if language is None:
        return results
    others = await store.translations(db, [r.id for r in results])
    wanted = [others[r.id] for r in results if r.id in others and r.language != language]
    swapped = {
        r.id: r
        for r in await article_results(db, terms, [Hit("article", i, 0.0) for i in wanted])
        if r.status == "published" and r.language == language
    }
    out: list[Result] = []
    seen: set[int] = set()
    for r in results:
        shown = swapped.get(others.get(r.id, -1), r)
        if shown.id not in seen:
            seen.add(shown.id)
            out.append(replace(shown, rank=r.rank, provenance=r.provenance))
    return out
