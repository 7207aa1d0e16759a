"""Console sign-in with OpenID Connect against a provider process built on Authlib's server
side (tests/support/oidc_provider.py): PKCE code flow, the authenticator code asked unless
the provider asserts MFA, and every bad token, state and `next` refused."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from broker.app import CONFIG, create_app
from broker.config import load_config
from broker.console.oidc_login import OIDC_COOKIE
from broker.console.web_session import SESSION_COOKIE
from tests.support.console import SECRET_RE, ConsoleClient, Page, csrf_of
from tests.support.oidc_provider import OidcProvider

pytestmark = pytest.mark.postgres

USERS = {
    "olga": {"password": "olga pw", "sub": "sub-olga", "name": "Olga Okta", "amr": ["pwd", "mfa"],
             "groups": ["helpdesk-l2"]},
    "paul": {"password": "paul pw", "sub": "sub-paul", "name": "Paul Pwd", "amr": ["pwd"],
             "groups": ["helpdesk-l1"]},
    "quinn": {"password": "quinn pw", "sub": "sub-quinn", "name": "Quinn", "amr": ["mfa"],
              "groups": ["marketing"]},
}  # fmt: skip


REFRESH_RE = re.compile(r'http-equiv="refresh" content="0;url=([^"]+)"')


def next_of(page: Page) -> str:
    """Where the callback's page sends the browser on (a same-site navigation)."""
    assert page.status == 200, (page.status, page.text[:300])
    match = REFRESH_RE.search(page.text)
    assert match is not None, page.text[:300]
    return html.unescape(match.group(1))


@dataclass
class Site:
    client: TestClient[Any, Any]
    provider: OidcProvider
    admin_token: str

    def browser(self) -> ConsoleClient:
        return ConsoleClient(self.client, self.client.app[CONFIG].public_url)

    async def at_provider(self, url: str, user: str) -> str:
        """The person at the provider: the form, then user name and password; the redirect
        back to the broker (its path and query) is returned."""
        async with aiohttp.ClientSession() as http:
            async with http.get(url) as form:
                assert form.status == 200, await form.text()
            async with http.post(
                url,
                data={"username": user, "password": USERS[user]["password"]},
                allow_redirects=False,
            ) as done:
                assert done.status == 302, await done.text()
                back = urlsplit(done.headers["Location"])
        assert back.path == "/console/oidc/callback"
        return f"{back.path}?{back.query}"

    async def sign_in(self, b: ConsoleClient, user: str, next_target: str = "/console/") -> Page:
        started = await b.get(f"/console/oidc/start?next={next_target}")
        assert started.status == 303, started.text[:300]
        assert OIDC_COOKIE in b.cookies
        return await b.get(await self.at_provider(started.location, user))

    async def mode(self, mode: str) -> None:
        url = f"{self.provider.issuer}/test/mode"
        async with aiohttp.ClientSession() as http, http.post(url, json={"mode": mode}) as r:
            assert r.status == 200

    async def users(self) -> dict[str, dict[str, Any]]:
        r = await self.client.get(
            "/api/v1/users", headers={"Authorization": f"Bearer {self.admin_token}"}
        )
        return {u["name"]: u for u in await r.json()}

    async def audit(self, action: str) -> list[dict[str, Any]]:
        r = await self.client.get(
            f"/api/v1/audit?limit=100&action={action}",
            headers={"Authorization": f"Bearer {self.admin_token}"},
        )
        return list(await r.json())


@pytest.fixture
async def site(data_dir: Path, tmp_path: Path) -> AsyncIterator[Site]:
    public_url = load_config(data_dir, env={}).public_url
    provider = OidcProvider(
        tmp_path / "provider", redirect_uri=f"{public_url}/console/oidc/callback", users=USERS
    )
    await provider.start()
    secret = tmp_path / "client.secret"
    secret.write_text(provider.client_secret + "\n")
    env = {
        "SECONDLINE_OIDC_ISSUER": provider.issuer,
        "SECONDLINE_OIDC_CLIENT_ID": provider.client_id,
        "SECONDLINE_OIDC_CLIENT_SECRET_FILE": str(secret),
        "SECONDLINE_OIDC_NAME": "Example SSO",
        "SECONDLINE_OIDC_ROLES": "helpdesk-l1=level1, helpdesk-l2=level2",
    }
    client: TestClient[Any, Any] = TestClient(TestServer(create_app(load_config(data_dir, env))))
    await client.start_server()
    try:
        yield Site(client, provider, (data_dir / "admin.token").read_text().strip())
    finally:
        await client.close()
        await provider.stop()


async def test_provider_mfa_signs_in_without_a_code(site: Site) -> None:
    """The login page offers the provider; olga (amr: mfa) is signed in straight after the
    provider, to the page she asked for, as a level-2 account whose source is oidc."""
    b = site.browser()
    login = await b.get("/console/login")
    assert "Sign in with Example SSO" in login.text
    done = await site.sign_in(b, "olga", "/console/tickets")
    assert next_of(done) == "/console/tickets"
    assert OIDC_COOKIE not in b.cookies
    assert (await b.get("/console/")).status == 200
    olga = (await site.users())["olga"]
    assert (olga["source"], olga["source_name"], olga["role"]) == ("oidc", "Example SSO", "level2")
    [event] = await site.audit("login")
    assert event["details"] == {"via": "oidc", "provider_mfa": True, "stage": "active"}


