"""Anonymous traffic does not grow the audit log: a real `secondline serve` takes real HTTPS
requests without credentials, and the log then holds one summary per source and minute
(written at shutdown for the last minute), while refusals of signed-in callers stay one
event each and the chain still verifies."""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Any, Final

import aiohttp
import pytest

from tests.support.broker import BrokerProcess, secondline, start_broker
from tests.support.site import ok

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

ANONYMOUS_POSTS: Final = 60
BAD_TOKENS: Final = 5
SIGN_IN_FORMS: Final = 10
STAFF_REFUSALS: Final = 3


def events(data_dir: Path) -> list[dict[str, Any]]:
    listed = json.loads(
        ok(secondline("audit", "list", "--limit", "1000", "--json", data_dir=data_dir))
    )
    assert isinstance(listed, list)
    return listed


async def test_anonymous_refusals_are_one_summary_per_source_and_staff_refusals_stay_each(
    broker: BrokerProcess,
) -> None:
    """60 API POSTs without a token, 5 with a bad one and 10 console sign-in forms without
    their CSRF cookie, from one address, leave one anonymous.refused event with count 75
    and the three kinds (written when the broker stops); 3 refusals of a signed-in level-1
    member are 3 events; `audit verify` passes."""
    d = broker.data_dir
    ok(secondline("customer", "add", "acme", data_dir=d))
    ok(secondline("user", "add", "lena", "--role", "level1", "--customer", "acme", data_dir=d))
    lena = ok(secondline("user", "token", "lena", data_dir=d)).strip().split()[-1]
    before = max((e["seq"] for e in events(d)), default=0)
    tls = ssl.create_default_context(cafile=str(d / "keys" / "tls.crt"))
    tls.check_hostname = False
    async with aiohttp.ClientSession(base_url=broker.url) as http:
        for _ in range(ANONYMOUS_POSTS):
            async with http.post("/api/v1/tickets", json={"title": "x"}, ssl=tls) as resp:
                assert resp.status == 401
        bad = {"Authorization": "Bearer slt_aaaaaaaaaaaa_" + "b" * 40}
        for _ in range(BAD_TOKENS):
            async with http.post("/api/v1/users", json={}, headers=bad, ssl=tls) as resp:
                assert resp.status == 401
        for _ in range(SIGN_IN_FORMS):  # the console's sign-in form without its CSRF cookie
            form = {"user": "lena", "password": "guess", "_csrf": "forged"}
            async with http.post("/console/login", data=form, ssl=tls) as resp:
                assert resp.status == 403
        staff = {"Authorization": f"Bearer {lena}"}
        for _ in range(STAFF_REFUSALS):
            body = {"name": "mallory", "role": "admin"}
            async with http.post("/api/v1/users", json=body, headers=staff, ssl=tls) as resp:
                assert resp.status == 403
    # Stopped within the minute: the summary is written at shutdown. The CLI reads the log
    # through a broker, so a new one is started to read it.
    assert await broker.stop() == 0
    again = await start_broker(d)
    try:
        new = [e for e in events(d) if e["seq"] > before]
        verdict = secondline("audit", "verify", data_dir=d)
    finally:
        await again.stop()
    anonymous = [e for e in new if e["actor"] == "anonymous"]
    assert [e["action"] for e in anonymous] == ["anonymous.refused"], anonymous
    summary = anonymous[0]
    assert summary["source"] == "127.0.0.1"
    assert summary["outcome"] == "denied"
    assert summary["details"]["count"] == ANONYMOUS_POSTS + BAD_TOKENS + SIGN_IN_FORMS
    assert summary["details"]["kinds"] == {
        "auth.refused: no credentials": ANONYMOUS_POSTS,
        "auth.refused: invalid token": BAD_TOKENS,
        "console.csrf_refused: sign-in form": SIGN_IN_FORMS,
    }
    assert summary["details"]["first_at"] <= summary["details"]["last_at"]
    refused_staff = [e for e in new if e["actor"] == "lena" and e["outcome"] == "denied"]
    assert len(refused_staff) == STAFF_REFUSALS, refused_staff
    assert verdict.code == 0, verdict.out + verdict.err
