"""Engine and session factory for either backend, and the migration runner."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import event
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def _sqlite_pragmas(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_conn.cursor()
    # WAL lets readers run beside the one writer; busy_timeout waits for the lock, not fail.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def create_engine(url: str, *, schema: str | None = None) -> AsyncEngine:
    """An async engine; ``schema`` selects a PostgreSQL schema (tests use one each)."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    connect_args: dict[str, object] = {}
    if schema:
        connect_args["server_settings"] = {"search_path": schema}
    return create_async_engine(url, pool_pre_ping=True, connect_args=connect_args)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str, schema: str | None = None) -> AlembicConfig:
    # Alembic (and Mako, and Pygments under it) is imported only where migrations run:
    # `secondline serve` and every CLI command import this module and never migrate.
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if schema:
        cfg.set_main_option("secondline.schema", schema)
    return cfg


def migrate(url: str, schema: str | None = None) -> None:
    """Bring the database to the newest schema (fresh install or upgrade)."""
    from alembic import command

    command.upgrade(alembic_config(url, schema), "head")
