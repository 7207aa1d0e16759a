"""The REST API for staff, tokens, customers and the audit log, on SQLite and PostgreSQL."""

from __future__ import annotations

import io

import asyncssh
import pyotp
import pytest
from sqlalchemy import select

from broker.db.models_staff import User
from broker.services import SERVICES
from tests.support.api import Api, refusals_of

pytestmark = pytest.mark.postgres


def ssh_pub() -> str:
    return asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()


async def audit_list(api: Api) -> list[dict[str, object]]:
    _, data = await api.call("GET", "/audit?limit=1000", expect=200)
    assert isinstance(data, list)
    return data


async def audit_actions(api: Api) -> list[str]:
    return [str(e["action"]) for e in await audit_list(api)]


async def test_add_and_list_users(api: Api) -> None:
    """An admin adds a level-2 user with a key and a customer scope; the list shows both."""
    await api.call("POST", "/customers", {"name": "acme"}, expect=201)
    key = ssh_pub()
    _, user = await api.call(
        "POST",
        "/users",
        {"name": "alice", "role": "level2", "ssh_keys": [key], "customers": ["acme"]},
        expect=201,
    )
    assert isinstance(user, dict)
    assert user["customers"] == ["acme"]
    assert user["ssh_keys"][0]["fingerprint"].startswith("SHA256:")
    _, users = await api.call("GET", "/users", expect=200)
    assert isinstance(users, list)
    assert sorted(u["name"] for u in users) == ["admin", "alice"]
    assert "user.add" in await audit_actions(api)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"name": "Alice", "role": "level2"}, 400, "invalid_name"),
        ({"name": "a" * 65, "role": "level2"}, 422, "validation_failed"),
        ({"name": "bob;rm", "role": "level2"}, 400, "invalid_name"),
        ({"name": "bob", "role": "god"}, 400, "invalid_input"),
        ({"name": "bob", "role": "level1", "ssh_keys": ["not a key"]}, 400, "invalid_ssh_key"),
        ({"name": "bob", "role": "level1", "customers": ["nobody"]}, 404, "not_found"),
        ({"name": "bob", "role": "level1", "password": "short"}, 400, "invalid_input"),
        ({"name": "bob", "role": "level1", "extra": 1}, 422, "validation_failed"),
    ],
)
async def test_bad_user_input_changes_nothing(
    api: Api, body: dict[str, object], status: int, code: str
) -> None:
    """Each malformed account is refused with a clear code and no account is stored."""
    got, data = await api.call("POST", "/users", body)
    assert got == status
    assert isinstance(data, dict)
    assert data["error"]["code"] == code
    assert data["error"]["message"]
    _, users = await api.call("GET", "/users", expect=200)
    assert isinstance(users, list)
    assert [u["name"] for u in users] == ["admin"]


async def test_duplicate_user_and_key(api: Api) -> None:
    """A second account of one name, or one key for two people, is a conflict."""
    key = ssh_pub()
    await api.call(
        "POST", "/users", {"name": "bob", "role": "level1", "ssh_keys": [key]}, expect=201
    )
    await api.call("POST", "/users", {"name": "bob", "role": "level1"}, expect=409)
    await api.call(
        "POST", "/users", {"name": "eve", "role": "level1", "ssh_keys": [key]}, expect=409
    )
    await api.call("GET", "/users/eve", expect=404)


async def test_malformed_and_oversized_bodies(api: Api) -> None:
    """Broken JSON, the wrong content type and an oversized body are refused clearly."""
    c = api.client
    h = api.headers(api.admin_token)
    r = await c.post(
        "/api/v1/users", data=b"{not json", headers={**h, "Content-Type": "application/json"}
    )
    assert r.status == 400
    assert (await r.json())["error"]["code"] == "malformed_json"
    r = await c.post("/api/v1/users", data=b"name=x", headers={**h, "Content-Type": "text/plain"})
    assert r.status == 400
    big = b'{"name": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    r = await c.post(
        "/api/v1/users", data=io.BytesIO(big), headers={**h, "Content-Type": "application/json"}
    )
    assert r.status == 413
    assert (await r.json())["error"]["code"] == "body_too_large"


