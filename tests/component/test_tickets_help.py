"""`POST /agent/v1/help` from a really enrolled agent: a level-1 ticket for its customer,
signed requests only, and a rate limit per agent; on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from agent.signing import sign_request
from broker.tickets.help_request import HELP_LIMIT
from tests.component.test_tickets_support import Json, World, audit_events, make_world
from tests.support.api import Api

pytestmark = [
    pytest.mark.postgres,
    # broker.agents (enrollment, signed requests) still calls Result.tuples(), which
    # SQLAlchemy 2.1 deprecates; not ours to change. Drop this line once it stops.
    pytest.mark.filterwarnings("ignore:The Result.tuples\\(\\) method is deprecated"),
]

FACTS = {
    "hostname": "web07",
    "os": "Debian GNU/Linux",
    "os_version": "12",
    "kernel": "6.1.0-18-amd64",
    "arch": "x86_64",
    "users": ["ann"],
}


@pytest.fixture
async def world(api: Api) -> World:
    return await make_world(api)


async def enroll(world: World, name: str = "web07") -> tuple[str, Ed25519PrivateKey]:
    """Enroll an agent of acme through /agent/v1/enroll, as the agent does."""
    token = await world.call(
        "POST",
        "/enrollment-tokens",
        {"customer": "acme", "consent": "attended"},
        "admin",
        expect=201,
    )
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()
    body = {"token": token["token"], "name": name, "public_key": public, "facts": FACTS}
    resp = await world.api.client.post("/agent/v1/enroll", json=body)
    answer = await resp.json()
    assert resp.status == 200, answer
    return str(answer["agent_id"]), key


async def ask(
    world: World, agent_id: str, key: Ed25519PrivateKey, text: str, *, now: float | None = None
) -> tuple[int, Json]:
    body = json.dumps({"text": text}).encode()
    headers = sign_request(key, agent_id, body, time.time() if now is None else now)
    headers["Content-Type"] = "application/json"
    resp = await world.api.client.post("/agent/v1/help", data=body, headers=headers)
    data = await resp.json()
    assert isinstance(data, dict)
    return resp.status, data


async def test_help_request_opens_a_level1_ticket(world: World) -> None:
    """The end user's text and the machine's facts become a new level-1 ticket, agent linked."""
    agent_id, key = await enroll(world)
    status, answer = await ask(world, agent_id, key, "The printer\tjams\nagain <b>today</b>")
    assert (status, answer) == (200, {"ticket": "T-1001"})
    shown = await world.show("T-1001", world.lena)
    assert (shown["level"], shown["status"], shown["customer"]) == (1, "new", "acme")
    assert shown["title"] == "Help request from web07: The printer jams"
    assert shown["requester"] == "end user on web07"
    assert shown["created_by"] is None
    assert shown["origin_agent"] == agent_id
    assert shown["agents"] == ["web07"]
    description = str(shown["description"])
    assert description.startswith("The printer\tjams\nagain <b>today</b>\n\n--- machine web07 ---")
    assert "os: Debian GNU/Linux" in description
    assert "users: ann" in description
    events = await audit_events(world.api, "ticket.create")
    assert events[0]["actor"] == agent_id
    await world.refused(
        "POST", "/tickets/T-1001/resolve", {"solution": "x"}, world.lena, 403, "not_own_ticket"
    )
    await world.call("POST", "/tickets/T-1001/take")
    done = await world.call("POST", "/tickets/T-1001/resolve", {"solution": "jam cleared"})
    assert (done["status"], done["assignee"]) == ("resolved", "lena")


async def test_help_requests_are_rate_limited_per_agent(world: World) -> None:
    """The sixth request within an hour is refused with 429; another agent is not affected."""
    agent_id, key = await enroll(world)
    for number in range(HELP_LIMIT):
        status, answer = await ask(world, agent_id, key, f"problem {number}")
        assert status == 200, answer
    status, answer = await ask(world, agent_id, key, "one more")
    assert status == 429
    assert answer["error"]["code"] == "rate_limited"
    assert "in the last hour" in answer["error"]["message"]
    other_id, other_key = await enroll(world, "web08")
    status, _ = await ask(world, other_id, other_key, "hello")
    assert status == 200
    denied = [
        e for e in await audit_events(world.api, "ticket.help_request") if e["outcome"] == "denied"
    ]
    assert [e["actor"] for e in denied] == [agent_id]


async def test_help_requests_must_be_signed_and_well_formed(world: World) -> None:
    """Unsigned, forged, stale, revoked or malformed requests create no ticket."""
    agent_id, key = await enroll(world)
    resp = await world.api.client.post("/agent/v1/help", json={"text": "hi"})
    assert resp.status == 401
    status, _ = await ask(world, agent_id, Ed25519PrivateKey.generate(), "forged")
    assert status == 401
    status, _ = await ask(world, agent_id, key, "stale", now=time.time() - 3600)
    assert status == 401
    for text in ["", "   ", "x" * 2001, "bell\x07"]:
        status, answer = await ask(world, agent_id, key, text)
        assert (status, answer["error"]["code"]) == (400, "bad_help_request"), text
    await world.call("POST", f"/agents/{agent_id}/revoke", None, "admin")
    status, _ = await ask(world, agent_id, key, "after revocation")
    assert status == 403
    assert await world.listed() == []
