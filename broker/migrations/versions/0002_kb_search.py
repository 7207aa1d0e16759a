"""knowledge-base full-text search

What autogenerate cannot express, per dialect:

- SQLite: an FTS5 table ``kb_fts`` over ``kb_search_docs`` (external content, Porter
  stemming over unicode61 with diacritics removed) kept in step by three triggers.
- PostgreSQL: a stored ``tsv`` column generated from English and German stemming of the text
  columns plus the ``simple`` configuration over the precomputed German forms, weighted
  title A, problem and tags B, solution and commands C, German forms D; and a GIN index on it.

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence
from pathlib import Path

from alembic import op

# tools/regen_initial_migration.py deletes 0001 before it regenerates it, and Alembic cannot
# load this revision without its parent: say what to do instead of a bare KeyError.
if not Path(__file__).with_name("0001_initial.py").exists():
    raise RuntimeError(
        "migration 0001 is missing, so 0002_kb_search cannot load. If you are running "
        "tools/regen_initial_migration.py: move broker/migrations/versions/0002_kb_search.py "
        "out of the versions folder, run the tool again, then move the file back"
    )

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = "title, problem, solution, commands, tags, stems"
_NEW = ", ".join(f"new.{c}" for c in _COLUMNS.split(", "))
_OLD = ", ".join(f"old.{c}" for c in _COLUMNS.split(", "))

_SQLITE_UP = [
    f"""CREATE VIRTUAL TABLE kb_fts USING fts5({_COLUMNS},
        content='kb_search_docs', content_rowid='id',
        tokenize='porter unicode61 remove_diacritics 2')""",
    f"""CREATE TRIGGER kb_search_docs_ai AFTER INSERT ON kb_search_docs BEGIN
        INSERT INTO kb_fts(rowid, {_COLUMNS}) VALUES (new.id, {_NEW});
    END""",
    f"""CREATE TRIGGER kb_search_docs_ad AFTER DELETE ON kb_search_docs BEGIN
        INSERT INTO kb_fts(kb_fts, rowid, {_COLUMNS}) VALUES ('delete', old.id, {_OLD});
    END""",
    f"""CREATE TRIGGER kb_search_docs_au AFTER UPDATE OF {_COLUMNS} ON kb_search_docs BEGIN
        INSERT INTO kb_fts(kb_fts, rowid, {_COLUMNS}) VALUES ('delete', old.id, {_OLD});
        INSERT INTO kb_fts(rowid, {_COLUMNS}) VALUES (new.id, {_NEW});
    END""",
    "INSERT INTO kb_fts(kb_fts) VALUES ('rebuild')",
]
_SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS kb_search_docs_au",
    "DROP TRIGGER IF EXISTS kb_search_docs_ad",
    "DROP TRIGGER IF EXISTS kb_search_docs_ai",
    "DROP TABLE IF EXISTS kb_fts",
]


def _tsv(config: str, column: str, weight: str) -> str:
    return f"setweight(to_tsvector('{config}'::regconfig, coalesce({column}, '')), '{weight}')"


_PG_TSV = " || ".join(
    [
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
)
_PG_UP = [
    f"ALTER TABLE kb_search_docs ADD COLUMN tsv tsvector GENERATED ALWAYS AS ({_PG_TSV}) STORED",
    "CREATE INDEX ix_kb_search_docs_tsv ON kb_search_docs USING gin (tsv)",
]
_PG_DOWN = [
    "DROP INDEX IF EXISTS ix_kb_search_docs_tsv",
    "ALTER TABLE kb_search_docs DROP COLUMN IF EXISTS tsv",
]


def upgrade() -> None:
    statements = _SQLITE_UP if op.get_bind().dialect.name == "sqlite" else _PG_UP
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    statements = _SQLITE_DOWN if op.get_bind().dialect.name == "sqlite" else _PG_DOWN
    for statement in statements:
        op.execute(statement)
