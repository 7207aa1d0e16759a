"""Console pages over the real tickets API: the queue per level, the ticket page and its
forms, hostile text rendered inert, and both languages."""

from __future__ import annotations

import re

import pytest

from broker.app import CONFIG
from tests.support.api import Api
from tests.support.console import ConsoleClient, add_customer, add_staff

pytestmark = pytest.mark.postgres

HOSTILE = (
    '<script>alert("x")</script><img src=x onerror=alert(1)>'
    " \u202egnp.exe\u202c \x1b[31mred\x1b[0m \x1b]52;c;aGk=\x07 {{ 7*7 }}"
)


def browser(api: Api) -> ConsoleClient:
    return ConsoleClient(api.client, api.client.app[CONFIG].public_url)


async def ticket(api: Api, title: str, level: int, **extra: object) -> str:
    _, data = await api.call(
        "POST",
        "/tickets",
        {"title": title, "customer": "acme", "level": level, **extra},
        expect=201,
    )
    assert isinstance(data, dict)
    return str(data["id"])


@pytest.fixture
async def desk(api: Api) -> ConsoleClient:
    await add_customer(api, "acme")
    await add_staff(api, "bob", "level2", ["acme"])
    await add_staff(api, "lena", "level1", ["acme"])
    b = browser(api)
    await b.enrol("bob")
    return b


def rows(page_text: str) -> list[str]:
    body = page_text.split('id="queue-rows">')[1].split("</tbody>")[0]
    return re.findall(r'href="/console/tickets/(T-\d+)">T-', body)


async def test_queue_shows_my_level_and_below_unassigned_first(
    api: Api, desk: ConsoleClient
) -> None:
    """Level 2 sees level-1 and level-2 tickets, never level 3; unassigned come first."""
    low = await ticket(api, "Printer jams", 1)
    mine = await ticket(api, "VPN drops", 2)
    high = await ticket(api, "Kernel panic", 3)
    free = await ticket(api, "Disk full", 2)
    await api.call("POST", f"/tickets/{mine}/assign", {"user": "bob"}, expect=200)
    page = await desk.get("/console/")
    assert page.status == 200
    shown = rows(page.text)
    assert high not in shown
    assert set(shown) == {low, mine, free}
    assert shown.index(free) < shown.index(mine)
    assert shown.index(low) < shown.index(mine)


async def test_queue_filters(api: Api, desk: ConsoleClient) -> None:
    """Status, level and assignee filters narrow the list."""
    one = await ticket(api, "Printer jams", 1)
    two = await ticket(api, "VPN drops", 2)
    await api.call("POST", f"/tickets/{two}/assign", {"user": "bob"}, expect=200)
    assert rows((await desk.get("/console/?level=1")).text) == [one]
    assert rows((await desk.get("/console/?assignee=me")).text) == [two]
    assert rows((await desk.get("/console/?assignee=none")).text) == [one]
    assert rows((await desk.get("/console/?status=closed")).text) == []
    junk = await desk.get("/console/?status=<x>&level=9&customer=../../etc&assignee=%00")
    assert junk.status == 200
    assert set(rows(junk.text)) == {one, two}


async def test_queue_live_stream_sends_rendered_rows(api: Api, desk: ConsoleClient) -> None:
    """The queue's event stream sends its rows as HTML, and again after a change."""
    headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in desk.cookies.items())}
    api.client.session.cookie_jar.clear()
    response = await api.client.get("/console/events?view=queue&status=active", headers=headers)
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")

    async def next_update() -> str:
        while True:
            chunk = (await response.content.readuntil(b"\n\n")).decode()
            if chunk.startswith("event: update") and "queue-rows" in chunk:
                return chunk

    first = await next_update()
    assert "Nothing in the queue" in first
    new = await ticket(api, "Mail bounces", 2)
    assert new in await next_update()
    response.close()


