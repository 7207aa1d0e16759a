"""The REST API for enrollment tokens and agents: scopes and customer scoping, on SQLite
and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpClient

from tests.component.test_agents_harness import AgentsApp, start_agents_app

pytestmark = pytest.mark.postgres


@pytest.fixture
async def agents(data_dir: Path, aiohttp_client: AiohttpClient) -> AsyncIterator[AgentsApp]:
    async with start_agents_app(data_dir, aiohttp_client) as app:
        await app.customer("acme")
        await app.customer("globex")
        yield app


async def test_tokens_are_listed_without_secrets_and_revoked(agents: AgentsApp) -> None:
    """The token text is shown once; lists show status, never the secret or its hash."""
    used = await agents.token("acme")
    assert (await agents.enroll(str(used["token"])))[0] == 200
    active = await agents.token("acme", labels={"env": "prod"}, uses=2, ttl_seconds=600)
    _, listed = await agents.api.call("GET", "/enrollment-tokens", expect=200)
    assert isinstance(listed, list)
    by_id = {t["id"]: t for t in listed}
    assert by_id[used["id"]]["status"] == "used"
    assert by_id[active["id"]]["status"] == "active"
    assert by_id[active["id"]]["max_uses"] == 2
    assert by_id[active["id"]]["labels"] == {"env": "prod"}
    secret = str(active["token"]).split(".")[2]
    assert secret not in str(listed)
    assert all("token" not in t and "secret_hash" not in t for t in listed)
    _, revoked = await agents.api.call("DELETE", f"/enrollment-tokens/{active['id']}", expect=200)
    assert isinstance(revoked, dict)
    assert revoked["status"] == "revoked"
    actions = [e.action for e in await agents.audit("enrollment_token.revoke")]
    assert actions == ["enrollment_token.revoke"]


async def test_a_customer_limited_admin_sees_and_touches_only_its_customers(
    agents: AgentsApp,
) -> None:
    """Tokens and agents of other customers do not exist for a limited admin."""
    limited = await agents.api.staff_token("ops", "admin", customers=["acme"])
    globex_token = await agents.token("globex")
    globex_agent = await agents.agent("db01", customer="globex")
    acme_agent = await agents.agent("web01", customer="acme")
    call = agents.api.call
    _, own = await call("POST", "/enrollment-tokens", {"consent": "attended"}, token=limited)
    assert isinstance(own, dict)
    assert own["customer"] == "acme"
    await call("POST", "/enrollment-tokens", {"customer": "globex"}, token=limited, expect=404)
    _, tokens = await call("GET", "/enrollment-tokens", token=limited, expect=200)
    assert isinstance(tokens, list)
    assert {t["customer"] for t in tokens} == {"acme"}
    await call("DELETE", f"/enrollment-tokens/{globex_token['id']}", token=limited, expect=404)
    _, listed = await call("GET", "/agents", token=limited, expect=200)
    assert isinstance(listed, list)
    assert [a["id"] for a in listed] == [acme_agent.id]
    await call("GET", f"/agents/{globex_agent.id}", token=limited, expect=404)
    await call("GET", "/agents/db01", token=limited, expect=404)
    await call("POST", f"/agents/{globex_agent.id}/revoke", token=limited, expect=404)
    assert [e.target for e in await agents.audit("agent.revoke")] == []


async def test_staff_read_agents_but_do_not_manage_tokens_or_revoke(agents: AgentsApp) -> None:
    """Level-2 staff list their customers' agents; tokens and revocation need admin."""
    staff = await agents.api.staff_token("bob", "level2", customers=["acme"])
    agent = await agents.agent("web01")
    call = agents.api.call
    status, data = await call("POST", "/enrollment-tokens", {"customer": "acme"}, token=staff)
    assert status == 403
    assert data["error"]["code"] == "scope_missing"  # type: ignore[index]
    await call("GET", "/enrollment-tokens", token=staff, expect=403)
    await call("POST", f"/agents/{agent.id}/revoke", token=staff, expect=403)
    _, shown = await call("GET", "/agents/web01", token=staff, expect=200)
    assert isinstance(shown, dict)
    assert shown["id"] == agent.id


async def test_names_are_resolved_per_customer(agents: AgentsApp) -> None:
    """A name two customers use is ambiguous without ?customer=, and exact with it."""
    acme = await agents.agent("web01", customer="acme")
    globex = await agents.agent("web01", customer="globex")
    status, data = await agents.api.call("GET", "/agents/web01")
    assert status == 409
    assert data["error"]["code"] == "ambiguous_agent"  # type: ignore[index]
    _, one = await agents.api.call("GET", "/agents/web01?customer=globex", expect=200)
    assert isinstance(one, dict)
    assert one["id"] == globex.id
    _, by_id = await agents.api.call("GET", f"/agents/{acme.id}", expect=200)
    assert isinstance(by_id, dict)
    assert by_id["customer"] == "acme"


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/agents/nobody", 404),
        ("/agents/Web01", 400),
        ("/agents/ag-0123456789abcdef", 404),
        ("/agents?status=sleeping", 400),
        ("/agents?customer=Nope", 400),
        ("/enrollment-tokens/short", 400),
    ],
)
async def test_bad_references_are_refused(agents: AgentsApp, path: str, status: int) -> None:
    """Unknown agents are 404, malformed names, ids and filters 400."""
    method = "DELETE" if path.startswith("/enrollment-tokens/") else "GET"
    await agents.api.call(method, path, expect=status)


async def test_revoking_twice_is_harmless_and_audited_once(agents: AgentsApp) -> None:
    """A second revocation changes nothing and adds no audit event."""
    agent = await agents.agent("web01")
    await agents.api.call("POST", f"/agents/{agent.id}/revoke", expect=200)
    _, again = await agents.api.call("POST", "/agents/web01/revoke", expect=200)
    assert isinstance(again, dict)
    assert again["status"] == "revoked"
    assert len(await agents.audit("agent.revoke")) == 1


async def test_a_token_needs_a_customer_when_the_admin_serves_all(agents: AgentsApp) -> None:
    """An unrestricted admin must name the customer; bad options are 422."""
    status, data = await agents.api.call("POST", "/enrollment-tokens", {})
    assert (status, data["error"]["code"]) == (422, "customer_missing")  # type: ignore[index]
    await agents.api.call("POST", "/enrollment-tokens", {"customer": "acme", "uses": 0}, expect=422)
    await agents.api.call(
        "POST", "/enrollment-tokens", {"customer": "acme", "extra": 1}, expect=422
    )
