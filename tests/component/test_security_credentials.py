"""Credential confusion and object-level authorization against the real app on loopback
(SQLite and PostgreSQL): an agent's signature opens no staff route, a staff token opens no
agent route, tokens never carry more than their owner or the token that minted them, and a
session id grants nothing by itself."""

from __future__ import annotations

import json
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import func, select

from agent.signing import sign_request
from broker.auth.scopes import ROLE_SCOPES, ROLES, SCOPES
from broker.db.models_sessions import RemoteSession
from broker.db.models_staff import ApiToken, SshKey, User
from tests.component.test_tickets_support import Json, World, audit_events, make_world, session_row
from tests.support.api import Api, refusals_of

pytestmark = [
    pytest.mark.postgres,
    # broker.agents (enrollment, signed requests) still calls Result.tuples(), which
    # SQLAlchemy 2.1 deprecates; not ours to change.
    pytest.mark.filterwarnings("ignore:The Result.tuples\\(\\) method is deprecated"),
]

ED25519_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl probe"
)


@pytest.fixture
async def world(api: Api) -> World:
    return await make_world(api)


async def enroll(world: World, name: str = "web07") -> tuple[str, Ed25519PrivateKey]:
    """Enroll an agent of acme through /agent/v1/enroll, as the agent does."""
    token = await world.call(
        "POST", "/enrollment-tokens", {"customer": "acme"}, "admin", expect=201
    )
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()
    facts = {
        "hostname": name,
        "os": "Debian GNU/Linux",
        "os_version": "12",
        "kernel": "6.1.0-18-amd64",
        "arch": "x86_64",
        "users": ["ann"],
    }
    body = {"token": token["token"], "name": name, "public_key": public, "facts": facts}
    resp = await world.api.client.post("/agent/v1/enroll", json=body)
    answer = await resp.json()
    assert resp.status == 200, answer
    return str(answer["agent_id"]), key


async def token_count(world: World) -> int:
    async with world.services.db() as db:
        return int((await db.execute(select(func.count(ApiToken.id)))).scalar_one())


async def test_agent_signatures_open_no_staff_route(world: World) -> None:
    """A validly signed agent request to the REST API, the downloads or the console is
    refused as unauthenticated (401, audited), never served."""
    agent_id, key = await enroll(world)
    client = world.api.client
    refused_before = refusals_of(await audit_events(world.api), "auth.refused")
    for method, path in (
        ("GET", "/api/v1/me"),
        ("GET", "/api/v1/tickets"),
        ("GET", "/api/v1/agents"),
        ("GET", "/api/v1/sessions"),
        ("POST", "/api/v1/tickets"),
        ("POST", "/api/v1/sessions/terminal-tickets"),
        ("GET", "/files/tickets/T-1001/attachments/a.txt"),
        ("GET", f"/files/sessions/s-{'A' * 22}/transcript.cast"),
    ):
        body = json.dumps({"title": "x", "customer": "acme"}).encode()
        headers = sign_request(key, agent_id, body, time.time(), path=path)
        headers["Content-Type"] = "application/json"
        resp = await client.request(method, path, data=body, headers=headers)
        assert resp.status == 401, (method, path, resp.status)
        assert (await resp.json())["error"]["code"] == "unauthenticated"
    resp = await client.get(
        "/console/", allow_redirects=False, headers={"X-Secondline-Agent": agent_id}
    )
    assert resp.status in (302, 303, 401)
    assert refusals_of(await audit_events(world.api), "auth.refused") >= refused_before + 8
    assert await world.listed(token=world.una) == []


async def test_staff_tokens_open_no_agent_route(world: World) -> None:
    """A staff or admin bearer token on /agent/v1/help, /agent/v1/tunnel or /agent/v1/enroll
    is refused, and no ticket is opened."""
    await enroll(world)
    client = world.api.client
    body = json.dumps({"text": "the printer does not print"}).encode()
    for token in (world.bob, world.una, world.api.admin_token):
        headers = {**Api.headers(token), "Content-Type": "application/json"}
        resp = await client.post("/agent/v1/help", data=body, headers=headers)
        assert resp.status == 401, resp.status
        resp = await client.get("/agent/v1/tunnel", headers=Api.headers(token))
        assert resp.status in (400, 401, 403), resp.status
        resp = await client.post("/agent/v1/enroll", data=body, headers=headers)
        assert 400 <= resp.status < 500, resp.status
    assert await world.listed(token=world.una) == []
    assert len(await audit_events(world.api, "agent.signed_request")) >= 3