async def test_without_provider_mfa_the_authenticator_code_is_asked(site: Site) -> None:
    """paul (amr: pwd) sets up an authenticator on his first sign-in and types a code on
    the next; a wrong code there signs nobody in."""
    b = site.browser()
    first = next_of(await site.sign_in(b, "paul"))
    assert first.startswith("/console/totp-setup")
    setup = await b.get(first)
    match = SECRET_RE.search(setup.text)
    assert match is not None
    b.secret = match.group(1).replace(" ", "")
    enrolled = await b.request(
        "POST",
        "/console/totp-setup",
        data={"_csrf": csrf_of(setup.text), "code": b.next_code(), "next": "/console/"},
    )
    assert enrolled.status == 303
    assert enrolled.location == "/console/"
    again = site.browser()
    again.secret, again.last_step = b.secret, b.last_step
    second = next_of(await site.sign_in(again, "paul"))
    assert second.startswith("/console/oidc/code")
    # The code stage opens no page of the console.
    assert (await again.get("/console/")).status in (302, 303)
    form = await again.get(second)
    wrong = await again.request(
        "POST", "/console/oidc/code", data={"_csrf": csrf_of(form.text), "code": "000000"}
    )
    assert wrong.status == 401
    right = await again.request(
        "POST",
        "/console/oidc/code",
        data={"_csrf": csrf_of(form.text), "code": again.next_code(), "next": "/console/"},
    )
    assert right.status == 303
    assert (await again.get("/console/")).status == 200


@pytest.mark.parametrize(
    "mode", ["wrong-issuer", "wrong-audience", "expired", "alg-none", "nonce", "replay"]
)
async def test_bad_id_tokens_are_refused(site: Site, mode: str) -> None:
    """An ID token from another issuer or for another client, expired, unsigned, with
    another sign-in's nonce, or replayed from an earlier sign-in signs nobody in."""
    await site.sign_in(site.browser(), "olga")  # a good one first: "replay" sends it again
    await site.mode(mode)
    b = site.browser()
    page = await site.sign_in(b, "olga")
    assert page.status == 401, (mode, page.status, page.text[:300])
    assert SESSION_COOKIE not in b.cookies
    assert "Start it again" in page.text
    failed = await site.audit("login.failed")
    assert failed
    assert failed[0]["details"]["via"] == "oidc"


async def test_state_must_match_and_a_callback_works_once(site: Site) -> None:
    """A callback with another state, or without the browser's sign-in cookie, or the same
    callback a second time, signs nobody in."""
    b = site.browser()
    started = await b.get("/console/oidc/start")
    back = await site.at_provider(started.location, "olga")
    forged = back.replace("state=", "state=x")
    assert (await b.get(forged)).status == 400
    other = site.browser()  # another browser (no sign-in cookie) with the real callback
    assert (await other.get(back)).status == 400
    assert SESSION_COOKIE not in other.cookies
    b2 = site.browser()
    started2 = await b2.get("/console/oidc/start")
    back2 = await site.at_provider(started2.location, "olga")
    kept = dict(b2.cookies)
    assert next_of(await b2.get(back2)) == "/console/"
    replayed = site.browser()
    replayed.cookies.update(kept)
    replayed.cookies.pop(SESSION_COOKIE, None)
    # The code was spent at the provider: the same callback again is refused.
    assert (await replayed.get(back2)).status in (401, 503)
    assert SESSION_COOKIE not in replayed.cookies


@pytest.mark.parametrize(
    "target", ["https://evil.example/", "//evil.example/x", "/console/../admin", "javascript:1"]
)
async def test_next_never_leaves_the_console(site: Site, target: str) -> None:
    """An open redirect through `next` ends at the console's start page instead."""
    done = await site.sign_in(site.browser(), "olga", target)
    assert next_of(done) == "/console/"


async def test_a_group_without_a_role_is_refused_with_the_reason(site: Site) -> None:
    """quinn's groups map to no role: refused, and the page says why."""
    b = site.browser()
    page = await site.sign_in(b, "quinn")
    assert page.status == 403
    assert "gives your account no access" in page.text
    assert "helpdesk-l1" in page.text
    assert SESSION_COOKIE not in b.cookies


async def test_provider_down_refuses_with_the_reason_and_passwords_still_work(site: Site) -> None:
    """With the provider gone, the button leads to "cannot be reached" (503) and a local
    account still signs in with its password."""
    await site.provider.stop()
    b = site.browser()
    page = await b.get("/console/oidc/start")
    assert page.status == 503
    assert "sign-in provider cannot be reached" in page.text
    headers = {"Authorization": f"Bearer {site.admin_token}"}
    body = {"name": "lena", "role": "level1", "password": "lena's password 4711"}
    created = await site.client.post("/api/v1/users", json=body, headers=headers)
    assert created.status == 201
    login = await site.client.post(
        "/api/v1/auth/login", json={"user": "lena", "password": "lena's password 4711"}
    )
    assert login.status == 201
