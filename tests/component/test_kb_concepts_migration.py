"""Migration 0009 puts the glossary's concepts into the index of documents written before it:
a German article stored under 0008 is found by an English ticket after the upgrade; a
document indexed under another glossary is indexed again by the start-up refresh; and a
downgrade leaves the 0008 index working."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import inspect, text

from broker.db.engine import alembic_config, create_engine, session_factory
from broker.kb.analysis import query_terms, stems_field
from broker.kb.search_docs import SearchFilter, refresh_concepts, search
from tests.support.database import Backend, run_sync

pytestmark = pytest.mark.postgres

TITLE = "Druckaufträge hängen in der Warteschlange"
PROBLEM = "Der Drucker druckt nicht mehr, alle Aufträge bleiben hängen."


async def _store_as_0008(url: str) -> None:
    """A search document as the broker wrote it before 0009 (no concepts column)."""
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO kb_search_docs (kind, ref_id, status, customer, title, problem, "
                    "solution, commands, tags, stems, os_terms, tag_terms, solved_count, "
                    "updated_at) VALUES ('article', 7, 'published', '', :title, :problem, '', "
                    "'lpstat -t', 'drucken', :stems, '', ' drucken ', 0, :now)"
                ),
                {
                    "title": TITLE,
                    "problem": PROBLEM,
                    "stems": stems_field((TITLE, PROBLEM, "lpstat -t", "drucken")),
                    "now": dt.datetime.now(dt.UTC),
                },
            )
    finally:
        await engine.dispose()


async def _found(url: str, query: str, *, expand: bool = True) -> list[int]:
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as db:
            hits = await search(db, query_terms(query, expand=expand), SearchFilter())
            return [h.ref_id for h in hits]
    finally:
        await engine.dispose()


def test_upgrade_indexes_the_concepts_of_existing_documents(
    backend: Backend, tmp_path: Path
) -> None:
    (tmp_path / "data").mkdir(exist_ok=True)  # where the SQLite backend keeps its file
    config = alembic_config(backend.url, None)
    command.upgrade(config, "0008")
    run_sync(_store_as_0008(backend.url))
    command.upgrade(config, "head")
    assert run_sync(_found(backend.url, "print jobs stuck in queue")) == [7]
    assert run_sync(_found(backend.url, "Drucker")) == [7]

    # Under another glossary (staff edited it): the start-up refresh indexes it again.
    run_sync(_as_if_indexed_under_another_glossary(backend.url))
    assert run_sync(_found(backend.url, "print jobs stuck in queue")) == []
    assert run_sync(_refresh(backend.url)) == 1
    assert run_sync(_found(backend.url, "print jobs stuck in queue")) == [7]
    assert run_sync(_refresh(backend.url)) == 0

    command.downgrade(config, "0008")
    assert run_sync(_found_as_0008(backend.url, "drucker")) == [7]


async def _found_as_0008(url: str, word: str) -> list[int]:
    """The 0008 index answers a word again (the broker before 0009 queried it like this)."""
    engine = create_engine(url)
    sql = (
        "SELECT d.ref_id FROM kb_fts JOIN kb_search_docs d ON d.id = kb_fts.rowid "
        "WHERE kb_fts MATCH :q"
        if engine.dialect.name == "sqlite"
        else "SELECT ref_id FROM kb_search_docs WHERE tsv @@ to_tsquery('simple', :q)"
    )
    try:
        async with engine.connect() as conn:
            columns = await conn.run_sync(
                lambda sync: {c["name"] for c in inspect(sync).get_columns("kb_search_docs")}
            )
            assert "concepts" not in columns
            assert "tsv_head" not in columns
            return [int(r) for r in (await conn.execute(text(sql), {"q": word})).scalars()]
    finally:
        await engine.dispose()


async def _as_if_indexed_under_another_glossary(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE kb_search_docs SET concepts = '', glossary = 'old'"))
    finally:
        await engine.dispose()


async def _refresh(url: str) -> int:
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as db, db.begin():
            return await refresh_concepts(db, batch=1)
    finally:
        await engine.dispose()
