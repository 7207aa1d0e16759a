"""The HTTP side's limits (docs/security.md, "Limits"), each tried at the limit on a real
server on loopback: request bodies on the API and the console (with and without a length),
ticket attachments, signed agent requests, API tokens per person, and failed sign-ins.

Every refusal must come with its status, the stable error shape and a sentence that says what
to do, store nothing, and (for refusals of access) leave an audit event. The sessions' limits
(terminal and tunnel messages, sessions per person, terminal tickets) are in
test_security_limits_live.py."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pytest_aiohttp import AiohttpClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import InstrumentedAttribute

from agent.signing import sign_request
from broker.agents.signed_requests import SIGNED_BODY_MAX
from broker.app import CONFIG, create_app
from broker.config import load_config
from broker.db.models_audit import AuditEvent
from broker.db.models_console import ConsoleSession
from broker.db.models_staff import ApiToken, Customer, User
from broker.db.models_tickets import Ticket, TicketAttachment, TicketNote
from broker.services import SERVICES, Services
from broker.tickets.help_request import HELP_PATH
from tests.component.test_agents_harness import start_agents_app
from tests.component.test_tickets_support import make_world
from tests.support.api import Api, admin_token
from tests.support.console import PASSWORD, ConsoleClient, add_customer, add_staff, csrf_of

pytestmark = pytest.mark.postgres

MIB = 1024 * 1024


async def count(services: Services, column: InstrumentedAttribute[Any]) -> int:
    """Rows of the column's table (the column names the table)."""
    async with services.db() as db:
        return int((await db.execute(select(func.count(column)))).scalar_one())


async def audited(services: Services, action: str) -> list[AuditEvent]:
    async with services.db() as db:
        rows = await db.execute(
            select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)
        )
        return list(rows.scalars().all())


def error_of(data: object, code: str) -> str:
    """The message of a ``{"error": {"code", "message"}}`` answer with exactly that shape."""
    assert isinstance(data, dict), data
    assert set(data) == {"error"}, data
    assert set(data["error"]) == {"code", "message"}, data
    assert data["error"]["code"] == code, data
    message = data["error"]["message"]
    assert isinstance(message, str)
    assert message
    return message


async def app_with(
    data_dir: Path, aiohttp_client: AiohttpClient, **overrides: object
) -> tuple[Api, Services]:
    """The broker app on loopback with some settings changed (a cheap limit to reach)."""
    app = create_app(load_config(data_dir, env={}, overrides=overrides))
    api = Api(await aiohttp_client(app), admin_token(data_dir))
    return api, app[SERVICES]


async def chunks_of(*parts: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    """A body sent chunked, without a Content-Length, ``size`` bytes at a time."""
    for part in parts:
        for start in range(0, len(part), size):
            yield part[start : start + size]


# -- HTTP request bodies --------------------------------------------------------------------


async def test_json_body_at_the_limit_is_taken_and_one_byte_more_is_413(api: Api) -> None:
    """A JSON body of exactly max_body_bytes is served; one byte more is 413 body_too_large
    and stores nothing."""
    services = api.client.app[SERVICES]
    limit = services.config.max_body_bytes
    assert limit == MIB
    headers = {**api.headers(api.admin_token), "Content-Type": "application/json"}
    fits = b'{"name": "acme"}'
    fits += b" " * (limit - len(fits))  # JSON allows any amount of trailing white space
    resp = await api.client.post("/api/v1/customers", data=io.BytesIO(fits), headers=headers)
    assert resp.status == 201, await resp.text()
    before = await count(services, Customer.id)
    over = b'{"name": "globex"}'
    over += b" " * (limit + 1 - len(over))
    resp = await api.client.post("/api/v1/customers", data=io.BytesIO(over), headers=headers)
    assert resp.status == 413
    message = error_of(await resp.json(), "body_too_large")
    assert f"larger than the broker takes ({limit} bytes" in message
    assert "send less" in message
    assert await count(services, Customer.id) == before
    await api.call("GET", "/customers/globex", expect=404)


async def test_chunked_body_that_grows_past_the_limit_is_413(api: Api) -> None:
    """A body sent without a Content-Length is counted as it arrives: under the limit it is
    served, past the limit it is 413 body_too_large and stores nothing."""
    services = api.client.app[SERVICES]
    headers = {**api.headers(api.admin_token), "Content-Type": "application/json"}
    small = chunks_of(b'{"name": "acme"', b" " * 100_000, b"}")
    resp = await api.client.post("/api/v1/customers", data=small, headers=headers)
    assert resp.status == 201, await resp.text()
    assert resp.request_info.headers.get("Transfer-Encoding") == "chunked"
    before = await count(services, Customer.id)
    big = chunks_of(b'{"name": "globex"', b" " * (2 * MIB), b"}")
    resp = await api.client.post("/api/v1/customers", data=big, headers=headers)
    assert "Content-Length" not in resp.request_info.headers
    assert resp.status == 413
    error_of(await resp.json(), "body_too_large")
    assert await count(services, Customer.id) == before


def browser(api: Api) -> ConsoleClient:
    return ConsoleClient(api.client, api.client.app[CONFIG].public_url)


async def raw_form(b: ConsoleClient, path: str, body: bytes) -> tuple[int, str]:
    """POST an urlencoded form body as the browser ``b`` (its cookies, our Origin)."""
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Origin": b.public_url,
        "Cookie": "; ".join(f"{k}={v}" for k, v in b.cookies.items()),
    }
    b.client.session.cookie_jar.clear()
    resp = await b.client.post(path, data=io.BytesIO(body), headers=headers, allow_redirects=False)
    return resp.status, await resp.text()


