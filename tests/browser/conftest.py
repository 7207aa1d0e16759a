"""Fixtures of the browser tests: headless Debian Chromium, and a data dir on SQLite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser

from tests.support.broker import init_dir
from tests.support.browser import chromium as launch_chromium
from tests.support.database import make_backend


@pytest.fixture
def sqlite_data_dir(tmp_path: Path) -> Path:
    """An initialised data dir on SQLite: the browser tests try the console, not the store
    (the component tests cover PostgreSQL)."""
    return init_dir(tmp_path / "data", make_backend("sqlite", tmp_path, ""))


@pytest.fixture
async def chromium() -> AsyncIterator[Browser]:
    async with launch_chromium() as browser:
        yield browser
