"""Signing in to the web console: password and TOTP, enrolment, cookies, throttling, sign-out."""

from __future__ import annotations

import pytest

from broker.console.web_session import LOGIN_COOKIE, SESSION_COOKIE
from tests.support.api import Api, refusals_of
from tests.support.console import PASSWORD, ConsoleClient, add_staff

pytestmark = pytest.mark.postgres


def browser(api: Api) -> ConsoleClient:
    from broker.app import CONFIG

    return ConsoleClient(api.client, api.client.app[CONFIG].public_url)


async def test_first_sign_in_enrols_totp_and_sets_a_host_cookie(api: Api) -> None:
    """A person without a TOTP secret sets one up after the password, then gets a session."""
    await add_staff(api, "bob", "level2")
    b = browser(api)
    done = await b.enrol("bob")
    assert done.location == "/console/"
    cookie = next(c for c in done.set_cookies if c.startswith(SESSION_COOKIE + "="))
    for flag in ("Secure", "HttpOnly", "SameSite=Strict", "Path=/"):
        assert flag in cookie
    assert "Domain" not in cookie
    page = await b.get("/console/")
    assert page.status == 200
    assert "bob" in page.text


async def test_enrolment_page_shows_each_secret_once(api: Api) -> None:
    """Reloading the set-up page draws a new secret; the first one no longer confirms."""
    from tests.support.console import SECRET_RE, csrf_of

    await add_staff(api, "carol", "level2")
    b = browser(api)
    first = await b.sign_in("carol", code="")
    one = await b.get(first.location)
    two = await b.get(first.location)
    s1, s2 = SECRET_RE.search(one.text), SECRET_RE.search(two.text)
    assert s1
    assert s2
    assert s1.group(1) != s2.group(1)
    assert "<svg" in one.text
    assert "otpauth" not in one.text.split("<svg")[0][-200:]
    b.secret = s1.group(1).replace(" ", "")
    stale = await b.request(
        "POST",
        "/console/totp-setup",
        data={"_csrf": csrf_of(two.text), "code": b.next_code(), "next": "/console/"},
    )
    assert stale.status == 401
    assert SESSION_COOKIE not in [c.split("=")[0] for c in stale.set_cookies]


async def test_sign_in_with_code_rotates_the_cookie(api: Api) -> None:
    """Each sign-in issues a new session cookie and voids the one the browser had."""
    await add_staff(api, "dave", "level2")
    b = browser(api)
    await b.enrol("dave")
    old = b.cookies[SESSION_COOKIE]
    again = await b.sign_in("dave")
    assert again.status == 303
    new = b.cookies[SESSION_COOKIE]
    assert new != old
    stolen = browser(api)
    stolen.cookies[SESSION_COOKIE] = old
    assert (await stolen.get("/console/")).status == 303


async def test_codes_are_single_use(api: Api) -> None:
    """A code that signed someone in is refused the second time."""
    await add_staff(api, "erin", "level2")
    b = browser(api)
    await b.enrol("erin")
    code = b.next_code()
    assert (await b.sign_in("erin", code=code)).status == 303
    other = browser(api)
    replay = await other.sign_in("erin", code=code)
    assert replay.status == 401


async def test_failures_get_one_answer(api: Api) -> None:
    """Unknown user, wrong password, wrong code and disabled account look alike."""
    await add_staff(api, "fay", "level2")
    b = browser(api)
    await b.enrol("fay")
    answers = [
        await browser(api).sign_in("nobody", code="123456"),
        await browser(api).sign_in("fay", password="wrong password!", code=b.next_code()),
        await browser(api).sign_in("fay", code="000000"),
    ]
    await api.call("POST", "/users/fay/disable", expect=200)
    answers.append(await browser(api).sign_in("fay", code=b.next_code()))
    assert {a.status for a in answers} == {401}
    messages = {a.text.split('role="alert">')[1].split("<")[0] for a in answers}
    assert messages == {"User name, password or code is wrong."}


async def test_throttling_per_account_and_per_source(api: Api) -> None:
    """After ten failures the account is refused even with the right code, and so is the
    source for another account, with the same answer for unknown names."""
    await add_staff(api, "gus", "level2")
    b = browser(api)
    await b.enrol("gus")
    for _ in range(10):
        assert (await browser(api).sign_in("gus", "not the password", "000000")).status == 401
    blocked = await browser(api).sign_in("gus", code=b.next_code())
    assert blocked.status == 429
    unknown = await browser(api).sign_in("ghost", code="123456")
    assert unknown.status == 429


async def test_login_form_needs_its_csrf_cookie(api: Api) -> None:
    """A sign-in form posted without the matching login cookie is refused and audited."""
    await add_staff(api, "hal", "level2")
    b = browser(api)
    await b.get("/console/login")
    b.cookies.pop(LOGIN_COOKIE)
    page = await b.request(
        "POST",
        "/console/login",
        data={"_csrf": "forged", "user": "hal", "password": PASSWORD, "code": ""},
    )
    assert page.status == 403
    _, events = await api.call("GET", "/audit?limit=1000", expect=200)
    assert isinstance(events, list)
    assert refusals_of(events, "console.csrf_refused") == 1


async def test_logout_ends_the_session(api: Api) -> None:
    """After signing out the old cookie opens nothing."""
    await add_staff(api, "ida", "level2")
    b = browser(api)
    await b.enrol("ida")
    cookie = b.cookies[SESSION_COOKIE]
    out = await b.post_form("/console/logout", {}, csrf_from="/console/settings")
    assert out.status == 303
    assert out.location == "/console/login"
    again = browser(api)
    again.cookies[SESSION_COOKIE] = cookie
    assert (await again.get("/console/settings")).status == 303


async def test_log_out_everywhere_voids_every_browser(api: Api) -> None:
    """ "Log out everywhere" signs out the person's other browsers too."""
    await add_staff(api, "jon", "level2")
    first = browser(api)
    await first.enrol("jon")
    second = browser(api)
    second.secret, second.last_step = first.secret, first.last_step
    assert (await second.sign_in("jon")).status == 303
    first.last_step = second.last_step
    out = await first.post_form("/console/logout-everywhere", {}, csrf_from="/console/settings")
    assert out.status == 303
    assert (await second.get("/console/settings")).status == 303
    assert (await first.get("/console/settings")).status == 303


async def test_next_parameter_never_leaves_the_console(api: Api) -> None:
    """A sign-in link cannot send the person to another site."""
    await add_staff(api, "kim", "level2")
    b = browser(api)
    await b.enrol("kim")
    form = await b.get("/console/login?next=https://evil.example/")
    assert form.status == 303
    assert form.location == "/console/"
