"""The console's browser defences: CSRF on forms and on REST calls made with the cookie,
Origin checks, the Content-Security-Policy, static files without traversal, no credentials
in URLs, and closing live pages when an account is disabled."""

from __future__ import annotations

import asyncio
import json

import pytest

from broker.app import CONFIG
from tests.support.api import Api
from tests.support.console import ConsoleClient, add_customer, add_staff, build_front_end

pytestmark = pytest.mark.postgres


def browser(api: Api) -> ConsoleClient:
    return ConsoleClient(api.client, api.client.app[CONFIG].public_url)


@pytest.fixture
async def signed_in(api: Api) -> ConsoleClient:
    await add_customer(api, "acme")
    await add_staff(api, "bob", "level2", ["acme"])
    b = browser(api)
    await b.enrol("bob")
    return b


async def _denials(api: Api, action: str) -> int:
    _, events = await api.call("GET", f"/audit?action={action}", expect=200)
    assert isinstance(events, list)
    return len(events)


async def test_pages_carry_a_strict_csp(signed_in: ConsoleClient) -> None:
    """Every page allows scripts and styles from /static only, and no framing."""
    for path in ("/console/", "/console/settings", "/console/sessions"):
        page = await signed_in.get(path)
        assert page.status == 200, path
        csp = page.headers["Content-Security-Policy"]
        assert "script-src 'self';" in csp
        assert "style-src 'self';" in csp
        assert "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert "unsafe-eval" not in csp.replace("wasm-", "")
        assert "<script>" not in page.text
        assert " style=" not in page.text
        assert page.headers["X-Frame-Options"] == "DENY"


async def test_form_without_csrf_token_is_refused_and_audited(
    api: Api, signed_in: ConsoleClient
) -> None:
    """A POST with the cookie but without the form's token changes nothing."""
    before = await _denials(api, "console.csrf_refused")
    page = await signed_in.request("POST", "/console/settings/language", data={"language": "de"})
    assert page.status == 403
    wrong = await signed_in.request(
        "POST", "/console/settings/language", data={"language": "de", "_csrf": "x" * 43}
    )
    assert wrong.status == 403
    assert await _denials(api, "console.csrf_refused") == before + 2
    settings = await signed_in.get("/console/settings")
    assert 'value="auto" selected' in settings.text


