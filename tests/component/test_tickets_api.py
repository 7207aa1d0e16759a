"""Every /api/v1/tickets route doing its job, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib

import aiohttp
import pytest

from broker.app import create_app
from broker.config import load_config
from broker.tickets import TICKET_SESSIONS
from broker.tickets.sessions_hook import session_table
from tests.component.test_tickets_support import World, audit_events, make_world, set_online
from tests.support.api import Api

pytestmark = pytest.mark.postgres


@pytest.fixture
async def world(api: Api) -> World:
    return await make_world(api)


async def test_create_list_show(world: World) -> None:
    """Level 1 creates numbered tickets from T-1001; lists filter; show has every part."""
    first = await world.ticket(description="It jams.\nEvery time.", requester="Ann at desk 4")
    second = await world.ticket(agents=())
    assert (first, second) == ("T-1001", "T-1002")
    listed = await world.listed(token=world.lena)
    assert [t["id"] for t in listed] == ["T-1002", "T-1001"]
    await world.call("POST", f"/tickets/{first}/escalate", {"to": 2, "reason": "shell needed"})
    for query, ids in [
        ("level=2", ["T-1001"]),
        ("level=1&status=new", ["T-1002"]),
        ("customer=acme", ["T-1002", "T-1001"]),
        ("customer=globex", []),
        ("assignee=bob", []),
        ("limit=1", ["T-1002"]),
    ]:
        assert [t["id"] for t in await world.listed(f"?{query}")] == ids, query
    assert await world.listed(token=world.gina) == []
    shown = await world.show("1001")
    assert shown["description"] == "It jams.\nEvery time."
    assert shown["requester"] == "Ann at desk 4"
    assert shown["created_by"] == "lena"
    assert [a["name"] for a in shown["linked_agents"]] == ["web01"]
    assert shown["notes"] == []
    assert shown["sessions"] == []
    assert shown["attachments"] == []
    assert shown["allowed_actions"] == ["open", "set_pending", "resolve"]
    assert len(await audit_events(world.api, "ticket.create")) == 2


async def test_escalate_take_hand_back_history(world: World) -> None:
    """Escalation and hand-back move the level, clear the assignee and record who, when, why."""
    ref = await world.ticket()
    await world.call("POST", f"/tickets/{ref}/take")
    up = await world.call("POST", f"/tickets/{ref}/escalate", {"to": 2, "reason": " printer "})
    assert (up["level"], up["assignee"]) == (2, None)
    taken = await world.call("POST", f"/tickets/{ref}/take", token=world.bob)
    assert taken["assignee"] == "bob"
    top = await world.call(
        "POST", f"/tickets/{ref}/escalate", {"to": 3, "reason": "driver bug"}, world.bob
    )
    assert (top["level"], top["assignee"]) == (3, None)
    down = await world.call(
        "POST", f"/tickets/{ref}/hand-back", {"to": 1, "reason": "patched"}, world.tess
    )
    assert (down["level"], down["assignee"]) == (1, None)
    history = (await world.show(ref))["history"]
    assert isinstance(history, list)
    assert [
        (h["kind"], h["from_level"], h["to_level"], h["actor"], h["reason"]) for h in history
    ] == [
        ("escalate", 1, 2, "lena", "printer"),
        ("escalate", 2, 3, "bob", "driver bug"),
        ("hand_back", 3, 1, "tess", "patched"),
    ]
    assert all(h["at"] for h in history)
    events = await audit_events(world.api, "ticket.escalate")
    assert [e["details"]["to"] for e in events] == [3, 2]
    assert len(await audit_events(world.api, "ticket.hand_back")) == 1


async def test_status_actions(world: World) -> None:
    """open, pending, resume, resolve with a solution, close and reopen follow the table."""
    ref = await world.escalated()
    await world.call("POST", f"/tickets/{ref}/take", token=world.bob)
    steps = [
        ("open", None, "open"),
        ("pending", None, "pending"),
        ("resume", None, "open"),
        ("resolve", {"solution": "Replaced the fuser."}, "resolved"),
        ("close", None, "closed"),
        ("reopen", None, "open"),
    ]
    for action, body, status in steps:
        out = await world.call("POST", f"/tickets/{ref}/{action}", body, world.bob)
        assert out["status"] == status, action
    shown = await world.show(ref)
    assert shown["solution"] == "Replaced the fuser."
    assert shown["resolved_at"] is None
    assert shown["allowed_actions"] == ["set_pending", "resolve"]


async def test_resolve_assigns_unassigned_ticket_to_resolver(world: World) -> None:
    """Level 2 resolving an unassigned ticket takes it; level 1 resolves its own ticket."""
    ref = await world.escalated()
    out = await world.call("POST", f"/tickets/{ref}/resolve", {"solution": "ok"}, world.bob)
    assert (out["status"], out["assignee"]) == ("resolved", "bob")
    own = await world.ticket()
    out = await world.call("POST", f"/tickets/{own}/resolve", {"solution": "rebooted"})
    assert out["status"] == "resolved"


async def test_assign_and_reassign(world: World) -> None:
    """Admins assign; staff above the ticket's level reassign; assignees must fit the rules."""
    ref = await world.escalated()
    out = await world.call("POST", f"/tickets/{ref}/assign", {"user": "bob"}, "admin")
    assert out["assignee"] == "bob"
    out = await world.call("POST", f"/tickets/{ref}/assign", {"user": "carl"}, world.bob)
    assert out["assignee"] == "carl"
    out = await world.call("POST", f"/tickets/{ref}/assign", {"user": "bob"}, world.tess)
    assert out["assignee"] == "bob"
    assert [e["details"]["assignee"] for e in await audit_events(world.api, "ticket.assign")] == [
        "bob",
        "carl",
        "bob",
    ]


