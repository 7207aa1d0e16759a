"""Names and tokens with shell metacharacters, CR/LF and look-alike characters, sent to every
route that stores a name, against the real app on loopback (SQLite and PostgreSQL): each is
refused with a sentence, and nothing is stored."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import func, select

from broker.db.models_agents import Agent, EnrollmentToken
from broker.db.models_staff import Customer, User
from tests.component.test_tickets_support import World, audit_events, make_world
from tests.support.api import Api, refusals_of

pytestmark = [
    pytest.mark.postgres,
    # broker.agents (enrollment) still calls Result.tuples(), which SQLAlchemy 2.1
    # deprecates; not ours to change.
    pytest.mark.filterwarnings("ignore:The Result.tuples\\(\\) method is deprecated"),
]

HOSTILE = (
    "a;rm -rf /",
    "a$(id)",
    "a`id`",
    "a|nc x 1",
    "a&&b",
    "a\r\nb",
    "a\nb",
    "a\x00b",
    "a\x1b[31mb",
    "\u0430dmin",  # Cyrillic a
    "b\u043eb",  # Cyrillic o
    "bob\uff11",  # fullwidth digit one
    "\uff41dmin",  # fullwidth a
    "a\u202eb",  # right-to-left override
    "a\u200bb",  # zero-width space
    "../x",
    "a/b",
    "a b",
    "A",
    "",
)
HOSTILE_DISPLAY = (
    "Ann\r\nX-Evil: 1",
    "Ann\x1b]52;c;ZXZpbA==\x07",
    "Ann\x1b[2J",
    "Ann\u202egnp.exe",
    "Ann\u200b",
    "Ann\x00",
    "Ann\x85",
    " Ann",
)


async def counts(world: World) -> tuple[int, ...]:
    found: list[int] = []
    async with world.services.db() as db:
        for col in (User.id, Customer.id, Agent.id, EnrollmentToken.id):
            found.append(int((await db.execute(select(func.count(col)))).scalar_one()))
    return tuple(found)


@pytest.fixture
async def world(api: Api) -> World:
    return await make_world(api)


async def test_hostile_user_and_customer_names_are_refused(world: World) -> None:
    """Every hostile name is a 400/422 with a sentence for users, customers and the routes
    that take a user name in the path; no account or customer is added."""
    before = await counts(world)
    for name in HOSTILE:
        for path, body in (
            ("/users", {"name": name, "role": "level1"}),
            ("/customers", {"name": name}),
            ("/users", {"name": "ok", "role": "level1", "customers": [name]}),
        ):
            status, data = await world.api.call("POST", path, body)
            assert status in (400, 422), (path, name, status, data)
            assert isinstance(data, dict), (path, name)
            assert data["error"]["message"], (path, name)
    for name in ("a;id", "a$(id)", "%2e%2e", "a%0d%0ab", "%D0%B0dmin"):
        for method, path in (
            ("GET", f"/users/{name}"),
            ("POST", f"/users/{name}/disable"),
            ("GET", f"/users/{name}/tokens"),
        ):
            status, _ = await world.api.call(method, path)
            assert status in (400, 404), (method, path, status)
    assert await counts(world) == before
    assert not [
        e for e in await audit_events(world.api) if e["action"] in ("user.add", "customer.add")
    ]


async def test_hostile_display_names_are_refused(world: World) -> None:
    """Display names with CR/LF, escape sequences, bidi or invisible characters are refused
    (they reach admins' terminals through the CLI); nothing is stored."""
    before = await counts(world)
    for text in HOSTILE_DISPLAY:
        for path, body in (
            ("/users", {"name": "ann", "role": "level1", "display_name": text}),
            ("/customers", {"name": "initech", "display_name": text}),
        ):
            status, data = await world.api.call("POST", path, body)
            assert isinstance(data, dict)
            assert (status, data["error"]["code"]) == (400, "invalid_display_name"), (path, text)
    assert await counts(world) == before
    await world.api.call(
        "POST",
        "/customers",
        {"name": "initech", "display_name": "Initech GmbH & Co. <KG>"},
        expect=201,
    )


async def test_hostile_labels_and_token_fields_are_refused(world: World) -> None:
    """Enrollment tokens with hostile label keys or values, customers or consent words are
    refused and none is stored."""
    before = await counts(world)
    bodies: list[dict[str, object]] = []
    for text in HOSTILE:
        if text != "a/b":  # label keys may hold '/' (as in team/web)
            bodies.append({"customer": "acme", "labels": {text or "x;": "v"}})
        bodies.append({"customer": "acme", "labels": {"role": text + "\n"}})
        bodies.append({"customer": text or "-x"})
    bodies += [
        {"customer": "acme", "consent": c} for c in ("attended;id", "ATTENDED", "\u0430ttended")
    ]
    for body in bodies:
        status, data = await world.api.call("POST", "/enrollment-tokens", body)
        assert status in (400, 404, 422), (body, status, data)
    assert await counts(world) == before


async def test_hostile_agent_names_and_enrollment_tokens_are_refused(world: World) -> None:
    """An agent enrolling under a hostile name, or with a hostile token string, is refused
    (audited) and the token stays unused."""
    token = await world.call(
        "POST", "/enrollment-tokens", {"customer": "acme"}, "admin", expect=201
    )
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()
    facts = {
        "hostname": "web09",
        "os": "Debian GNU/Linux",
        "os_version": "12",
        "kernel": "6.1.0-18-amd64",
        "arch": "x86_64",
        "users": ["ann"],
    }
    before = await counts(world)
    client = world.api.client
    for name in HOSTILE:
        body = {"token": token["token"], "name": name, "public_key": public, "facts": facts}
        resp = await client.post("/agent/v1/enroll", json=body)
        assert resp.status in (400, 422), (name, resp.status)
    for bad in ("a;rm -rf /", "$(id)", str(token["token"]) + "\r\nX: 1", "\u0430" * 40):
        body = {"token": bad, "name": "web09", "public_key": public, "facts": facts}
        resp = await client.post("/agent/v1/enroll", json=body)
        assert 400 <= resp.status < 500, (bad, resp.status)
    assert await counts(world) == before
    body = {"token": token["token"], "name": "web09", "public_key": public, "facts": facts}
    resp = await client.post("/agent/v1/enroll", json=body)
    assert resp.status == 200, await resp.text()
    assert [e for e in await audit_events(world.api, "agent.enroll") if e["outcome"] == "denied"]


async def test_hostile_bearer_tokens_are_refused_and_audited(world: World) -> None:
    """Bearer tokens with metacharacters, look-alikes or other schemes get 401 and an
    auth.refused event each; none reaches a handler."""
    refused_before = refusals_of(await audit_events(world.api), "auth.refused")
    good = world.bob
    values = [
        "Bearer a;rm -rf /",
        "Bearer $(id)",
        "Bearer " + good.replace("_", "\uff3f"),
        "Bearer " + good + "x",
        "Bearer " + good[:-1],
        "Basic " + good,
        "bearer",
        "Bearer " + "A" * 5000,
    ]
    for value in values:
        resp = await world.api.client.get("/api/v1/me", headers={"Authorization": value})
        assert resp.status == 401, value[:40]
    after = refusals_of(await audit_events(world.api), "auth.refused")
    assert after - refused_before == len(values)
