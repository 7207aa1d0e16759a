"""Test databases: a file per test on SQLite, a schema per test on PostgreSQL."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

import asyncpg


@dataclass(frozen=True)
class Backend:
    kind: str
    url: str
    schema: str  # "" on SQLite

    def settings(self) -> dict[str, object]:
        if self.kind == "sqlite":
            return {}
        return {"database_url": self.url, "database_schema": self.schema}


def _plain_dsn(dsn: str) -> str:
    return dsn.replace("postgresql+asyncpg://", "postgresql://", 1)


def make_backend(kind: str, tmp_path: Path, dsn: str) -> Backend:
    if kind == "sqlite":
        return Backend("sqlite", f"sqlite+aiosqlite:///{tmp_path / 'data' / 'secondline.db'}", "")
    import asyncio

    schema = f"t_{secrets.token_hex(6)}"
    asyncio.run(_create_schema(dsn, schema))
    url = "postgresql+asyncpg://" + _plain_dsn(dsn).removeprefix("postgresql://")
    return Backend("postgresql", url, schema)


async def _create_schema(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(_plain_dsn(dsn))
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await conn.close()


async def drop_schema(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(_plain_dsn(dsn))
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()
