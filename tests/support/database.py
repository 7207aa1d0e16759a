"""Test databases: a file per test on SQLite, a database per test on PostgreSQL.

Initialising a data dir (keys, migrations, first admin) costs about a second, so it is done
once per test run and per backend into a template; each test then gets a copy: the data dir
is copied and, on PostgreSQL, its database is created from the template database."""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import asyncpg

T = TypeVar("T")


@dataclass(frozen=True)
class Backend:
    kind: str
    url: str
    database: str = ""  # PostgreSQL: the test's own database
    dsn: str = ""  # PostgreSQL: where to connect for CREATE/DROP DATABASE

    @property
    def schema(self) -> str:
        return ""

    def settings(self) -> dict[str, object]:
        if self.kind == "sqlite":
            return {}
        return {"database_url": self.url}


def run_sync(coro: Coroutine[object, object, T]) -> T:
    """Run a coroutine to completion from sync code, even inside a running event loop."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def plain_dsn(dsn: str) -> str:
    return dsn.replace("postgresql+asyncpg://", "postgresql://", 1)


def _with_database(dsn: str, database: str) -> str:
    base = plain_dsn(dsn).rsplit("/", 1)[0]
    return f"{base}/{database}"


def make_backend(kind: str, tmp_path: Path, dsn: str) -> Backend:
    if kind == "sqlite":
        return Backend("sqlite", f"sqlite+aiosqlite:///{tmp_path / 'data' / 'secondline.db'}")
    database = f"sl_t_{secrets.token_hex(6)}"
    run_sync(create_database(dsn, database))
    url = "postgresql+asyncpg://" + _with_database(dsn, database).removeprefix("postgresql://")
    return Backend("postgresql", url, database, dsn)


async def create_database(dsn: str, database: str, template: str | None = None) -> None:
    conn = await asyncpg.connect(plain_dsn(dsn))
    try:
        suffix = f' TEMPLATE "{template}"' if template else ""
        await conn.execute(f'CREATE DATABASE "{database}"{suffix}')
    finally:
        await conn.close()


async def drop_database(dsn: str, database: str) -> None:
    conn = await asyncpg.connect(plain_dsn(dsn))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        await conn.close()


async def recreate_from_template(backend: Backend, template: str) -> None:
    await drop_database(backend.dsn, backend.database)
    await create_database(backend.dsn, backend.database, template)


def drop_schema(dsn: str, schema: str) -> None:
    """Kept for tests written against the schema-per-test layout: nothing to drop now."""
