"""kb_search_docs.concepts: glossary concept tokens in the search index

Cross-language search used to add every glossary word of a query's concepts to the query (up
to 32 words and their German forms), and both engines then ranked every document matching
any of them. Now each document carries the concept tokens of its words (``concepts``, see
``broker.kb.analysis.concepts_field``) and a query searches its concepts' tokens instead.
This adds the column, fills it for every document, and puts it into the index. The column
``glossary`` says under which glossary (``analysis.glossary_version``) a document's concepts
were indexed; the broker indexes those of another glossary again when it starts
(``search_docs.refresh_concepts``), so an edited glossary needs no migration.


- SQLite: ``kb_fts`` and its three triggers are created again with the new column, then
  rebuilt from ``kb_search_docs``.
- PostgreSQL: the generated ``tsv`` column is created again with the concepts weighted B
  (as problem and tags), and its GIN index with it; a small ``tsv_head`` (title and
  concepts) ranks the candidates first, so that only the best are ranked by ``tsv``.
- SQLite: an index holding every column the search filters and orders by, so that a match
  does not read the document's wide row.

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from broker.kb.analysis import concepts_field, glossary_version

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_COLUMNS = "title, problem, solution, commands, tags, stems"
_NEW_COLUMNS = f"{_OLD_COLUMNS}, concepts"


def _sqlite_fts(columns: str) -> list[str]:
    new = ", ".join(f"new.{c}" for c in columns.split(", "))
    old = ", ".join(f"old.{c}" for c in columns.split(", "))
    return [
        f"""CREATE VIRTUAL TABLE kb_fts USING fts5({columns},
            content='kb_search_docs', content_rowid='id',
            tokenize='porter unicode61 remove_diacritics 2')""",
        f"""CREATE TRIGGER kb_search_docs_ai AFTER INSERT ON kb_search_docs BEGIN
            INSERT INTO kb_fts(rowid, {columns}) VALUES (new.id, {new});
        END""",
        f"""CREATE TRIGGER kb_search_docs_ad AFTER DELETE ON kb_search_docs BEGIN
            INSERT INTO kb_fts(kb_fts, rowid, {columns}) VALUES ('delete', old.id, {old});
        END""",
        f"""CREATE TRIGGER kb_search_docs_au AFTER UPDATE OF {columns} ON kb_search_docs BEGIN
            INSERT INTO kb_fts(kb_fts, rowid, {columns}) VALUES ('delete', old.id, {old});
            INSERT INTO kb_fts(rowid, {columns}) VALUES (new.id, {new});
        END""",
        "INSERT INTO kb_fts(kb_fts) VALUES ('rebuild')",
    ]


_SQLITE_DROP = [
    "DROP TRIGGER IF EXISTS kb_search_docs_au",
    "DROP TRIGGER IF EXISTS kb_search_docs_ad",
    "DROP TRIGGER IF EXISTS kb_search_docs_ai",
    "DROP TABLE IF EXISTS kb_fts",
]


def _tsv(config: str, column: str, weight: str) -> str:
    return f"setweight(to_tsvector('{config}'::regconfig, coalesce({column}, '')), '{weight}')"


_PG_PARTS = [
    _tsv("english", "title", "A"),
    _tsv("german", "title", "A"),
    _tsv("english", "problem", "B"),
    _tsv("german", "problem", "B"),
    _tsv("english", "tags", "B"),
    _tsv("english", "solution", "C"),
    _tsv("german", "solution", "C"),
    _tsv("english", "commands", "C"),
    _tsv("simple", "stems", "D"),
]


# The first ranking stage (``broker.kb.search_docs.search``): title and concepts only.
_PG_HEAD = [
    _tsv("english", "title", "A"),
    _tsv("german", "title", "A"),
    _tsv("simple", "concepts", "B"),
]
_COVERING = "ix_kb_search_docs_filters"
_COVERED = "id, kind, status, ref_id, solved_count, customer, os_terms, tag_terms"


def _pg_tsv(parts: list[str]) -> list[str]:
    return [
        "DROP INDEX IF EXISTS ix_kb_search_docs_tsv",
        "ALTER TABLE kb_search_docs DROP COLUMN IF EXISTS tsv",
        "ALTER TABLE kb_search_docs ADD COLUMN tsv tsvector "
        f"GENERATED ALWAYS AS ({' || '.join(parts)}) STORED",
        "CREATE INDEX ix_kb_search_docs_tsv ON kb_search_docs USING gin (tsv)",
    ]


def _fill_concepts() -> None:
    """Every document's concept tokens, from the text it holds (already scrubbed)."""
    conn = op.get_bind()
    rows = conn.execute(
        sa.text("SELECT id, title, problem, solution, commands, tags FROM kb_search_docs")
    ).all()
    update = sa.text(
        "UPDATE kb_search_docs SET concepts = :concepts, glossary = :glossary WHERE id = :id"
    )
    for doc_id, title, problem, solution, commands, tags in rows:
        concepts = concepts_field(title, (problem, solution, commands, tags))
        conn.execute(update, {"concepts": concepts, "glossary": glossary_version(), "id": doc_id})


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        for statement in _SQLITE_DROP:
            op.execute(statement)
    op.add_column(
        "kb_search_docs", sa.Column("concepts", sa.Text(), nullable=False, server_default="")
    )
    op.add_column(
        "kb_search_docs",
        sa.Column("glossary", sa.String(16), nullable=False, server_default=""),
    )
    _fill_concepts()
    if sqlite:
        for statement in _sqlite_fts(_NEW_COLUMNS):
            op.execute(statement)
    else:
        for statement in _pg_tsv([*_PG_PARTS, _tsv("simple", "concepts", "B")]):
            op.execute(statement)
        op.execute(
            "ALTER TABLE kb_search_docs ADD COLUMN tsv_head tsvector "
            f"GENERATED ALWAYS AS ({' || '.join(_PG_HEAD)}) STORED"
        )
    # SQLite: the filters and the tie-break read these columns of every matching document;
    # from the index, not from the wide row whose text spills onto overflow pages.
    if sqlite:
        op.execute(f"CREATE INDEX {_COVERING} ON kb_search_docs ({_COVERED})")


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        op.execute(f"DROP INDEX IF EXISTS {_COVERING}")
        for statement in _SQLITE_DROP:
            op.execute(statement)
    else:
        op.execute("ALTER TABLE kb_search_docs DROP COLUMN IF EXISTS tsv_head")
        for statement in _pg_tsv(_PG_PARTS):
            op.execute(statement)
    with op.batch_alter_table("kb_search_docs") as batch:
        batch.drop_column("glossary")
        batch.drop_column("concepts")
    if sqlite:
        for statement in _sqlite_fts(_OLD_COLUMNS):
            op.execute(statement)