async def test_link_agent_by_name_and_id(world: World) -> None:
    """Agents of the ticket's customer are linked by name or id; linking twice is harmless."""
    ref = await world.ticket(agents=())
    await world.call("POST", f"/tickets/{ref}/link", {"agent": "web01"})
    await world.call("POST", f"/tickets/{ref}/link", {"agent": world.agents["db01"]}, "admin")
    out = await world.call("POST", f"/tickets/{ref}/link", {"agent": "web01"})
    assert sorted(out["agents"]) == ["db01", "web01"]
    linked = (await world.show(ref))["linked_agents"]
    assert [(a["name"], a["online"], a["linked_by"]) for a in linked] == [
        ("web01", True, "lena"),
        ("db01", False, "admin"),
    ]
    assert len(await audit_events(world.api, "ticket.link")) == 2


async def test_notes_internal_and_public(world: World) -> None:
    """Notes are internal by default, public on request, with author and time."""
    ref = await world.ticket()
    first = await world.call("POST", f"/tickets/{ref}/notes", {"text": "Called Ann."}, expect=201)
    second = await world.call(
        "POST",
        f"/tickets/{ref}/notes",
        {"text": "We are on it.", "internal": False},
        world.una,
        expect=201,
    )
    assert (first["internal"], second["internal"]) == (True, False)
    notes = (await world.show(ref))["notes"]
    assert [(n["author"], n["text"], n["internal"]) for n in notes] == [
        ("lena", "Called Ann.", True),
        ("una", "We are on it.", False),
    ]


async def upload(
    world: World, ref: str, name: str, data: bytes, token: str | None = None
) -> tuple[int, object]:
    form = aiohttp.FormData(quote_fields=False)
    form.add_field("file", data, filename=name, content_type="text/html")
    resp = await world.api.client.post(
        f"/api/v1/tickets/{ref}/attachments", data=form, headers=Api.headers(token or world.lena)
    )
    return resp.status, await resp.json()


async def test_attachment_upload_and_download(world: World) -> None:
    """A multipart upload is stored under its ticket and downloads inert, byte for byte."""
    ref = await world.ticket()
    page = b"<html><script>alert(1)</script></html>"
    status, out = await upload(world, ref, "error page.html", page)
    assert status == 201, out
    assert isinstance(out, dict)
    assert out["name"] == "error_page.html"
    assert out["size"] == len(page)
    assert out["sha256"] == hashlib.sha256(page).hexdigest()
    status, again = await upload(world, ref, "error page.html", b"second")
    assert status == 201
    assert isinstance(again, dict)
    assert again["name"] == "error_page-2.html"
    stored = world.services.config.attachments_dir / ref / "error_page.html"
    assert stored.read_bytes() == page
    resp = await world.api.client.get(str(out["url"]), headers=Api.headers(world.bob))
    assert resp.status == 200
    assert await resp.read() == page
    assert resp.headers["Content-Type"] == "application/octet-stream"
    assert resp.headers["Content-Disposition"] == 'attachment; filename="error_page.html"'
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in resp.headers["Content-Security-Policy"]
    shown = await world.show(ref)
    assert [a["name"] for a in shown["attachments"]] == [
        "error_page.html",
        "error_page-2.html",
    ]
    missing = await world.api.client.get(
        f"/files/tickets/{ref}/attachments/nothing.txt", headers=Api.headers(world.bob)
    )
    assert missing.status == 404
    anonymous = await world.api.client.get(str(out["url"]))
    assert anonymous.status == 401


