"""Enrollment over the real app on loopback: tokens, the answer, and every refusal, on
SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh
import pytest
from cryptography.hazmat.primitives import serialization
from pytest_aiohttp import AiohttpClient
from sqlalchemy import func, select, update

from agent.enrollment import EnrollmentAnswer, EnrollmentToken
from agent.facts import Facts
from broker.db.models_agents import Agent
from broker.db.models_agents import EnrollmentToken as TokenRow
from tests.component.test_agents_harness import FACTS, AgentsApp, start_agents_app

pytestmark = pytest.mark.postgres

TOKEN_RE = re.compile(r"^sle1\.[a-z0-9]{12}\.[A-Za-z0-9]{32}\.[0-9a-f]{64}$")


@pytest.fixture
async def agents(data_dir: Path, aiohttp_client: AiohttpClient) -> AsyncIterator[AgentsApp]:
    async with start_agents_app(data_dir, aiohttp_client) as app:
        await app.customer("acme")
        yield app


async def agent_count(agents: AgentsApp) -> int:
    async with agents.services.db() as db:
        return int((await db.execute(select(func.count(Agent.id)))).scalar_one())


async def uses_left(agents: AgentsApp, token_id: str) -> int:
    async with agents.services.db() as db:
        row = await db.get(TokenRow, token_id)
        assert row is not None
        return row.uses_left


async def test_enrollment_answers_what_the_agent_needs(agents: AgentsApp) -> None:
    """A token enrolls an agent: id, name, customer, consent, broker key, tunnel URL, cert,
    and the release key its self-updates must be signed with."""
    token = await agents.token("acme", consent="attended", labels={"env": "prod"})
    assert TOKEN_RE.fullmatch(str(token["token"]))
    assert str(token["token"]).endswith(agents.services.keys.tls_fingerprint)
    status, data, key = await agents.enroll(str(token["token"]), "web01")
    assert status == 200, data
    answer = EnrollmentAnswer.parse(json.dumps(data))
    assert re.fullmatch(r"ag-[a-z0-9]{16}", answer.agent_id)
    assert (answer.name, answer.customer, answer.consent) == ("web01", "acme", "attended")
    broker_key = agents.services.keys.agent_client_key.export_public_key().decode()
    assert broker_key.startswith(answer.broker_ssh_key.serialize())
    port = agents.services.config.https_port
    assert answer.tunnel_url == f"wss://127.0.0.1:{port}/agent/v1/tunnel"
    assert answer.tls_cert_pem == agents.services.keys.tls_cert_pem.decode()
    release = agents.services.keys.release_key.public_key()
    assert answer.release_key is not None
    assert answer.release_key.raw == release.public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    _, shown = await agents.api.call("GET", f"/agents/{answer.agent_id}", expect=200)
    assert isinstance(shown, dict)
    assert shown["labels"] == {"env": "prod"}
    assert shown["facts"]["hostname"] == "web01"
    assert shown["key_fingerprint"] == key.get_fingerprint("sha256")
    assert shown["status"] == "offline"
    assert await uses_left(agents, str(token["id"])) == 0
    assert [e.target for e in await agents.audit("agent.enroll")] == [answer.agent_id]


async def test_a_used_token_is_refused_and_nothing_changes(agents: AgentsApp) -> None:
    """The second enrollment with a single-use token is refused (token_used) and audited."""
    token = str((await agents.token())["token"])
    assert (await agents.enroll(token, "web01"))[0] == 200
    status, data, _ = await agents.enroll(token, "web02")
    assert status == 403
    assert data["error"]["code"] == "token_used"  # type: ignore[index]
    assert "used already" in data["error"]["message"]  # type: ignore[index]
    assert await agent_count(agents) == 1
    assert await agents.denied_reasons("agent.enroll") == ["token_used"]


async def test_enrollments_are_counted_for_the_heap_trim(agents: AgentsApp) -> None:
    """Each enrollment answered counts towards the housekeeping's heap trim (a burst of
    them leaves garbage as handshakes do: broker.agents.heap_trim); a refused one not."""
    token = str((await agents.token())["token"])
    assert agents.runtime.enrollments == 0
    assert (await agents.enroll(token, "web01"))[0] == 200
    assert (await agents.enroll(token, "web02"))[0] == 403
    assert agents.runtime.enrollments == 1


async def test_expired_revoked_unknown_and_foreign_tokens_are_refused(agents: AgentsApp) -> None:
    """Each bad token gets its own code, the agents table stays empty, each is audited."""
    expired = await agents.token()
    async with agents.services.db() as db, db.begin():
        past = agents.services.clock() - dt.timedelta(seconds=1)
        await db.execute(
            update(TokenRow).where(TokenRow.id == expired["id"]).values(expires_at=past)
        )
    revoked = await agents.token()
    await agents.api.call("DELETE", f"/enrollment-tokens/{revoked['id']}", expect=200)
    good = EnrollmentToken.parse(str((await agents.token())["token"]))
    wrong_secret = EnrollmentToken(good.token_id, "x" * 32, good.fingerprint).serialize()
    unknown = EnrollmentToken.generate(agents.services.keys.tls_fingerprint).serialize()
    foreign = EnrollmentToken.generate("0" * 64).serialize()
    cases = [
        (str(expired["token"]), 403, "token_expired"),
        (str(revoked["token"]), 403, "token_revoked"),
        (wrong_secret, 403, "token_invalid"),
        (unknown, 403, "token_invalid"),
        (foreign, 403, "token_other_broker"),
    ]
    for token, status, code in cases:
        got, data, _ = await agents.enroll(token)
        assert (got, data["error"]["code"]) == (status, code)  # type: ignore[index]
    got, data = await agents.enroll_raw(b'{"token": "sle1.nope", "name": "x"}')
    assert (got, data["error"]["code"]) == (400, "token_malformed")  # type: ignore[index]
    assert await agent_count(agents) == 0
    assert await uses_left(agents, good.token_id) == 1
    assert await agents.denied_reasons("agent.enroll") == [c for _, _, c in cases] + [
        "token_malformed"
    ]


async def test_a_duplicate_name_is_refused_and_the_token_stays_usable(agents: AgentsApp) -> None:
    """A second live agent named web01 for acme is a clear 409; its token is not spent."""
    await agents.agent("web01")
    token = await agents.token()
    status, data, _ = await agents.enroll(str(token["token"]), "web01")
    assert status == 409
    assert data["error"]["code"] == "name_taken"  # type: ignore[index]
    assert "--name" in data["error"]["message"]  # type: ignore[index]
    assert await uses_left(agents, str(token["id"])) == 1
    assert (await agents.enroll(str(token["token"]), "web02"))[0] == 200


async def test_the_same_name_is_fine_for_another_customer_or_after_revocation(
    agents: AgentsApp,
) -> None:
    """Names are unique per customer among live agents only."""
    await agents.customer("globex")
    first = await agents.agent("web01")
    await agents.agent("web01", customer="globex")
    await agents.api.call("POST", f"/agents/{first.id}/revoke", expect=200)
    again = await agents.agent("web01")
    assert again.id != first.id


async def test_two_agents_racing_for_one_token_exactly_one_wins(agents: AgentsApp) -> None:
    """Eight concurrent enrollments with a single-use token: one 200, seven token_used."""
    token = str((await agents.token())["token"])
    results = await asyncio.gather(*(agents.enroll(token, f"web{i}") for i in range(8)))
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200] + [403] * 7
    codes = {data["error"]["code"] for status, data, _ in results if status != 200}  # type: ignore[index]
    assert codes == {"token_used"}
    assert await agent_count(agents) == 1


async def test_a_multi_use_token_admits_exactly_its_uses(agents: AgentsApp) -> None:
    """--uses 3 lets three agents in, concurrently, and refuses the fourth."""
    token = await agents.token(uses=3)
    results = await asyncio.gather(
        *(agents.enroll(str(token["token"]), f"web{i}") for i in range(5))
    )
    assert sorted(status for status, _, _ in results) == [200, 200, 200, 403, 403]
    assert await uses_left(agents, str(token["id"])) == 0


@pytest.mark.parametrize(
    ("facts", "code"),
    [
        ({"os": "Debian\x1b]52;c;b3duZWQ=\x07"}, "invalid_request"),
        ({"hostname": "web\x00"}, "invalid_request"),
        ({"os": "<img src=x onerror=alert(1)>"}, "facts_invalid"),
        ({"kernel": "k" * 300}, "invalid_request"),
    ],
)
async def test_hostile_facts_are_refused_whole(
    agents: AgentsApp, facts: dict[str, object], code: str
) -> None:
    """Escape sequences, NUL, markup and overlong text refuse the enrollment; nothing is kept."""
    token = await agents.token()
    key = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    body = {
        "token": token["token"],
        "name": "web01",
        "public_key": key,
        "facts": {**FACTS.to_dict(), **facts},
    }
    status, data = await agents.enroll_raw(json.dumps(body).encode())
    assert status in (400, 422)
    assert data["error"]["code"] in (code, "facts_invalid")  # type: ignore[index]
    assert await agent_count(agents) == 0
    assert await uses_left(agents, str(token["id"])) == 1
    assert len(await agents.denied_reasons("agent.enroll")) == 1


async def test_megabytes_and_non_json_are_refused(agents: AgentsApp) -> None:
    """An oversized body is a 413, a non-JSON content type a 415, both audited."""
    token = await agents.token()
    huge = json.dumps({"token": token["token"], "pad": "x" * (2 * 1024 * 1024)}).encode()
    status, data = await agents.enroll_raw(huge)
    assert (status, data["error"]["code"]) in {(413, "request_too_large"), (413, "body_too_large")}  # type: ignore[index]
    resp = await agents.api.client.post("/agent/v1/enroll", data=b"token=x")
    assert resp.status == 415
    assert await agent_count(agents) == 0


async def test_bidi_tricks_in_facts_are_stripped(agents: AgentsApp) -> None:
    """A right-to-left override in the hostname is removed before storing."""
    token = str((await agents.token())["token"])
    spoof = Facts(
        hostname="web\u202e10", os="Debian", os_version="12", kernel="6", arch="x86_64", users=()
    )
    status, data, _ = await agents.enroll(token, "web01", facts=spoof)
    assert status == 200
    _, shown = await agents.api.call("GET", f"/agents/{data['agent_id']}", expect=200)
    assert isinstance(shown, dict)
    assert shown["facts"]["hostname"] == "web10"