async def test_an_agent_cannot_sign_as_another_agent(world: World) -> None:
    """Agent B's key under agent A's id is refused (401, audited) and opens no ticket."""
    first, _ = await enroll(world, "web07")
    _, other_key = await enroll(world, "web08")
    body = json.dumps({"text": "please help"}).encode()
    headers = sign_request(other_key, first, body, time.time())
    headers["Content-Type"] = "application/json"
    resp = await world.api.client.post("/agent/v1/help", data=body, headers=headers)
    assert resp.status == 401
    assert await world.listed(token=world.una) == []
    denied = await audit_events(world.api, "agent.signed_request")
    assert any(e["outcome"] == "denied" for e in denied)


async def test_tokens_are_never_wider_than_the_role(world: World) -> None:
    """Every role asking for every scope gets exactly its role's scopes and is refused the
    rest (403 scope_too_wide, audited); refused asks store nothing."""
    admin = world.api
    for role in ROLES:
        name = f"r-{role}"
        await admin.call("POST", "/users", {"name": name, "role": role}, expect=201)
        for scope in SCOPES:
            before = await token_count(world)
            status, data = await admin.call("POST", f"/users/{name}/tokens", {"scopes": [scope]})
            if scope in ROLE_SCOPES[role]:
                assert status == 201, (role, scope, data)
                assert isinstance(data, dict)
                assert data["scopes"] == [scope]
            else:
                assert isinstance(data, dict)
                assert (status, data["error"]["code"]) == (403, "scope_too_wide"), (role, scope)
                assert await token_count(world) == before
        status, data = await admin.call("POST", f"/users/{name}/tokens", {"scopes": list(SCOPES)})
        assert status == 403, role
    refused = await audit_events(world.api, "token.refused")
    expected = sum(len(set(SCOPES) - ROLE_SCOPES[r]) + 1 for r in ROLES)
    assert len(refused) == expected


async def test_a_narrow_token_cannot_mint_a_wider_one(world: World) -> None:
    """A read-only token may not mint a token with more scopes (nor the role's default set)
    for its owner; refused and audited, nothing stored."""
    admin = world.api
    read_only = await admin.staff_token("dave", "level2", scopes=["read"])
    before = await token_count(world)
    for body in ({}, {"scopes": ["session"]}, {"scopes": ["read", "write"]}, {"scopes": None}):
        status, data = await admin.call("POST", "/users/dave/tokens", body, token=read_only)
        assert isinstance(data, dict)
        assert (status, data["error"]["code"]) == (403, "scope_too_wide"), (body, data)
    assert await token_count(world) == before
    _, data = await admin.call(
        "POST", "/users/dave/tokens", {"scopes": ["read"]}, token=read_only, expect=201
    )
    refused = [e for e in await audit_events(world.api, "token.refused") if e["target"] == "dave"]
    assert len(refused) == 4


async def test_a_token_without_session_scope_cannot_register_an_ssh_key(world: World) -> None:
    """An SSH key is a shell: a token without the 'session' scope may not add one for its
    owner (403, audited) and no key is stored."""
    admin = world.api
    read_only = await admin.staff_token("dave", "level2", scopes=["read", "write"])
    status, data = await admin.call(
        "POST", "/users/dave/keys", {"public_key": ED25519_KEY}, token=read_only
    )
    assert isinstance(data, dict)
    assert (status, data["error"]["code"]) == (403, "scope_missing"), data
    async with world.services.db() as db:
        assert (await db.execute(select(func.count(SshKey.id)))).scalar_one() == 0
    assert any(e["target"] == "dave" for e in await audit_events(world.api, "user.key_refused"))


async def test_other_peoples_keys_and_tokens_are_refused_and_audited(world: World) -> None:
    """Staff may not list, mint or revoke another person's tokens, or add keys to them;
    every refusal is a 403 with an audit event, and nothing changes."""
    before = await token_count(world)
    calls: list[tuple[str, str, Json | None]] = [
        ("GET", "/users/bob/tokens", None),
        ("POST", "/users/bob/tokens", {"scopes": ["read"]}),
        ("POST", "/users/bob/keys", {"public_key": ED25519_KEY}),
        ("POST", "/users/admin/tokens", {}),
    ]
    for method, path, body in calls:
        await world.refused(method, path, body, world.carl, 403, "forbidden")
    async with world.services.db() as db:
        bobs_token = (
            await db.execute(select(ApiToken.id).join(User).where(User.name == "bob"))
        ).scalar_one()
    status, _ = await world.api.call("DELETE", f"/tokens/{bobs_token}", token=world.carl)
    assert status == 403
    assert await token_count(world) == before
    denied = await audit_events(world.api, "user.manage_refused")
    assert len(denied) == len(calls) + 1
    assert all(e["actor"] == "carl" and e["outcome"] == "denied" for e in denied)
    await world.call("GET", "/me", token=world.bob)