async def test_session_check(world: World) -> None:
    """The check answers the rules' decision for the caller, with the reason when refused."""
    ref = await world.escalated()
    path = f"/tickets/{ref}/session-check"
    ok = await world.call("GET", path, token=world.bob)
    assert (ok["allowed"], ok["assign_to_caller"], ok["agent_name"]) == (True, True, "web01")
    low = await world.call("GET", path + "?agent=web01", token=world.lena)
    assert (low["allowed"], low["code"]) == (False, "level_too_low")
    assert "level-2 staff handle it" in str(low["reason"])
    await world.call("POST", f"/tickets/{ref}/link", {"agent": "db01"}, world.bob)
    offline = await world.call("GET", path + "?agent=db01", token=world.bob)
    assert (offline["allowed"], offline["code"]) == (False, "agent_offline")
    await set_online(world.services, world.agents["db01"], True)
    online = await world.call("GET", path + f"?agent={world.agents['db01']}", token=world.bob)
    assert online["allowed"] is True
    await world.refused("GET", path, None, world.bob, 400, "agent_required")
    level1 = await world.ticket()
    early = await world.call("GET", f"/tickets/{level1}/session-check", token=world.bob)
    assert (early["allowed"], early["code"]) == (False, "ticket_not_escalated")
    admin = await world.call("GET", path + "?agent=web01", token="admin")
    assert admin["code"] == "admin_no_shell"


async def test_sessions_hook_fills_show(data_dir: object, aiohttp_client: object) -> None:
    """A sessions part that sets app[TICKET_SESSIONS] has its sessions shown by `show`."""
    from pathlib import Path

    from aiohttp import web

    assert isinstance(data_dir, Path)
    calls: list[int] = []

    async def sessions(ticket: int) -> list[dict[str, object]]:
        calls.append(ticket)
        return [{"id": "s-" + "a" * 22, "owner": "bob", "state": "ended"}]

    def hook(app: web.Application) -> None:
        app[TICKET_SESSIONS] = sessions

    app = create_app(load_config(data_dir, env={}), extra=[hook])
    client = await aiohttp_client(app)  # type: ignore[operator]
    api = Api(client, (data_dir / "admin.token").read_text().strip())
    world = await make_world(api)
    ref = await world.ticket()
    shown = await world.show(ref)
    assert shown["sessions"] == [{"id": "s-" + "a" * 22, "owner": "bob", "state": "ended"}]
    assert calls == [1001]


async def test_sessions_table_rows_are_shown(world: World) -> None:
    """Without the hook, rows of the sessions table are shown, safe columns only."""
    import datetime as dt

    from sqlalchemy import JSON, Boolean, DateTime, Integer, insert

    table = session_table()
    assert table is not None, "the sessions table must exist"
    ref = await world.ticket()
    now = dt.datetime.now(dt.UTC)
    values: dict[str, object] = {}
    for column in table.columns:
        if column.name == "ticket_id":
            values[column.name] = 1001
        elif column.name == "id" and not isinstance(column.type, Integer):
            values[column.name] = "s-" + "b" * 22
        elif not column.nullable and column.default is None and not column.primary_key:
            kind = column.type
            values[column.name] = (
                now
                if isinstance(kind, DateTime) or "DateTime" in type(kind).__name__
                else False
                if isinstance(kind, Boolean)
                else 0
                if isinstance(kind, Integer)
                else {}
                if isinstance(kind, JSON)
                else "x"
            )
    async with world.services.db() as db, db.begin():
        await db.execute(insert(table).values(**values))
    sessions = (await world.show(ref))["sessions"]
    assert isinstance(sessions, list)
    assert len(sessions) == 1
    allowed = {"id", "agent_id", "agent_name", "owner", "kind", "via", "state", "status"}
    allowed |= {"started_at", "ended_at", "end_reason", "exit_status", "participants"}
    assert set(sessions[0]) <= allowed | {"transcript_digest"}
