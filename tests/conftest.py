"""Shared fixtures: initialised data dirs on SQLite and PostgreSQL, the broker app on a real
loopback socket, and a real `secondline serve` process.

PostgreSQL: tests that take the ``backend`` fixture run once per backend. PostgreSQL needs a
DSN in SECONDLINE_TEST_PG (e.g. postgresql://postgres@127.0.0.1:5432/test); outside CI the
PostgreSQL half is skipped without it, in CI (CI=true) its absence is an error.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from _pytest.terminal import TerminalReporter
from hypothesis import HealthCheck, settings

from tests.support.api import Api, admin_token
from tests.support.broker import BrokerProcess, start_broker
from tests.support.database import Backend, drop_database, make_backend, run_sync

# The machines are shared and noisy: a per-example deadline would only make tests flaky.
settings.register_profile(
    "secondline", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("secondline")

_PASSED: Counter[str] = Counter()
_FAILED: Counter[str] = Counter()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """A fresh, empty database of each kind."""
    kind = str(request.param)
    dsn = os.environ.get("SECONDLINE_TEST_PG", "")
    if kind == "postgresql" and not dsn:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must test PostgreSQL: set SECONDLINE_TEST_PG (see .ci/run)")
        pytest.skip("PostgreSQL: set SECONDLINE_TEST_PG to a DSN to run this half")
    be = make_backend(kind, tmp_path, dsn)
    yield be
    if be.database:
        run_sync(drop_database(dsn, be.database))


@pytest.fixture
def data_dir(backend: Backend, tmp_path: Path) -> Path:
    """An initialised broker data dir on the test's backend."""
    from tests.support.broker import init_dir

    return init_dir(tmp_path / "data", backend)


@pytest.fixture
async def broker(data_dir: Path) -> AsyncIterator[BrokerProcess]:
    """A real `secondline serve` process on loopback ports."""
    proc = await start_broker(data_dir)
    try:
        yield proc
    finally:
        await proc.stop()


@pytest.fixture(scope="session", autouse=True)
def _no_stale_pyenv_lock() -> Iterator[None]:
    """Agents in the tests start real login shells as the machine's user. On the CI machine
    that user's ~/.bashrc runs `pyenv init`, whose rehash holds a lock file; a session shell
    killed mid-rehash leaves the lock behind, and every later login then waits 60 s for it.
    This is the machine's dotfile, outside the project: clear a lock no rehash has touched
    for 20 s (a live rehash holds it for well under a second)."""
    lock = Path.home() / ".pyenv" / "shims" / ".pyenv-shim"
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(1.0):
            with contextlib.suppress(OSError):
                if time.time() - lock.stat().st_mtime > 20:
                    lock.unlink()

    thread = threading.Thread(target=watch, name="pyenv-lock-watch", daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join()


def pytest_sessionfinish(session: pytest.Session) -> None:
    from tests.support.broker import drop_templates

    drop_templates()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "call" and not (report.when == "setup" and report.outcome != "passed"):
        return
    kind = "postgresql" if "[postgresql" in report.nodeid else "sqlite"
    if "postgresql" not in report.nodeid and "sqlite" not in report.nodeid:
        kind = "no database"
    if report.outcome == "passed":
        _PASSED[kind] += 1
    elif report.outcome == "failed":
        _FAILED[kind] += 1


def pytest_terminal_summary(terminalreporter: TerminalReporter) -> None:
    terminalreporter.section("tests per database backend")
    for kind in ("sqlite", "postgresql", "no database"):
        terminalreporter.write_line(f"{kind}: {_PASSED[kind]} passed, {_FAILED[kind]} failed")


@pytest.fixture
async def api(data_dir: Path) -> AsyncIterator[Api]:
    """The broker app in-process on a loopback socket, called as the first admin."""
    from broker.app import create_app
    from broker.config import load_config
    from tests.support.broker import start_in_process

    client = await start_in_process(data_dir, lambda: create_app(load_config(data_dir, env={})))
    yield Api(client, admin_token(data_dir))
    await client.close()