async def test_console_form_over_the_limit_is_413_with_a_page_that_says_what_to_do(
    api: Api,
) -> None:
    """A note form over max_body_bytes gets a 413 page asking to shorten it and adds no
    note; a sign-in form over it gets the sign-in page with that sentence and no session."""
    services = api.client.app[SERVICES]
    limit = services.config.max_body_bytes
    await add_customer(api, "acme")
    await add_staff(api, "bob", "level2", ["acme"])
    _, ticket = await api.call(
        "POST", "/tickets", {"title": "VPN drops", "customer": "acme", "level": 2}, expect=201
    )
    assert isinstance(ticket, dict)
    ref = str(ticket["id"])
    await api.call("POST", f"/tickets/{ref}/assign", {"user": "bob"}, expect=200)
    b = browser(api)
    await b.enrol("bob")
    page = await b.get(f"/console/tickets/{ref}")
    head = f"_csrf={quote(csrf_of(page.text))}&visibility=internal&text=".encode()
    status, _ = await raw_form(b, f"/console/tickets/{ref}/notes", head + b"x" * 1000)
    assert status == 303  # the route takes a note of ordinary size
    notes = await count(services, TicketNote.id)
    status, text = await raw_form(b, f"/console/tickets/{ref}/notes", head + b"x" * limit)
    assert status == 413
    assert f"larger than {limit} bytes" in text
    assert "shorten the text" in text
    assert await count(services, TicketNote.id) == notes

    stranger = browser(api)
    form = await stranger.get("/console/login")
    sessions = await count(services, ConsoleSession.id)
    fields = f"_csrf={quote(csrf_of(form.text))}&user=bob&password={quote(PASSWORD)}&code="
    status, text = await raw_form(stranger, "/console/login", fields.encode() + b"0" * limit)
    assert status == 413
    assert "shorten the text" in text
    assert 'name="password"' in text  # the sign-in form again, to try once more
    assert await count(services, ConsoleSession.id) == sessions


# -- ticket attachments ---------------------------------------------------------------------


async def upload_streamed(api: Api, token: str, ref: str, size: int) -> aiohttp.ClientResponse:
    """Upload a ``size``-byte file as multipart, streamed chunked (no Content-Length)."""
    head = (
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="dump.bin"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n"
    )
    return await api.client.post(
        f"/api/v1/tickets/{ref}/attachments",
        data=chunks_of(head, b"x" * size, b"\r\n--B--\r\n"),
        headers={**Api.headers(token), "Content-Type": "multipart/form-data; boundary=B"},
    )


