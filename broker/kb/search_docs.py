"""The search documents and the ranked full-text query over them, on either backend.

SQLite ranks with FTS5's bm25 (title weighs most), PostgreSQL with ``ts_rank`` over the
weighted ``tsv`` column; both match any query word (an OR), so a symptom described in other
words still finds the article that shares most of them, best first. Ties go to the article
that helped most often. Filters (kind, status, OS words, tag, customers) are plain columns.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from sqlalchemy import bindparam, delete, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from broker.db.models_kb import KbSearchDoc
from broker.kb.analysis import (
    QueryTerms,
    concepts_field,
    fold,
    fts5_match,
    glossary_version,
    pg_query_text,
    stems_field,
    words,
)
from broker.secret_scrubber import scrub_secrets

SEARCH_LIMIT_MAX: Final = 50
# PostgreSQL ranks this many candidates by the whole document (see ``search``); at 10,000
# articles the top 3 of every benchmark query came out the same as ranking them all.
FIRST_STAGE: Final = 200

# SQLite column weights for bm25: title, problem, solution, commands, tags, stems, concepts.
# Concepts weigh most: a concept matched stands for its words in every field and in both
# languages, chosen by measurement on bench/kb_eval (docs/knowledge-base.md).
_BM25: Final = "bm25(kb_fts, 8.0, 4.0, 2.0, 2.0, 4.0, 0.5, 12.0)"
_PG_QUERY: Final = """(SELECT string_agg('''' || replace(replace(l, '\\', '\\\\'), '''', '''''')
        || '''', ' | ')
    FROM unnest(tsvector_to_array(
        to_tsvector('english'::regconfig, :words) || to_tsvector('german'::regconfig, :words)
        || to_tsvector('simple'::regconfig, :german)
        || to_tsvector('simple'::regconfig, :concepts))) AS l)::tsquery"""


@dataclass(frozen=True)
class DocFields:
    """The searchable text of one document, as the index reads it."""

    status: str
    title: str
    problem: str = ""
    solution: str = ""
    commands: str = ""
    tags: str = ""
    customer: str = ""
    os_terms: str = ""
    tag_terms: str = ""
    solved_count: int = 0


@dataclass(frozen=True)
class Hit:
    kind: str
    ref_id: int
    rank: float  # larger is better on both backends


@dataclass(frozen=True)
class SearchFilter:
    kind: str = "article"
    statuses: tuple[str, ...] = ("published",)
    os: str | None = None
    tag: str | None = None
    customers: frozenset[str] | None = None  # None: every customer
    exclude_ref: int | None = None
    limit: int = 20


def doc_values(fields: DocFields, now: dt.datetime) -> dict[str, object]:
    """The column values of a search document (without its kind and ref id).

    The text is scrubbed of secrets: the index feeds result snippets, and a draft or a solved
    ticket may still hold a password that publishing would refuse."""
    title, problem, solution, commands = (
        scrub_secrets(text)
        for text in (fields.title, fields.problem, fields.solution, fields.commands)
    )
    return {
        "status": fields.status,
        "customer": fields.customer,
        "title": title,
        "problem": problem,
        "solution": solution,
        "commands": commands,
        "tags": fields.tags,
        "stems": stems_field((title, problem, solution, commands, fields.tags)),
        "concepts": concepts_field(title, (problem, solution, commands, fields.tags)),
        "glossary": glossary_version(),
        "os_terms": fields.os_terms,
        "tag_terms": fields.tag_terms,
        "solved_count": fields.solved_count,
        "updated_at": now,
    }


async def upsert_doc(
    db: AsyncSession, kind: str, ref_id: int, fields: DocFields, now: dt.datetime
) -> None:
    """Create or replace the search document of an article or ticket."""
    values = doc_values(fields, now)
    doc = (
        await db.execute(
            select(KbSearchDoc).where(KbSearchDoc.kind == kind, KbSearchDoc.ref_id == ref_id)
        )
    ).scalar_one_or_none()
    if doc is None:
        db.add(KbSearchDoc(kind=kind, ref_id=ref_id, **values))
    else:
        for key, value in values.items():
            if getattr(doc, key) != value:
                setattr(doc, key, value)
    await db.flush()


async def refresh_concepts(db: AsyncSession, *, batch: int = 500) -> int:
    """Index the concepts of the documents indexed under another glossary (after staff
    edited ``glossary.txt``) again; returns how many. The text is the stored, scrubbed one."""
    version = glossary_version()
    done = 0
    while True:
        docs = (
            await db.execute(
                select(KbSearchDoc).where(KbSearchDoc.glossary != version).limit(batch)
            )
        ).scalars()
        changed = 0
        for doc in docs:
            body = (doc.problem, doc.solution, doc.commands, doc.tags)
            doc.concepts = concepts_field(doc.title, body)
            doc.glossary = version
            changed += 1
        await db.flush()
        done += changed
        if changed < batch:
            return done


async def set_doc_status(db: AsyncSession, kind: str, ref_id: int, status: str) -> None:
    doc = (
        await db.execute(
            select(KbSearchDoc).where(KbSearchDoc.kind == kind, KbSearchDoc.ref_id == ref_id)
        )
    ).scalar_one_or_none()
    if doc is not None:
        doc.status = status


async def delete_doc(db: AsyncSession, kind: str, ref_id: int) -> None:
    await db.execute(
        delete(KbSearchDoc).where(KbSearchDoc.kind == kind, KbSearchDoc.ref_id == ref_id)
    )


def _like_word(word: str) -> str:
    # Words hold only letters and digits; escaping keeps LIKE literal should that change.
    escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"% {escaped} %"


def _filters(flt: SearchFilter) -> tuple[list[str], dict[str, object], list[str]]:
    """SQL conditions on ``d`` shared by both backends, their parameters, expanding names."""
    where = ["d.kind = :kind", "d.status IN :statuses"]
    params: dict[str, object] = {"kind": flt.kind, "statuses": list(flt.statuses)}
    expanding = ["statuses"]
    for i, word in enumerate(dict.fromkeys(fold(w) for w in words(flt.os or ""))):
        where.append(f"d.os_terms LIKE :os{i} ESCAPE '\\'")
        params[f"os{i}"] = _like_word(word)
    if flt.tag:
        where.append("d.tag_terms LIKE :tag ESCAPE '\\'")
        params["tag"] = _like_word(flt.tag)
    if flt.customers is not None:
        where.append("d.customer IN :customers")
        params["customers"] = sorted(flt.customers) or [""]
        expanding.append("customers")
    if flt.exclude_ref is not None:
        where.append("d.ref_id != :exclude")
        params["exclude"] = flt.exclude_ref
    return where, params, expanding


async def search(db: AsyncSession, terms: QueryTerms, flt: SearchFilter) -> list[Hit]:
    """The best documents for ``terms`` under ``flt``, best first; none for an empty query."""
    if terms.empty:
        return []
    where, params, expanding = _filters(flt)
    params["limit"] = max(1, min(flt.limit, SEARCH_LIMIT_MAX))
    if db.get_bind().dialect.name == "sqlite":
        params["q"] = fts5_match(terms)
        sql = (
            # Conditions are fixed strings from _filters; every value is a bound parameter.
            f"SELECT d.kind, d.ref_id, {_BM25} AS rank FROM kb_fts "  # noqa: S608
            "JOIN kb_search_docs d ON d.id = kb_fts.rowid "
            f"WHERE kb_fts MATCH :q AND {' AND '.join(where)} "
            "ORDER BY rank, d.solved_count DESC, d.ref_id LIMIT :limit"
        )
    else:
        params["words"], params["german"], params["concepts"] = pg_query_text(terms)
        params["first"] = FIRST_STAGE
        # Two stages: reading the whole ``tsv`` of every matching row is what costs (it is
        # large), so the candidates are ranked first by the small ``tsv_head`` (title and
        # concepts), and only the best FIRST_STAGE of them by the whole document.
        sql = (
            f"WITH q AS (SELECT {_PG_QUERY} AS q), "  # noqa: S608 - as above
            "c AS (SELECT d.id FROM kb_search_docs d, q "
            f"WHERE d.tsv @@ q.q AND {' AND '.join(where)} "
            "ORDER BY ts_rank(d.tsv_head, q.q) DESC, d.solved_count DESC, d.ref_id "
            "LIMIT :first) "
            "SELECT d.kind, d.ref_id, ts_rank(d.tsv, q.q) AS rank "
            "FROM c JOIN kb_search_docs d ON d.id = c.id, q "
            "ORDER BY rank DESC, d.solved_count DESC, d.ref_id LIMIT :limit"
        )
    statement = text(sql).bindparams(*(bindparam(n, expanding=True) for n in expanding))
    rows = (await db.execute(statement, params)).all()
    sqlite = db.get_bind().dialect.name == "sqlite"
    return [
        Hit(kind, int(ref), -float(rank) if sqlite else float(rank)) for kind, ref, rank in rows
    ]


async def doc_kinds(db: AsyncSession, kind: str, ids: Sequence[int]) -> dict[int, KbSearchDoc]:
    """The search documents of ``ids``, by ref id (for result titles and snippets)."""
    if not ids:
        return {}
    rows = (
        await db.execute(
            select(KbSearchDoc).where(KbSearchDoc.kind == kind, KbSearchDoc.ref_id.in_(ids))
        )
    ).scalars()
    return {doc.ref_id: doc for doc in rows}
