"""Property-based: arbitrary JSON bodies to every POST/PUT/PATCH route of the OpenAPI document,
against the real app on loopback (SQLite and PostgreSQL), get a 4xx (or a success) with the
stable error shape, never a 5xx.

Hypothesis drives a worker thread; each example is sent on the test's event loop, so the
server and the client stay on one loop and nothing sleeps."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.component.test_tickets_support import World, make_world
from tests.support.api import Api

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.filterwarnings("ignore:The Result.tuples\\(\\) method is deprecated"),
]

KEYS = st.sampled_from(
    [
        "name",
        "role",
        "customer",
        "customers",
        "title",
        "text",
        "to",
        "reason",
        "scopes",
        "agent",
        "agents",
        "token",
        "ticket_id",
        "mode",
        "session",
        "labels",
        "password",
        "public_key",
        "level",
        "solution",
        "user",
        "totp",
        "ttl_seconds",
        "uses",
        "x",
    ]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(
        ["T-1001", "acme", "web01", "level2", "../x", "a;id", "\u0430", "s-" + "A" * 22]
    ),
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(KEYS | st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=12,
)
BODIES = st.one_of(JSON_VALUES, st.dictionaries(KEYS, JSON_VALUES, max_size=6))


async def state_changing_routes(api: Api) -> list[tuple[str, str]]:
    """(method, path) of every body-taking route the OpenAPI document lists, ids filled in."""
    resp = await api.client.get("/api/v1/openapi.json")
    document = await resp.json()
    fill = {"id": "T-1001", "name": "bob", "number": "1"}
    routes = []
    for path, operations in document["paths"].items():
        for method in operations:
            if method.upper() in ("POST", "PUT", "PATCH"):
                concrete = re.sub(r"\{(\w+)\}", lambda m: fill.get(m.group(1), "x1"), path)
                routes.append((method.upper(), concrete))
    assert len(routes) >= 20, routes
    return routes


@pytest.fixture
async def world(api: Api) -> World:
    return await make_world(api)


async def test_any_json_body_on_any_route_is_never_a_server_error(world: World) -> None:
    """150 generated bodies per run, spread over every POST route and caller, answer below 500
    with {"error": {"code", "message"}} whenever they fail."""
    await world.ticket()
    routes = await state_changing_routes(world.api)
    loop = asyncio.get_running_loop()
    callers = [world.api.admin_token, world.bob, world.lena, world.gina]
    seen: list[int] = []

    async def send(method: str, path: str, body: object, token: str) -> None:
        resp = await world.api.client.request(
            method,
            path,
            data=json.dumps(body).encode(),
            headers={**Api.headers(token), "Content-Type": "application/json"},
        )
        raw = await resp.read()
        assert resp.status < 500, (method, path, body, resp.status, raw[:300])
        seen.append(resp.status)
        if resp.status >= 400:
            error = json.loads(raw)["error"]
            assert set(error) == {"code", "message"}, (path, raw[:300])
            assert error["message"], (path, raw[:300])

    @settings(
        max_examples=150,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(route=st.sampled_from(routes), body=BODIES, caller=st.sampled_from(callers))
    def probe(route: tuple[str, str], body: object, caller: str) -> None:
        future = asyncio.run_coroutine_threadsafe(send(*route, body, caller), loop)
        future.result(timeout=60)

    run: Callable[[], None] = probe
    await asyncio.to_thread(run)
    assert len(seen) >= 100
    assert all(status < 500 for status in seen)