async def test_attachment_limit_holds_for_streamed_uploads_and_stores_nothing_over_it(
    data_dir: Path, aiohttp_client: AiohttpClient
) -> None:
    """An upload streamed without a length is bounded by max_attachment_bytes (not by the
    smaller body limit): exactly the limit is stored, one byte more is 413
    attachment_too_large with no row, no file (not even a staged one), nothing on the ticket."""
    limit = 2 * MIB  # above max_body_bytes (1 MiB), as the default 10 MiB is
    api, services = await app_with(data_dir, aiohttp_client, max_attachment_bytes=limit)
    world = await make_world(api)
    ref = await world.ticket()
    root = services.config.attachments_dir
    resp = await upload_streamed(api, world.lena, ref, limit)
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["size"] == limit
    other = await world.ticket()
    rows = await count(services, TicketAttachment.id)
    resp = await upload_streamed(api, world.lena, other, limit + 1)
    assert resp.status == 413
    message = error_of(await resp.json(), "attachment_too_large")
    assert f"larger than {limit} bytes" in message
    assert "compress it" in message
    assert await count(services, TicketAttachment.id) == rows
    assert [p.name for p in root.rglob("*") if p.is_file()] == ["dump.bin"]  # the first one
    assert (await world.show(other))["attachments"] == []


# -- signed agent requests ------------------------------------------------------------------


async def test_signed_agent_request_over_64_kib_is_413_and_audited_however_it_is_sent(
    data_dir: Path, aiohttp_client: AiohttpClient
) -> None:
    """On /agent/v1/help a correctly signed body over 64 KiB is 413 body_too_large whether it
    has a length, comes chunked, or grows past the app's 1 MiB: audited, no ticket made."""
    async with start_agents_app(data_dir, aiohttp_client) as agents:
        await agents.customer("acme")
        agent = await agents.agent()
        key = agent.key.pyca_key
        assert isinstance(key, Ed25519PrivateKey)
        services = agents.services
        tickets = await count(services, Ticket.id)
        over = SIGNED_BODY_MAX + 1
        for size, chunked in ((over, False), (over, True), (2 * MIB, True)):
            body = b'{"text": "' + b"x" * (size - 12) + b'"}'
            assert len(body) == size
            signed = sign_request(key, agent.id, body, time.time(), path=HELP_PATH)
            headers = {"Content-Type": "application/json", **signed}
            data: Any = chunks_of(body) if chunked else io.BytesIO(body)
            resp = await agents.api.client.post(HELP_PATH, data=data, headers=headers)
            assert resp.status == 413, (size, chunked)
            message = error_of(await resp.json(), "body_too_large")
            assert f"larger than {SIGNED_BODY_MAX} bytes" in message
        refusals = await audited(services, "agent.signed_request")
        assert [(e.actor, e.outcome, e.details["reason"]) for e in refusals] == [
            (f"agent:{agent.id}", "denied", "body too large")
        ] * 3
        assert await count(services, Ticket.id) == tickets


# -- API tokens per person ------------------------------------------------------------------


async def live_tokens(services: Services, name: str) -> int:
    now = dt.datetime.now(dt.UTC)
    async with services.db() as db:
        query = (
            select(func.count(ApiToken.id))
            .join(User)
            .where(User.name == name, ApiToken.revoked_at.is_(None), ApiToken.expires_at > now)
        )
        return int((await db.execute(query)).scalar_one())


