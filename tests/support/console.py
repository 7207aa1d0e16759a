"""A cookie-keeping client for the web console over a real loopback socket: it sends what a
browser sends (cookies, Origin on POST), reads the CSRF token out of pages, and signs in with
password and TOTP the way a person does, enrolment included."""

from __future__ import annotations

import html
import re
import time
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Final

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from broker.auth import totp
from broker.console.web_session import SESSION_COOKIE
from tests.support.api import Api

CSRF_RE: Final = re.compile(r'name="_csrf" value="([^"]+)"')
META_CSRF_RE: Final = re.compile(r'<meta name="csrf-token" content="([^"]+)"')
SECRET_RE: Final = re.compile(r'id="totp-secret">([A-Z2-7 ]+)<')
PASSWORD: Final = "correct horse battery staple"


@dataclass
class Page:
    status: int
    text: str
    headers: dict[str, str]
    set_cookies: list[str]
    location: str


@dataclass
class ConsoleClient:
    client: TestClient  # type: ignore[type-arg]
    public_url: str
    cookies: dict[str, str] = field(default_factory=dict)
    secret: str = ""
    last_step: int = 0

    def _remember(self, response: ClientResponse) -> list[str]:
        raw = response.headers.getall("Set-Cookie", [])
        for header in raw:
            jar: SimpleCookie = SimpleCookie()
            jar.load(header)
            for name, morsel in jar.items():
                if morsel["max-age"] == "0" or not morsel.value:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return list(raw)

    async def request(
        self,
        method: str,
        path: str,
        *,
        data: dict[str, str] | None = None,
        json: object | None = None,
        headers: dict[str, str] | None = None,
        origin: str | None = "default",
    ) -> Page:
        sent = dict(headers or {})
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if method != "GET" and origin is not None:
            sent.setdefault("Origin", self.public_url if origin == "default" else origin)
        # The test client keeps a cookie jar of its own, shared by every ConsoleClient on it:
        # emptied here, so each ConsoleClient is one browser with exactly its own cookies.
        self.client.session.cookie_jar.clear()
        response = await self.client.request(
            method, path, data=data, json=json, headers=sent, allow_redirects=False
        )
        set_cookies = self._remember(response)
        text = await response.text()
        return Page(
            response.status,
            text,
            dict(response.headers),
            set_cookies,
            response.headers.get("Location", ""),
        )

    async def get(self, path: str, **kw: object) -> Page:
        return await self.request("GET", path, **kw)  # type: ignore[arg-type]

    async def post_form(
        self, path: str, fields: dict[str, str], *, csrf_from: str | None = None, **kw: object
    ) -> Page:
        """POST a form with the CSRF token of the page at ``csrf_from`` (or of ``path``)."""
        page = await self.get(csrf_from or path)
        token = csrf_of(page.text)
        return await self.request("POST", path, data={"_csrf": token, **fields}, **kw)  # type: ignore[arg-type]

    def next_code(self) -> str:
        """The code of the next unused 30 s step (codes are single-use)."""
        now_step = totp.step_at(time.time())
        step = max(now_step - 1, self.last_step + 1)
        assert step <= now_step + 1, "no unused code left in the window; wait for the next step"
        self.last_step = step
        return totp.code_at(self.secret, step * totp.STEP_SECONDS)

    async def sign_in(self, user: str, password: str = PASSWORD, code: str | None = None) -> Page:
        # A signed-in browser is sent on from the form: fetch it as a fresh visitor, then post
        # with whatever cookie the browser had (sign-in must replace it).
        session = self.cookies.pop(SESSION_COOKIE, None)
        form = await self.get("/console/login")
        if session is not None:
            self.cookies[SESSION_COOKIE] = session
        return await self.request(
            "POST",
            "/console/login",
            data={
                "_csrf": csrf_of(form.text),
                "user": user,
                "password": password,
                "code": code if code is not None else self.next_code(),
                "next": "/console/",
            },
        )

    async def enrol(self, user: str, password: str = PASSWORD) -> Page:
        """First sign-in: password, then the authenticator set-up, confirmed with a code."""
        first = await self.sign_in(user, password, code="")
        assert first.status == 303, first
        assert first.location.startswith("/console/totp-setup"), first
        setup = await self.get(first.location)
        match = SECRET_RE.search(setup.text)
        assert match is not None, setup.text[:500]
        self.secret = match.group(1).replace(" ", "")
        self.last_step = 0
        code = self.next_code()
        done = await self.request(
            "POST",
            "/console/totp-setup",
            data={"_csrf": csrf_of(setup.text), "code": code, "next": "/console/"},
        )
        assert done.status == 303, done
        return done

    def csrf_header(self, page_text: str) -> dict[str, str]:
        match = META_CSRF_RE.search(page_text)
        assert match is not None
        return {"X-CSRF-Token": html.unescape(match.group(1))}


def csrf_of(page_text: str) -> str:
    match = CSRF_RE.search(page_text)
    assert match is not None, page_text[:300]
    return html.unescape(match.group(1))


async def add_staff(api: Api, name: str, role: str, customers: list[str] | None = None) -> None:
    await api.call(
        "POST",
        "/users",
        {"name": name, "role": role, "password": PASSWORD, "customers": customers or []},
        expect=201,
    )


async def add_customer(api: Api, name: str) -> None:
    await api.call("POST", "/customers", {"name": name}, expect=201)


def build_front_end() -> None:
    """Build web/dist the way `make web` does (incremental: quick when it is up to date)."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    subprocess.run(["make", "-s", "web"], cwd=root, check=True, timeout=600)