async def test_cross_origin_form_is_refused(api: Api, signed_in: ConsoleClient) -> None:
    """A form posted from another site (evil, null or look-alike Origin) is refused."""
    from tests.support.console import csrf_of

    token = csrf_of((await signed_in.get("/console/settings")).text)
    for origin in ("https://evil.example", "null", "https://127.0.0.1.evil.example"):
        page = await signed_in.request(
            "POST",
            "/console/settings/language",
            data={"language": "de", "_csrf": token},
            origin=origin,
        )
        assert page.status == 403, origin
    fetch_site = await signed_in.request(
        "POST",
        "/console/settings/language",
        data={"language": "de", "_csrf": token},
        origin=None,
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert fetch_site.status == 403
    assert await _denials(api, "console.origin_refused") >= 4


async def test_rest_api_with_cookie_needs_the_csrf_header(signed_in: ConsoleClient) -> None:
    """Console JavaScript may call /api/v1 with the cookie: reads freely, writes only with
    X-CSRF-Token."""
    me = await signed_in.get("/api/v1/me")
    assert me.status == 200
    assert '"bob"' in me.text
    page = await signed_in.get("/console/settings")
    body = {"title": "Printer", "customer": "acme"}
    bare = await signed_in.request("POST", "/api/v1/tickets", json=body)
    assert bare.status == 403
    assert "csrf_failed" in bare.text
    ok = await signed_in.request(
        "POST", "/api/v1/tickets", json=body, headers=signed_in.csrf_header(page.text)
    )
    assert ok.status == 201, ok.text
    evil = await signed_in.request(
        "POST",
        "/api/v1/tickets",
        json=body,
        headers=signed_in.csrf_header(page.text),
        origin="https://evil.example",
    )
    assert evil.status == 403


async def test_no_cookie_means_no_api_access(api: Api) -> None:
    """Without a session the API answers 401, and credentials in a URL are refused."""
    anonymous = browser(api)
    assert (await anonymous.get("/api/v1/me")).status == 401
    in_url = await anonymous.get("/api/v1/me?token=slt_abc")
    assert in_url.status == 400
    assert "credential_in_query" in in_url.text


@pytest.fixture(scope="session")
def front_end() -> None:
    """web/dist, built as `make web` builds it."""
    build_front_end()


@pytest.mark.usefixtures("front_end")
async def test_static_files_cannot_be_left(api: Api) -> None:
    """/static/ serves the built front end and nothing outside it, whatever the spelling."""
    b = browser(api)
    assert (await b.get("/static/console.css")).status == 200
    for path in (
        "/static/../broker/app.py",
        "/static/%2e%2e/broker/app.py",
        "/static/%2e%2e%2fbroker%2fapp.py",
        "/static/..%2f..%2fpyproject.toml",
        "/static/....//pyproject.toml",
        "/static/%252e%252e/pyproject.toml",
        "/static//etc/passwd",
        "/static/..\\..\\pyproject.toml",
    ):
        page = await b.get(path)
        assert page.status in (403, 404), path
        assert "[project]" not in page.text, path
        assert "create_app" not in page.text, path


async def test_disabling_an_account_closes_its_live_pages(
    api: Api, signed_in: ConsoleClient
) -> None:
    """An open live page of a person gets "signed_out" and ends when an admin disables them."""
    headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in signed_in.cookies.items())}
    api.client.session.cookie_jar.clear()
    response = await api.client.get("/console/events?view=queue", headers=headers)
    assert response.status == 200
    first = await response.content.readuntil(b"\n\n")
    assert first.startswith(b"retry:")
    await api.call("POST", "/users/bob/disable", expect=200)
    # The watcher checks every 2 s: the stream must end well within 5 s.
    async with asyncio.timeout(5):
        rest = await response.content.read()
    assert b"event: signed_out" in rest
    assert (await signed_in.get("/console/")).status == 303


async def test_terminal_upgrade_checks_origin_and_one_time_tickets(
    api: Api, signed_in: ConsoleClient
) -> None:
    """The terminal WebSocket refuses foreign origins even with the cookie, and a terminal
    ticket works once: a second use is refused."""
    import aiohttp

    from broker.app import CONFIG as CONFIG_KEY

    public_url = api.client.app[CONFIG_KEY].public_url
    cookie = "; ".join(f"{k}={v}" for k, v in signed_in.cookies.items())
    api.client.session.cookie_jar.clear()
    for origin in ("https://evil.example", "null", None, public_url + ".evil.example"):
        headers = {"Cookie": cookie}
        if origin is not None:
            headers["Origin"] = origin
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await api.client.ws_connect("/console/ws/terminal", headers=headers)
        assert refused.value.status == 403, origin
    _, ticket = await api.call(
        "POST", "/tickets", {"title": "VPN", "customer": "acme", "level": 2}, expect=201
    )
    assert isinstance(ticket, dict)
    page = await signed_in.get("/console/settings")
    minted = await signed_in.request(
        "POST",
        "/api/v1/sessions/terminal-tickets",
        json={"ticket_id": ticket["id"], "mode": "open"},
        headers=signed_in.csrf_header(page.text),
    )
    assert minted.status == 201, minted.text
    one_time = json.loads(minted.text)["ticket"]
    reasons = []
    for _ in range(2):
        api.client.session.cookie_jar.clear()
        ws = await api.client.ws_connect(
            "/console/ws/terminal", headers={"Cookie": cookie, "Origin": public_url}
        )
        await ws.send_str(json.dumps({"ticket": one_time}))
        async with asyncio.timeout(10):
            async for message in ws:
                if message.type == aiohttp.WSMsgType.TEXT and '"ended"' in message.data:
                    reasons.append(message.data)
        await ws.close()
    assert "not valid" not in reasons[0]
    assert "not valid" in reasons[1]