async def test_token_limit_counts_live_tokens_only_and_holds_under_concurrency(
    data_dir: Path, aiohttp_client: AiohttpClient
) -> None:
    """At max_tokens_per_user live tokens the next mint is 409 token_limit (audited, nothing
    stored), through the API and the sign-in; revoked and expired tokens do not count; and
    mints racing for the last place get it once."""
    api, services = await app_with(data_dir, aiohttp_client, max_tokens_per_user=3)
    body = {"name": "fred", "role": "level1", "password": "fred's long password"}
    await api.call("POST", "/users", body, expect=201)
    minted = []
    for _ in range(3):
        _, data = await api.call("POST", "/users/fred/tokens", {}, expect=201)
        assert isinstance(data, dict)
        minted.append(str(data["id"]))
    rows = await count(services, ApiToken.id)
    status, data = await api.call("POST", "/users/fred/tokens", {})
    assert status == 409
    message = error_of(data, "token_limit")
    assert "fred has 3 live API tokens and the limit is 3" in message
    assert "revoke" in message
    login = {"user": "fred", "password": "fred's long password"}
    status, data = await api.call("POST", "/auth/login", login, token=None)
    assert status == 409
    error_of(data, "token_limit")
    assert await count(services, ApiToken.id) == rows
    refused = await audited(services, "token.refused")
    assert [(e.target, e.outcome, e.details["code"]) for e in refused] == [
        ("fred", "denied", "token_limit")
    ] * 2

    await api.call("DELETE", f"/tokens/{minted[0]}", expect=204)
    await api.call("POST", "/users/fred/tokens", {}, expect=201)
    async with services.db() as db, db.begin():
        past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        await db.execute(update(ApiToken).where(ApiToken.id == minted[1]).values(expires_at=past))
    assert await live_tokens(services, "fred") == 2
    answers = await asyncio.gather(*(api.call("POST", "/users/fred/tokens", {}) for _ in range(6)))
    assert sorted(status for status, _ in answers) == [201] + [409] * 5
    assert await live_tokens(services, "fred") == 3


# -- failed sign-ins ------------------------------------------------------------------------


async def login_from(api: Api, source: str, user: str, password: str) -> tuple[int, dict[str, Any]]:
    """POST /api/v1/auth/login from the loopback address ``source`` (127.0.0.x)."""
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        url = api.client.make_url("/api/v1/auth/login")
        async with session.post(url, json={"user": user, "password": password}) as resp:
            data = await resp.json()
            assert isinstance(data, dict)
            return resp.status, data


async def test_failed_sign_ins_throttle_the_account_and_the_source_on_every_path(
    api: Api,
) -> None:
    """Ten failures for an account from one address: the account is refused everywhere even
    with its password (API and console), anyone is refused from that address with the same
    answer for unknown names, both audited; other accounts elsewhere are not touched."""
    services = api.client.app[SERVICES]
    for name in ("hank", "ivy"):
        await add_staff(api, name, "level2")
    attacker, elsewhere = "127.0.0.2", "127.0.0.3"
    for _ in range(10):
        status, data = await login_from(api, attacker, "hank", "not the password")
        assert status == 401
        error_of(data, "login_failed")
    rows = await count(services, ApiToken.id)
    answers = [
        await login_from(api, elsewhere, "hank", PASSWORD),  # the account
        await login_from(api, attacker, "ivy", PASSWORD),  # the source
        await login_from(api, attacker, "nobody", PASSWORD),  # the source, an unknown name
    ]
    for status, data in answers:
        assert status == 401
        assert "wait 15 minutes" in error_of(data, "throttled")
    assert answers[1][1] == answers[2][1]
    assert await count(services, ApiToken.id) == rows
    status, _ = await login_from(api, elsewhere, "ivy", PASSWORD)
    assert status == 201
    page = await browser(api).sign_in("hank", code="123456")
    assert page.status == 429
    assert "Too many failed sign-ins" in page.text
    throttled = await audited(services, "login.throttled")
    assert [(e.actor, e.source, e.outcome) for e in throttled] == [
        ("hank", elsewhere, "denied"),
        ("ivy", attacker, "denied"),
        ("nobody", attacker, "denied"),
        ("hank", "127.0.0.1", "denied"),
    ]


async def test_console_failures_throttle_the_api_sign_in_too(api: Api) -> None:
    """The console and /api/v1/auth/login share one throttle: ten console failures refuse
    the right password on the API (401 throttled, audited, no token)."""
    services = api.client.app[SERVICES]
    await add_staff(api, "gus", "level2")
    for _ in range(10):
        page = await browser(api).sign_in("gus", "not the password", "000000")
        assert page.status == 401
    rows = await count(services, ApiToken.id)
    status, data = await login_from(api, "127.0.0.4", "gus", PASSWORD)
    assert status == 401
    error_of(data, "throttled")
    assert await count(services, ApiToken.id) == rows
    assert [e.actor for e in await audited(services, "login.throttled")] == ["gus"]
