"""The mirror of an external ticket system over the real app and database: what a connector
read becomes in the built-in store, shown in the console. The connector points at a closed
port (its sync only marks it unhealthy); the tickets are handed to the app's own mirror as
RT would describe them, hostile values included."""

from __future__ import annotations

import json

import pytest

from broker.connectors.keys import CONNECTOR_SYNC, CONNECTORS
from broker.connectors.mirror import Mirror, link_of_ticket
from broker.connectors.remote import RemoteTicket
from broker.services import SERVICES
from broker.tickets import TICKET_STORE
from tests.component.test_console_pages import browser
from tests.support.api import Api
from tests.support.console import add_customer, add_staff

pytestmark = pytest.mark.postgres

HOSTILE = '<script>alert("x")</script>\x1b]52;c;aGk=\x07 \u202egnp.exe'


def remote(number: str, **changes: object) -> RemoteTicket:
    values: dict[str, object] = {
        "external_id": number,
        "title": "Printer jammed",
        "place": "Level 1",
        "status": "new",
        "state": "new",
        "owner": None,
        "requester": "eve@example.com",
        "url": f"https://rt.example.com/Ticket/Display.html?id={number}",
    }
    values.update(changes)
    return RemoteTicket(**values)  # type: ignore[arg-type]


async def setup(api: Api) -> Mirror:
    await add_customer(api, "acme")
    await api.call(
        "POST",
        "/connectors",
        {
            "name": "rt-acme",
            "kind": "rt",
            "url": "http://127.0.0.1:9",
            "credential": "1-14-secret",
            "customer": "acme",
        },
        expect=201,
    )
    app = api.client.app
    return Mirror(app[SERVICES], app[TICKET_STORE])


async def test_a_mirrored_ticket_shows_and_links_its_original(api: Api) -> None:
    """Created at its queue's level; `RT-77` links to RT on the console's ticket page; a move
    between the level queues is an escalation with its reason in the history."""
    mirror = await setup(api)
    record = await api.client.app[CONNECTORS].get("rt-acme")
    line = await mirror.apply(record, "77", remote("77"))
    assert line is not None
    assert line.startswith("RT-77 mirrored as T-")
    ref = line.rsplit(" ", 1)[1]
    _, shown = await api.call("GET", f"/tickets/{ref}")
    assert isinstance(shown, dict)
    assert (shown["level"], shown["status"], shown["requester"]) == (1, "new", "eve@example.com")
    assert shown["external"] == {
        "ref": "RT-77",
        "url": "https://rt.example.com/Ticket/Display.html?id=77",
    }
    moved = await mirror.apply(record, "77", remote("77", place="Level 2", changed_by="lena"))
    assert moved == f"RT-77 ({ref}): level 1 -> 2"
    _, shown = await api.call("GET", f"/tickets/{ref}")
    assert isinstance(shown, dict)
    assert shown["level"] == 2
    assert shown["history"][0]["reason"] == (
        "moved in RT by lena from queue 'Level 1' to 'Level 2'"
    )
    await add_staff(api, "bob", "level2", ["acme"])
    desk = browser(api)
    await desk.enrol("bob")
    page = await desk.get(f"/console/tickets/{ref}")
    assert page.status == 200
    assert '<a href="https://rt.example.com/Ticket/Display.html?id=77"' in page.text
    assert ">RT-77</a>" in page.text


async def test_hostile_external_values_are_cleaned(api: Api) -> None:
    """Title, requester and link from the external system are outside text: controls and
    bidi overrides go, a link that is not http(s) is dropped, markup stays inert."""
    mirror = await setup(api)
    record = await api.client.app[CONNECTORS].get("rt-acme")
    line = await mirror.apply(
        record,
        "78",
        remote("78", title=HOSTILE * 20, requester=HOSTILE, url="javascript:alert(1)"),
    )
    assert line is not None
    ref = line.rsplit(" ", 1)[1]
    _, shown = await api.call("GET", f"/tickets/{ref}")
    assert isinstance(shown, dict)
    text = json.dumps(shown)
    for bad in ("\\u001b", "\\u0007", "\\u202e", "javascript:"):
        assert bad not in text
    assert len(str(shown["title"])) <= 200
    assert shown["external"]["url"] == ""
    await add_staff(api, "bob", "level2", ["acme"])
    desk = browser(api)
    await desk.enrol("bob")
    page = await desk.get(f"/console/tickets/{ref}")
    assert "<script>alert" not in page.text
    assert "javascript:" not in page.text