async def test_missing_expired_revoked_tokens(api: Api) -> None:
    """Requests without a valid token are refused with 401 and audited."""
    await api.call("GET", "/users", token=None, expect=401)
    await api.call("GET", "/users", token="slt_aaaaaaaaaaaa_" + "b" * 40, expect=401)
    await api.call("GET", "/users", token="garbage", expect=401)
    tok = await api.staff_token("carol", "level1")
    _, mine = await api.call("GET", "/users/carol/tokens", token=tok, expect=200)
    assert isinstance(mine, list)
    await api.call("DELETE", f"/tokens/{mine[0]['id']}", token=tok, expect=204)
    await api.call("GET", "/me", token=tok, expect=401)
    r = await api.client.get("/api/v1/me", headers={"Authorization": "Basic abc"})
    assert r.status == 401
    assert refusals_of(await audit_list(api), "auth.refused") >= 4


async def test_token_in_query_string_is_refused(api: Api) -> None:
    """A credential in the URL is refused even when it is valid, and audited."""
    for name in ("token", "access_token", "api_key"):
        r = await api.client.get(f"/api/v1/me?{name}={api.admin_token}")
        assert r.status == 400
        assert (await r.json())["error"]["code"] == "credential_in_query"
    assert refusals_of(await audit_list(api), "auth.refused") == 3


async def test_scopes_no_wider_than_owner(api: Api) -> None:
    """A level-1 user cannot mint an admin token; a read-only token cannot write."""
    tok = await api.staff_token("dave", "level1")
    status, data = await api.call("POST", "/users/dave/tokens", {"scopes": ["admin"]}, token=tok)
    assert status == 403
    assert isinstance(data, dict)
    assert data["error"]["code"] == "scope_too_wide"
    await api.call("POST", "/users/dave/tokens", {"scopes": ["root"]}, token=tok, expect=403)
    await api.call("POST", "/users/admin/tokens", {}, token=tok, expect=403)
    _, ro = await api.call(
        "POST", "/users/dave/tokens", {"scopes": ["read"]}, token=tok, expect=201
    )
    assert isinstance(ro, dict)
    status, data = await api.call("POST", "/customers", {"name": "x"}, token=str(ro["token"]))
    assert status == 403
    actions = await audit_actions(api)
    assert "token.refused" in actions
    assert "api.scope_refused" in actions


async def test_disable_revokes_tokens_at_once(api: Api) -> None:
    """Disabling a user makes every one of their tokens fail on the next request."""
    tok = await api.staff_token("erin", "level2")
    await api.call("GET", "/me", token=tok, expect=200)
    await api.call("POST", "/users/erin/disable", expect=200)
    await api.call("GET", "/me", token=tok, expect=401)


async def test_token_limit(api: Api) -> None:
    """A user cannot hold more live tokens than the limit."""
    await api.call("POST", "/users", {"name": "fred", "role": "level1"}, expect=201)
    limit = api.client.app[SERVICES].config.max_tokens_per_user
    for _ in range(limit):
        await api.call("POST", "/users/fred/tokens", {}, expect=201)
    status, data = await api.call("POST", "/users/fred/tokens", {})
    assert status == 409
    assert isinstance(data, dict)
    assert data["error"]["code"] == "token_limit"


async def test_login_with_password_and_single_use_totp(api: Api) -> None:
    """Sign-in needs the password and a fresh TOTP code; a code works once; answers match."""
    await api.call(
        "POST",
        "/users",
        {"name": "gina", "role": "level2", "password": "correct horse battery"},
        expect=201,
    )
    services = api.client.app[SERVICES]
    secret = pyotp.random_base32()
    async with services.db() as db, db.begin():
        user = (await db.execute(select(User).where(User.name == "gina"))).scalar_one()
        user.totp_secret = secret
    code = pyotp.TOTP(secret).at(services.clock())
    body = {"user": "gina", "password": "correct horse battery", "totp": code}
    _, data = await api.call("POST", "/auth/login", body, token=None, expect=201)
    assert isinstance(data, dict)
    await api.call("GET", "/me", token=str(data["token"]), expect=200)
    _, again = await api.call("POST", "/auth/login", body, token=None, expect=401)
    _, unknown = await api.call(
        "POST", "/auth/login", {"user": "nobody", "password": "whatever123"}, token=None, expect=401
    )
    assert isinstance(again, dict)
    assert isinstance(unknown, dict)
    assert again["error"] == unknown["error"]


