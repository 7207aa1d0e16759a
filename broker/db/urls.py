"""The database URL forms people write, turned into the one SQLAlchemy driver we ship.

``postgresql://``, ``postgres://`` (Heroku-style, libpq's own spelling) and
``postgresql+asyncpg://`` all mean PostgreSQL through asyncpg: SQLAlchemy would otherwise
pick psycopg for the first two, which is not installed. ``sqlite:///…`` and
``sqlite+aiosqlite:///…`` mean SQLite through aiosqlite. Anything else is refused with a
sentence that names the forms that work (pure)."""

from __future__ import annotations

from typing import Final

from broker.errors import ConfigError

_POSTGRES_PREFIXES: Final = ("postgresql+asyncpg://", "postgresql://", "postgres://")
_SQLITE_PREFIXES: Final = ("sqlite+aiosqlite://", "sqlite://")
ACCEPTED: Final = "postgresql://user@host/db (also postgres:// or postgresql+asyncpg://)"


def normalize_database_url(url: str) -> str:
    """The SQLAlchemy URL for ``url``, or ConfigError saying which forms work."""
    text = url.strip()
    lowered = text.lower()
    for prefix in _POSTGRES_PREFIXES:
        if lowered.startswith(prefix):
            rest = text[len(prefix) :]
            if not rest.strip("/"):
                break
            return "postgresql+asyncpg://" + rest
    for prefix in _SQLITE_PREFIXES:
        if lowered.startswith(prefix):
            return "sqlite+aiosqlite://" + text[len(prefix) :]
    raise ConfigError(
        f"database_url {_shown(text)!r} is not a database URL this broker can use; "
        f"write {ACCEPTED}, or leave it out for SQLite in the data dir"
    )


def _shown(url: str) -> str:
    """``url`` without its password, for messages (they reach terminals and logs)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url[:200]
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"[:200] if ":" in creds else url[:200]