async def test_a_session_id_grants_nothing_to_another_customer(world: World) -> None:
    """Staff of another customer get the unknown-session answer on show, transcript, kill,
    download and terminal tickets; each try is audited and the session is unchanged."""
    ref = await world.escalated()
    number = int(ref.removeprefix("T-"))
    sid = "s-" + "B" * 22
    async with world.services.db() as db, db.begin():
        db.add(session_row(sid, number, "acme", "bob"))
    unknown = "s-" + "C" * 22
    client = world.api.client
    for target in (sid, unknown):
        answers = []
        for method, path, body in (
            ("GET", f"/api/v1/sessions/{target}", None),
            ("GET", f"/api/v1/sessions/{target}/transcript", None),
            ("POST", f"/api/v1/sessions/{target}/kill", None),
            ("GET", f"/files/sessions/{target}/transcript.cast", None),
            (
                "POST",
                "/api/v1/sessions/terminal-tickets",
                {"ticket_id": ref, "mode": "join", "session": target},
            ),
        ):
            resp = await client.request(method, path, json=body, headers=Api.headers(world.gina))
            answers.append((resp.status, (await resp.json())["error"]["code"]))
        assert all(a == (404, "session_not_found") for a in answers), (target, answers)
    _, listed = await world.api.call("GET", "/sessions", token=world.gina, expect=200)
    assert listed == []
    denied = [
        e
        for action in ("session.read", "transcript.read", "session.kill", "session.terminal_ticket")
        for e in await audit_events(world.api, action)
        if e["outcome"] == "denied" and e["target"] == sid
    ]
    assert len(denied) == 5
    assert all(e["actor"] == "gina" for e in denied)
    async with world.services.db() as db:
        row = (await db.execute(select(RemoteSession).where(RemoteSession.id == sid))).scalar_one()
        assert (row.state, row.ended_by) == ("live", None)


async def test_only_the_owner_or_an_admin_may_kill(world: World) -> None:
    """A colleague of the same customer may read the session but not kill it (403, audited);
    a token without 'session' scope may not kill even its owner's session."""
    ref = await world.escalated()
    sid = "s-" + "D" * 22
    async with world.services.db() as db, db.begin():
        db.add(session_row(sid, int(ref.removeprefix("T-")), "acme", "bob"))
    await world.call("GET", f"/sessions/{sid}", token=world.carl)
    await world.refused("POST", f"/sessions/{sid}/kill", None, world.carl, 403, "kill_refused")
    read_only = await world.call(
        "POST", "/users/bob/tokens", {"scopes": ["read"]}, world.bob, expect=201
    )
    await world.refused(
        "POST", f"/sessions/{sid}/kill", None, str(read_only["token"]), 403, "kill_refused"
    )
    denied = [
        e
        for e in await audit_events(world.api, "session.kill")
        if e["outcome"] == "denied" and e["target"] == sid
    ]
    assert {e["actor"] for e in denied} == {"carl", "bob"}
    async with world.services.db() as db:
        row = (await db.execute(select(RemoteSession).where(RemoteSession.id == sid))).scalar_one()
        assert row.state == "live"


async def test_downloads_without_the_read_scope_are_refused_and_audited(world: World) -> None:
    """A token without the 'read' scope gets 403 `scope_missing` in the API's error shape on
    both download routes, and each refusal is an audit event naming the object asked for."""
    ref = await world.escalated()
    sid = "s-" + "E" * 22
    async with world.services.db() as db, db.begin():
        db.add(session_row(sid, int(ref.removeprefix("T-")), "acme", "bob"))
    write_only = await world.call(
        "POST", "/users/bob/tokens", {"scopes": ["write"]}, world.bob, expect=201
    )
    for path, action, target in (
        (f"/files/sessions/{sid}/transcript.cast", "transcript.read", sid),
        (f"/files/tickets/{ref}/attachments/a.txt", "ticket.download", ref),
        ("/files/sessions/s-\x1b]52;c;x\x07/transcript.txt", "transcript.read", ""),
    ):
        before = len(await audit_events(world.api, action))
        resp = await world.api.client.get(path, headers=Api.headers(str(write_only["token"])))
        error = (await resp.json())["error"]
        assert (resp.status, error["code"]) == (403, "scope_missing"), (path, error)
        assert "'read' scope" in error["message"]
        events = await audit_events(world.api, action)
        assert len(events) == before + 1
        assert (events[-1]["actor"], events[-1]["outcome"]) == ("bob", "denied")
        if target:
            assert events[-1]["target"] == target
        else:
            assert "\x1b" not in events[-1]["target"]