async def test_login_throttled_per_account(api: Api) -> None:
    """After ten failures the account is throttled even with the right password."""
    await api.call(
        "POST",
        "/users",
        {"name": "hank", "role": "level1", "password": "right password"},
        expect=201,
    )
    for _ in range(10):
        await api.call(
            "POST", "/auth/login", {"user": "hank", "password": "wrong"}, token=None, expect=401
        )
    _, data = await api.call(
        "POST",
        "/auth/login",
        {"user": "hank", "password": "right password"},
        token=None,
        expect=401,
    )
    assert isinstance(data, dict)
    assert data["error"]["code"] == "throttled"
    assert "login.throttled" in await audit_actions(api)


async def test_login_with_control_characters_in_the_name_is_refused_and_audited(api: Api) -> None:
    """A sign-in whose user name holds NUL or other control characters is refused like any
    wrong name (not a 503 from a database that cannot store NUL), and audited, escaped."""
    for name in ("eve\x00admin", "eve\x1b[2J", "\x00" * 64):
        _, data = await api.call(
            "POST", "/auth/login", {"user": name, "password": "whatever123"}, token=None, expect=401
        )
        assert isinstance(data, dict)
        assert data["error"]["code"] == "login_failed"
    failed = [e for e in await audit_list(api) if e["action"] == "login.failed"]
    actors = [str(e["actor"]) for e in failed]
    assert "eve\\x00admin" in actors
    assert "eve\\x1b[2J" in actors
    assert not any("\x00" in a or "\x1b" in a for a in actors)


async def test_customers(api: Api) -> None:
    """Customers are added once, listed and shown; a scoped user sees only theirs."""
    await api.call("POST", "/customers", {"name": "acme", "display_name": "ACME Corp"}, expect=201)
    await api.call("POST", "/customers", {"name": "globex"}, expect=201)
    await api.call("POST", "/customers", {"name": "acme"}, expect=409)
    await api.call("POST", "/customers", {"name": "../etc"}, expect=400)
    tok = await api.staff_token("ivy", "level2", customers=["acme"])
    _, seen = await api.call("GET", "/customers", token=tok, expect=200)
    assert isinstance(seen, list)
    assert [c["name"] for c in seen] == ["acme"]
    await api.call("GET", "/customers/globex", token=tok, expect=404)
    _, one = await api.call("GET", "/customers/acme", token=tok, expect=200)
    assert isinstance(one, dict)
    assert one["display_name"] == "ACME Corp"


async def test_openapi_describes_every_route(api: Api) -> None:
    """Every /api/v1 route the server answers is in the OpenAPI document, and nothing else."""
    r = await api.client.get("/api/v1/openapi.json")
    doc = await r.json()
    described = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    served = {
        (route.method, route.resource.canonical)
        for route in api.client.app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith("/api/v1/")
        and route.method != "HEAD"
        and route.resource.canonical != "/api/v1/openapi.json"
    }
    assert described == served
    assert doc["openapi"].startswith("3.")


async def test_openapi_references_all_resolve(api: Api) -> None:
    """Every $ref in the OpenAPI document names a schema the document holds: two modules'
    models of one class name (agent enrollment tokens, staff API tokens) once left routes
    pointing at names pydantic had prefixed with their modules."""
    r = await api.client.get("/api/v1/openapi.json")
    doc = await r.json()
    schemas = doc["components"]["schemas"]
    refs: list[str] = []

    def collect(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(doc)
    assert refs
    prefix = "#/components/schemas/"
    unresolved = sorted({ref for ref in refs if ref.removeprefix(prefix) not in schemas})
    assert unresolved == []
    assert all("__" not in name for name in schemas), sorted(schemas)


async def test_unknown_route_has_json_error(api: Api) -> None:
    """Unknown API paths answer with the stable JSON error shape."""
    status, data = await api.call("GET", "/nothing-here")
    assert status == 404
    assert isinstance(data, dict)
    assert data["error"]["code"] == "not_found"


async def test_health(api: Api) -> None:
    """The health endpoint says ok while the database answers."""
    r = await api.client.get("/healthz")
    assert r.status == 200
    assert (await r.json())["status"] == "ok"