async def test_a_deleted_or_merged_original_closes_the_mirror(api: Api) -> None:
    """Gone from RT: closed here. Merged: closed, and its notes go to the merge target."""
    mirror = await setup(api)
    record = await api.client.app[CONNECTORS].get("rt-acme")
    services = api.client.app[SERVICES]
    refs = []
    for number in ("80", "81"):
        line = await mirror.apply(record, number, remote(number))
        assert line is not None
        refs.append(line.rsplit(" ", 1)[1])
    assert await mirror.apply(record, "80", None) == f"RT-80 was deleted; {refs[0]} closed"
    line = await mirror.apply(
        record, "81", remote("81", merged_into="90", url="https://rt.example.com/x")
    )
    assert line == f"RT-81 was merged into RT-90; {refs[1]} closed"
    for ref in refs:
        _, shown = await api.call("GET", f"/tickets/{ref}")
        assert isinstance(shown, dict)
        assert shown["status"] == "closed"
    link = await link_of_ticket(services, int(refs[1][2:]))
    assert link is not None
    assert link.note_target == "90"
    _, events = await api.call("GET", "/audit?action=ticket.external_gone")
    assert isinstance(events, list)
    assert len(events) == 2


async def test_admins_see_an_unhealthy_connector_in_the_console(api: Api) -> None:
    """A round of the sync against a system that cannot be reached marks the connector
    unhealthy; the console's administration view says so with the reason, never the token."""
    await setup(api)
    app = api.client.app
    record = await app[CONNECTORS].get("rt-acme")
    await app[CONNECTOR_SYNC].sync(record)
    await add_staff(api, "root2", "admin")
    admin = browser(api)
    await admin.enrol("root2")
    page = await admin.get("/console/admin")
    assert page.status == 200
    section = page.text.split('id="connectors"')[1].split("</section>")[0]
    assert "rt-acme" in section
    assert "unhealthy" in section
    assert "cannot be reached" in section
    assert "1-14-secret" not in page.text


async def test_a_ticket_naming_no_customer_of_ours_is_refused_once_then_mirrored(
    api: Api,
) -> None:
    """A connector of all customers: a ticket whose `Customer` field is empty, unknown or
    hostile is not mirrored and is audited once per value (a feed reading it again adds
    nothing); corrected over there, it is mirrored."""
    await add_customer(api, "acme")
    body = {"name": "rt-all", "kind": "rt", "url": "http://127.0.0.1:9", "credential": "1-1-x"}
    await api.call("POST", "/connectors", body, expect=201)
    app = api.client.app
    mirror = Mirror(app[SERVICES], app[TICKET_STORE])
    record = await app[CONNECTORS].get("rt-all")
    for value in ("", "globex", "globex", HOSTILE, HOSTILE):
        got = await mirror.apply(record, "82", remote("82", custom_fields={"Customer": value}))
        assert got is None
    _, events = await api.call("GET", "/audit?action=connector.ticket_refused")
    assert isinstance(events, list)
    assert len(events) == 3, events
    assert {e["outcome"] for e in events} == {"denied"}
    assert "\\u202e" not in json.dumps(events)
    _, tickets = await api.call("GET", "/tickets")
    assert tickets == []
    got = await mirror.apply(record, "82", remote("82", custom_fields={"Customer": "acme"}))
    assert got is not None
    assert got.startswith("RT-82 mirrored as T-")
