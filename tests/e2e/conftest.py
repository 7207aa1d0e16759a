"""Fixtures of the end-to-end tests."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.broker import BrokerProcess
from tests.support.cluster import Cluster, make_cluster
from tests.support.database import Backend, drop_database, make_backend, run_sync
from tests.support.site import Site, close_sites, staffed_site, stop_agent


@pytest.fixture
async def site(broker: BrokerProcess, tmp_path: Path) -> AsyncIterator[Site]:
    s = staffed_site(broker, tmp_path)
    try:
        yield s
    finally:
        await stop_agent(s)


@pytest.fixture(autouse=True)
async def sites_closed() -> AsyncIterator[None]:
    """Every site a test made (its own or the fixture's) has its agent and children
    killed and waited for at the test's end, whatever the test did."""
    yield
    await close_sites()


# A cluster of real nodes (tests/support/cluster.py) for the tests/e2e/test_cluster_*.py.
@pytest.fixture
def pg(tmp_path: Path) -> Iterator[Backend]:
    dsn = os.environ.get("SECONDLINE_TEST_PG", "")
    if not dsn:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must test PostgreSQL: set SECONDLINE_TEST_PG (see .ci/run)")
        pytest.skip("a cluster needs PostgreSQL: set SECONDLINE_TEST_PG")
    backend = make_backend("postgresql", tmp_path, dsn)
    yield backend
    run_sync(drop_database(dsn, backend.database))


@pytest.fixture
def cluster_dirs(pg: Backend, tmp_path: Path) -> Cluster:
    """The first node's data dir, initialised (synchronously: init runs its own loop)."""
    return make_cluster(tmp_path, pg)


@pytest.fixture
async def cluster(cluster_dirs: Cluster) -> AsyncIterator[Cluster]:
    c = cluster_dirs
    try:
        yield c
    finally:
        await c.stop_all()
