"""The database URL forms `init --database-url` and `database_url` accept (pure)."""

from __future__ import annotations

import pytest

from broker.db.urls import normalize_database_url
from broker.errors import ConfigError


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("postgresql://u@db/sl", "postgresql+asyncpg://u@db/sl"),
        ("postgres://u:pw@db:5433/sl", "postgresql+asyncpg://u:pw@db:5433/sl"),
        ("postgresql+asyncpg://u@db/sl", "postgresql+asyncpg://u@db/sl"),
        ("  PostgreSQL://u@db/sl ", "postgresql+asyncpg://u@db/sl"),
        ("sqlite:////var/lib/sl/x.db", "sqlite+aiosqlite:////var/lib/sl/x.db"),
        ("sqlite+aiosqlite:////tmp/x.db", "sqlite+aiosqlite:////tmp/x.db"),
    ],
)
def test_the_forms_people_write_mean_our_drivers(given: str, used: str) -> None:
    """postgresql://, postgres:// and postgresql+asyncpg:// all mean asyncpg; sqlite means
    aiosqlite."""
    assert normalize_database_url(given) == used


@pytest.mark.parametrize(
    "given",
    ["mysql://root@db/sl", "postgresql+psycopg://u@db/sl", "postgresql://", "db.example", ""],
)
def test_other_urls_are_refused_with_the_forms_that_work(given: str) -> None:
    """Another driver, a URL without a host, or no URL at all: refused, naming the forms."""
    with pytest.raises(ConfigError, match="write postgresql://user@host/db"):
        normalize_database_url(given)


def test_the_refusal_does_not_show_the_password() -> None:
    """A password in a refused URL is not repeated in the message (it reaches terminals)."""
    with pytest.raises(ConfigError) as refused:
        normalize_database_url("mysql://root:hunter2@db/sl")
    assert "hunter2" not in refused.value.message
    assert "mysql://root:***@db/sl" in refused.value.message
