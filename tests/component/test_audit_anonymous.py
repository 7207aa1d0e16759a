"""Summaries of anonymous refusals written by their timer, on a real audit log."""

from __future__ import annotations

import asyncio

import pytest

from broker.audit.anonymous import ACTION, AnonymousRefusals
from broker.services import SERVICES
from tests.support.api import Api

pytestmark = pytest.mark.postgres

BOUND = 30.0  # failure bound, never a pause


async def test_the_summary_is_written_when_the_window_ends(api: Api) -> None:
    """Refusals from two sources become one summary each once the window ends, without
    any read or shutdown to flush them; the chain still verifies."""
    services = api.client.app[SERVICES]
    refusals = AnonymousRefusals(services.audit, services.clock, window=0.2)
    for source, count in (("192.0.2.1", 3), ("192.0.2.2", 1)):
        for _ in range(count):
            await refusals.refused(
                source=source, action="auth.refused", target="/x", reason="no credentials"
            )

    async def summaries() -> list[tuple[str, int]]:
        # Read the log itself: GET /audit would flush the broker's own summaries only.
        events = await services.audit.list(limit=100, before=None, action=ACTION)
        return sorted((e.source, int(e.details["count"])) for e in events)

    async with asyncio.timeout(BOUND):
        while True:
            refusals.changed.clear()
            if await summaries() == [("192.0.2.1", 3), ("192.0.2.2", 1)]:
                break
            await refusals.changed.wait()
    await refusals.close()
    assert await summaries() == [("192.0.2.1", 3), ("192.0.2.2", 1)]
    _, report = await api.call("GET", "/audit/verify", expect=200)
    assert isinstance(report, dict)
    assert report["ok"] is True