async def test_ticket_page_and_its_forms(api: Api, desk: ConsoleClient) -> None:
    """Take, add a note, escalate and resolve a ticket through the page's forms."""
    ref = await ticket(api, "VPN drops", 2, description="Since Monday.\nEvery hour.")
    page = await desk.get(f"/console/tickets/{ref}")
    assert page.status == 200
    assert "Since Monday.<br>Every hour." in page.text
    assert "No machine is linked to this ticket." in page.text
    path = f"/console/tickets/{ref}"
    took = await desk.post_form(f"{path}/assign", {"user": "bob"}, csrf_from=path)
    assert took.status == 303
    assert took.location == f"{path}?done=assigned"
    note = await desk.post_form(
        f"{path}/notes", {"text": "Checked the tunnel.", "visibility": "internal"}, csrf_from=path
    )
    assert note.status == 303
    up = await desk.post_form(f"{path}/escalate", {"to": "3", "reason": "Needs L3"}, csrf_from=path)
    assert up.status == 303
    after = await desk.get(path)
    assert "Checked the tunnel." in after.text
    assert "Escalated from level 2 to 3" in after.text
    assert "Needs L3" in after.text
    refused = await desk.post_form(f"{path}/resolve", {"solution": "Fixed"}, csrf_from=path)
    assert refused.status == 403
    assert "The ticket is above your support level." in refused.text


async def test_refusal_is_shown_and_audited(api: Api, desk: ConsoleClient) -> None:
    """Working a ticket of another customer's scope is refused with a reason."""
    await add_customer(api, "globex")
    _, data = await api.call(
        "POST", "/tickets", {"title": "Other", "customer": "globex", "level": 2}, expect=201
    )
    assert isinstance(data, dict)
    page = await desk.get(f"/console/tickets/{data['id']}")
    assert page.status in (403, 404)
    assert "globex" not in page.text


async def test_hostile_ticket_text_is_inert(api: Api, desk: ConsoleClient) -> None:
    """HTML, script, template syntax, bidi overrides and escape sequences render as text."""
    ref = await ticket(api, HOSTILE[:190], 2, description=HOSTILE, requester="x<b>y</b>")
    for path in ("/console/", f"/console/tickets/{ref}"):
        page = await desk.get(path)
        assert page.status == 200
        assert "<script>alert" not in page.text
        assert "<img src=x" not in page.text
        assert "&lt;script&gt;" in page.text
        assert "\u202e" not in page.text
        assert "\x1b" not in page.text
        assert "\x07" not in page.text
        assert "{{ 7*7 }}" in page.text
        assert ">49<" not in page.text
        assert "<b>y</b>" not in page.text


async def test_german_from_accept_language_and_the_account_setting(
    api: Api, desk: ConsoleClient
) -> None:
    """The browser's language is used until the person picks one in the settings."""
    de = await desk.get("/console/", headers={"Accept-Language": "de-DE,de;q=0.9,en;q=0.5"})
    assert 'lang="de"' in de.text
    assert "Warteschlange" in de.text
    en = await desk.get("/console/", headers={"Accept-Language": "fr-FR,en;q=0.8"})
    assert 'lang="en"' in en.text
    assert "Queue" in en.text
    saved = await desk.post_form(
        "/console/settings/language", {"language": "de"}, csrf_from="/console/settings"
    )
    assert saved.status == 303
    chosen = await desk.get("/console/", headers={"Accept-Language": "en"})
    assert 'lang="de"' in chosen.text
    login = await browser(api).get("/console/login", headers={"Accept-Language": "de"})
    assert "Anmelden" in login.text
    assert "Benutzername" in login.text


async def test_level_one_sees_only_level_one(api: Api) -> None:
    """A level-1 person's queue holds level-1 tickets only and offers no shell."""
    await add_customer(api, "acme")
    await add_staff(api, "lena", "level1", ["acme"])
    b = browser(api)
    await b.enrol("lena")
    one = await ticket(api, "Printer jams", 1)
    await ticket(api, "VPN drops", 2)
    assert rows((await b.get("/console/")).text) == [one]


async def test_admin_view_lists_staff_and_verifies_the_audit_chain(api: Api) -> None:
    """An admin with a password signs in to the administration view; staff cannot open it."""
    await add_staff(api, "root2", "admin")
    admin = browser(api)
    await admin.enrol("root2")
    page = await admin.get("/console/admin")
    assert page.status == 200
    assert "root2" in page.text
    assert 'id="audit-verify"' in page.text
    assert "chain verified" in page.text
    await add_staff(api, "pat", "level2")
    staff = browser(api)
    await staff.enrol("pat")
    assert (await staff.get("/console/admin")).status == 403
