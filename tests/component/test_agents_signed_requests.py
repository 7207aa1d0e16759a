"""verify_agent_request: requests agents sign outside their tunnel, checked by a handler
the way /agent/v1/help uses it, over the real app on loopback (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pytest_aiohttp import AiohttpClient

from agent.signing import sign_request
from broker.agents.signed_requests import verify_agent_request
from broker.services import SERVICES
from tests.component.test_agents_harness import FAST, AgentsApp, LoopbackAgent, start_agents_app

pytestmark = pytest.mark.postgres

# Not /agent/v1/help itself (the ticket engineer's handler): a probe beside it.
PATH = "/agent/v1/probe-signature"
BODY = json.dumps({"text": "the printer does not print"}).encode()


def help_probe(app: web.Application) -> None:
    """A handler that uses verify_agent_request as /agent/v1/help does: who signed this?"""

    async def handler(request: web.Request) -> web.Response:
        agent = await verify_agent_request(request, request.app[SERVICES])
        body = await request.read()
        return web.json_response({"agent": agent.id, "customer": agent.customer, "len": len(body)})

    app.router.add_post(PATH, handler)


@pytest.fixture
async def agents(data_dir: Path, aiohttp_client: AiohttpClient) -> AsyncIterator[AgentsApp]:
    async with start_agents_app(data_dir, aiohttp_client, FAST, [help_probe]) as app:
        await app.customer("acme")
        yield app


async def post(
    agents: AgentsApp, headers: dict[str, str], body: bytes = BODY
) -> tuple[int, dict[str, object]]:
    resp = await agents.api.client.post(
        PATH, data=body, headers={"Content-Type": "application/json", **headers}
    )
    data = await resp.json()
    assert isinstance(data, dict)
    return resp.status, data


def signed(agent: LoopbackAgent, body: bytes = BODY, now: float | None = None) -> dict[str, str]:
    key = agent.key.pyca_key
    assert isinstance(key, Ed25519PrivateKey)
    return sign_request(key, agent.id, body, time.time() if now is None else now, path=PATH)


async def test_a_signed_request_names_its_agent_once(agents: AgentsApp) -> None:
    """A good signature yields the agent; the same signed request again is a replay."""
    agent = await agents.agent()
    headers = signed(agent)
    status, data = await post(agents, headers)
    assert (status, data) == (200, {"agent": agent.id, "customer": "acme", "len": len(BODY)})
    status, data = await post(agents, headers)
    assert (status, data["error"]["code"]) == (401, "signature_replayed")  # type: ignore[index]


async def test_bad_signatures_are_refused_and_audited(agents: AgentsApp) -> None:
    """Another agent's key, a changed body, a stale time or no signature: all 401."""
    agent = await agents.agent("web01")
    other = await agents.agent("web02")
    forged = signed(other) | {"X-Secondline-Agent": agent.id}
    tampered = signed(agent, b'{"text": "other"}')
    stale = signed(agent, now=time.time() - 3600)
    unsigned = {"X-Secondline-Agent": agent.id}
    for headers in (forged, tampered, stale, unsigned):
        status, data = await post(agents, headers)
        assert (status, data["error"]["code"]) == (401, "signature_invalid")  # type: ignore[index]
    status, _ = await post(agents, {"X-Secondline-Agent": "ag-nope"})
    assert status == 401
    assert len(await agents.denied_reasons("agent.signed_request")) == 5


async def test_unknown_revoked_and_oversized_are_refused(agents: AgentsApp) -> None:
    """An unknown or revoked agent is a 403, a body over 64 KiB a 413."""
    agent = await agents.agent()
    big = b"x" * (64 * 1024 + 1)
    status, data = await post(agents, signed(agent, big), big)
    assert (status, data["error"]["code"]) == (413, "body_too_large")  # type: ignore[index]
    ghost = signed(agent) | {"X-Secondline-Agent": "ag-0123456789abcdef"}
    assert (await post(agents, ghost))[0] == 403
    await agents.api.call("POST", f"/agents/{agent.id}/revoke", expect=200)
    status, data = await post(agents, signed(agent))
    assert (status, data["error"]["code"]) == (403, "agent_refused")  # type: ignore[index]
