"""Fixtures of the browser tests: headless Debian Chromium, and a data dir on SQLite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import pytest
from playwright.async_api import Browser, async_playwright

from tests.support.broker import init_dir
from tests.support.database import make_backend

CHROMIUM: Final = "/usr/bin/chromium"
ARGS: Final = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def sqlite_data_dir(tmp_path: Path) -> Path:
    """An initialised data dir on SQLite: the browser tests try the console, not the store
    (the component tests cover PostgreSQL)."""
    return init_dir(tmp_path / "data", make_backend("sqlite", tmp_path, ""))


@pytest.fixture
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            await browser.close()
