"""Every class of bad input and forbidden action on /api/v1/tickets: a clear refusal, nothing
changed, and an audit event where it concerns access; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from broker.app import create_app
from broker.config import load_config
from tests.component.test_tickets_support import Json, World, audit_events, make_world
from tests.support.api import Api

pytestmark = pytest.mark.postgres


@pytest.fixture
async def world(api: Api) -> World:
    return await make_world(api)


async def unchanged(world: World, ref: str, before: dict[str, object]) -> None:
    after = await world.show(ref)
    for key in ("status", "level", "assignee", "agents", "notes", "history", "attachments"):
        assert after[key] == before[key], key


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


async def test_unknown_and_malformed_ticket_ids(world: World) -> None:
    """Unknown tickets answer 404 on every route; malformed ids 400; ids are T-<n> or <n>."""
    for method, path, body in [
        ("GET", "/tickets/T-999999", None),
        ("GET", "/tickets/999999/session-check", None),
        ("POST", "/tickets/T-999999/escalate", {"to": 2, "reason": "x"}),
        ("POST", "/tickets/T-999999/notes", {"text": "x"}),
        ("POST", "/tickets/T-999999/take", None),
        ("POST", "/tickets/T-999999/resolve", {"solution": "x"}),
    ]:
        await world.refused(method, path, body, world.bob, 404, "not_found")
    for bad in ["T-0", "T-01", "abc", "T-1234567890", "T-1%2F..", "-5"]:
        await world.refused("GET", f"/tickets/{bad}", None, world.bob, 400, "invalid_name")


async def test_other_customers_tickets_look_unknown(world: World) -> None:
    """Staff outside the customer get the unknown-ticket answer everywhere, audited as denied."""
    ref = await world.escalated()
    before = await world.show(ref)
    unknown = await world.refused("GET", "/tickets/T-999999", None, world.gina, 404, "not_found")
    calls = [
        ("GET", f"/tickets/{ref}", None),
        ("GET", f"/tickets/{ref}/session-check?agent=web01", None),
        ("POST", f"/tickets/{ref}/take", None),
        ("POST", f"/tickets/{ref}/notes", {"text": "hello"}),
        ("POST", f"/tickets/{ref}/escalate", {"to": 3, "reason": "x"}),
        ("POST", f"/tickets/{ref}/link", {"agent": "gx01"}),
        ("POST", f"/tickets/{ref}/resolve", {"solution": "x"}),
    ]
    for method, path, body in calls:
        message = await world.refused(method, path, body, world.gina, 404, "not_found")
        assert message == unknown.replace("T-999999", ref)
    download = await world.api.client.get(
        f"/files/tickets/{ref}/attachments/x.txt", headers=Api.headers(world.gina)
    )
    assert download.status == 404
    await unchanged(world, ref, before)
    denied = [
        e
        for e in await audit_events(world.api)
        if e["actor"] == "gina" and e["outcome"] == "denied" and e["target"] == ref
    ]
    assert len(denied) == len(calls) + 1
    assert {e["details"]["code"] for e in denied} == {"customer_scope"}
    refused = await world.refused(
        "POST", "/tickets", {"title": "x", "customer": "acme"}, world.gina, 403, "customer_scope"
    )
    assert "acme" in refused


async def test_closed_and_resolved_tickets_are_not_worked(world: World) -> None:
    """Notes, escalation, taking and links on a closed ticket are refused with the reason."""
    ref = await world.escalated()
    await world.call("POST", f"/tickets/{ref}/resolve", {"solution": "done"}, world.bob)
    await world.call("POST", f"/tickets/{ref}/close", None, world.bob)
    before = await world.show(ref)
    for method, path, body in [
        ("POST", f"/tickets/{ref}/notes", {"text": "late"}),
        ("POST", f"/tickets/{ref}/escalate", {"to": 3, "reason": "x"}),
        ("POST", f"/tickets/{ref}/take", None),
        ("POST", f"/tickets/{ref}/link", {"agent": "db01"}),
        ("POST", f"/tickets/{ref}/resolve", {"solution": "again"}),
    ]:
        message = await world.refused(method, path, body, world.bob, 403, "ticket_not_open")
        assert "closed; reopen it first" in message
    await world.refused("POST", f"/tickets/{ref}/close", None, world.bob, 409, "ticket_closed")
    check = await world.call("GET", f"/tickets/{ref}/session-check", token=world.bob)
    assert (check["allowed"], check["code"]) == (False, "ticket_not_open")
    await unchanged(world, ref, before)
    denied = [e for e in await audit_events(world.api, "ticket.note") if e["outcome"] == "denied"]
    assert denied
    assert denied[0]["details"]["code"] == "ticket_not_open"


async def test_forbidden_transitions_change_nothing(world: World) -> None:
    """Actions the status table has no row for are refused with its code; nothing changes."""
    ref = await world.escalated()
    before = await world.show(ref)
    for action, body, code in [
        ("close", None, "not_resolved"),
        ("resume", None, "not_pending"),
        ("reopen", None, "not_reopenable"),
    ]:
        await world.refused("POST", f"/tickets/{ref}/{action}", body, world.bob, 409, code)
    await world.call("POST", f"/tickets/{ref}/open", None, world.bob)
    await world.refused("POST", f"/tickets/{ref}/open", None, world.bob, 409, "already_in_status")
    await world.call("POST", f"/tickets/{ref}/pending", None, world.bob)
    await world.refused("POST", f"/tickets/{ref}/open", None, world.bob, 409, "use_resume")
    await world.refused(
        "POST", f"/tickets/{ref}/resolve", {"solution": " \n "}, world.bob, 400, "invalid_input"
    )
    after = await world.show(ref)
    assert (after["status"], after["assignee"]) == ("pending", None)
    assert after["history"] == before["history"]
    assert after["solution"] is None


async def test_bad_escalations_and_hand_backs(world: World) -> None:
    """No reason, the wrong direction, too far, or past level 3: refused, level unchanged."""
    ref = await world.ticket()
    before = await world.show(ref)
    esc = f"/tickets/{ref}/escalate"
    back = f"/tickets/{ref}/hand-back"
    await world.refused("POST", esc, {"to": 2}, world.lena, 422, "reason_required")
    await world.refused("POST", esc, {"to": 2, "reason": "  "}, world.lena, 422, "reason_required")
    await world.refused("POST", esc, {"to": 1, "reason": "x"}, world.lena, 403, "not_upward")
    await world.refused("POST", esc, {"to": 3, "reason": "x"}, world.lena, 403, "escalate_too_far")
    await world.refused("POST", back, {"to": 1, "reason": "x"}, world.lena, 403, "bottom_level")
    for to in (0, 4, "2", True, None):
        await world.refused(
            "POST", esc, {"to": to, "reason": "x"}, world.lena, 422, "validation_failed"
        )
    await world.refused(
        "POST", esc, {"to": 2, "reason": "x" * 2001}, world.lena, 422, "validation_failed"
    )
    await world.refused(
        "POST", esc, {"to": 2, "reason": "x", "extra": 1}, world.lena, 422, "validation_failed"
    )
    await world.refused("POST", esc, {"to": 2, "reason": "x"}, "admin", 403, "admin_not_worker")
    await unchanged(world, ref, before)
    top = await world.escalated(to=3)
    await world.refused(
        "POST", f"/tickets/{top}/escalate", {"to": 3, "reason": "x"}, world.tess, 403, "top_level"
    )
    await world.refused(
        "POST",
        f"/tickets/{top}/hand-back",
        {"to": 3, "reason": "x"},
        world.tess,
        403,
        "not_downward",
    )
    await world.refused(
        "POST", f"/tickets/{top}/hand-back", {"to": 1}, world.tess, 422, "reason_required"
    )
    await world.refused(
        "POST",
        f"/tickets/{top}/hand-back",
        {"to": 2, "reason": "x"},
        world.bob,
        403,
        "level_too_low",
    )
    denied = [
        e for e in await audit_events(world.api, "ticket.escalate") if e["outcome"] == "denied"
    ]
    assert {e["details"]["code"] for e in denied} >= {"not_upward", "escalate_too_far"}


async def test_create_refuses_bad_levels_customers_and_agents(world: World) -> None:
    """Levels outside 1-3, levels above one's own, unknown customers and foreign agents."""
    base = {"title": "t", "customer": "acme"}
    for level in (0, 4, -1, "1", True, 1.5):
        await world.refused(
            "POST", "/tickets", {**base, "level": level}, world.bob, 422, "validation_failed"
        )
    await world.refused("POST", "/tickets", {**base, "level": 2}, world.lena, 403, "level_too_low")
    made = await world.call("POST", "/tickets", {**base, "level": 3}, "admin", expect=201)
    assert made["level"] == 3
    await world.refused(
        "POST", "/tickets", {"title": "t", "customer": "nobody"}, world.una, 404, "unknown_customer"
    )
    await world.refused(
        "POST", "/tickets", {"title": "t", "customer": "Acme!"}, world.una, 400, "invalid_name"
    )
    await world.refused(
        "POST", "/tickets", {**base, "agents": ["gx01"]}, world.una, 403, "agent_customer"
    )
    await world.refused(
        "POST", "/tickets", {**base, "agents": ["web01", "old01"]}, world.una, 403, "agent_revoked"
    )
    await world.refused(
        "POST", "/tickets", {**base, "agents": ["gx01"]}, world.lena, 404, "unknown_agent"
    )
    await world.refused(
        "POST", "/tickets", {**base, "agents": ["bad name"]}, world.lena, 400, "invalid_name"
    )
    assert [t["id"] for t in await world.listed()] == [made["id"]]


async def test_linking_refusals(world: World) -> None:
    """Agents of another customer, revoked agents and links above one's level are refused."""
    ref = await world.ticket(agents=())
    before = await world.show(ref)
    link = f"/tickets/{ref}/link"
    await world.refused("POST", link, {"agent": "gx01"}, world.una, 403, "agent_customer")
    await world.refused("POST", link, {"agent": "gx01"}, world.lena, 404, "unknown_agent")
    await world.refused("POST", link, {"agent": "old01"}, world.lena, 403, "agent_revoked")
    await world.refused("POST", link, {"agent": "nope"}, world.lena, 404, "unknown_agent")
    await world.refused("POST", link, {"agent": "a/../b"}, world.lena, 400, "invalid_name")
    await unchanged(world, ref, before)
    high = await world.escalated()
    await world.refused(
        "POST", f"/tickets/{high}/link", {"agent": "db01"}, world.lena, 403, "level_too_low"
    )
    denied = [e for e in await audit_events(world.api, "ticket.link") if e["outcome"] == "denied"]
    assert {e["details"]["code"] for e in denied} == {
        "agent_customer",
        "agent_revoked",
        "level_too_low",
    }


async def test_assignment_refusals(world: World) -> None:
    """Admins and people of the wrong level, customer or account state are not assignees."""
    ref = await world.escalated()
    assign = f"/tickets/{ref}/assign"
    await world.refused("POST", assign, {"user": "admin"}, "admin", 403, "assignee_admin")
    await world.refused("POST", assign, {"user": "lena"}, "admin", 403, "assignee_level_too_low")
    await world.refused("POST", assign, {"user": "gina"}, "admin", 403, "assignee_customer_scope")
    await world.refused("POST", assign, {"user": "ghost"}, "admin", 404, "unknown_user")
    await world.refused("POST", assign, {"user": "Bad Name"}, "admin", 400, "invalid_name")
    await world.refused(
        "POST", f"/tickets/{ref}/take", None, world.lena, 403, "assignee_level_too_low"
    )
    await world.call("POST", f"/tickets/{ref}/take", token=world.bob)
    await world.refused("POST", f"/tickets/{ref}/take", None, world.carl, 403, "not_assignee")
    await world.refused("POST", assign, {"user": "carl"}, world.carl, 403, "not_assignee")
    await world.call("POST", "/users/carl/disable", token="admin")
    await world.refused("POST", assign, {"user": "carl"}, world.bob, 403, "assignee_disabled")
    assert (await world.show(ref))["assignee"] == "bob"


async def test_two_staff_take_at_once_one_wins(world: World) -> None:
    """Of two people taking the same unassigned ticket at the same moment, exactly one wins."""
    for _ in range(3):
        ref = await world.escalated()
        results = await asyncio.gather(
            world.api.call("POST", f"/tickets/{ref}/take", token=world.bob),
            world.api.call("POST", f"/tickets/{ref}/take", token=world.carl),
        )
        statuses = sorted(status for status, _ in results)
        assert statuses[0] == 200, results
        assert statuses[1] in (403, 409), results
        winner = next(d for s, d in results if s == 200)
        loser = next(d for s, d in results if s != 200)
        assert isinstance(winner, dict)
        assert isinstance(loser, dict)
        assert loser["error"]["code"] in ("already_taken", "not_assignee")
        assert (await world.show(ref))["assignee"] == winner["assignee"]


async def test_scopes_and_admin_limits(world: World) -> None:
    """Read-only tokens change nothing; admins manage tickets but do not work them."""
    reader = await world.api.staff_token("rita", "level2", customers=["acme"], scopes=["read"])
    ref = await world.escalated()
    for method, path, body in [
        ("POST", "/tickets", {"title": "t", "customer": "acme"}),
        ("POST", f"/tickets/{ref}/notes", {"text": "x"}),
        ("POST", f"/tickets/{ref}/assign", {"user": "bob"}),
        ("POST", f"/tickets/{ref}/take", None),
    ]:
        await world.refused(method, path, body, reader, 403, "scope_missing")
    await world.call("GET", f"/tickets/{ref}", token=reader)
    for method, path, body, code in [
        ("POST", f"/tickets/{ref}/notes", {"text": "x"}, "admin_not_worker"),
        ("POST", f"/tickets/{ref}/resolve", {"solution": "x"}, "admin_not_worker"),
        ("POST", f"/tickets/{ref}/open", None, "admin_not_worker"),
        ("POST", f"/tickets/{ref}/take", None, "assignee_admin"),
    ]:
        await world.refused(method, path, body, "admin", 403, code)


async def test_oversize_text_and_control_characters(world: World) -> None:
    """Over-long texts are refused; HTML stays text; escape sequences and controls are gone."""
    big = [
        ({"title": "x" * 201, "customer": "acme"}, "/tickets"),
        ({"title": "x", "customer": "acme", "description": "d" * 20_001}, "/tickets"),
        ({"title": "x", "customer": "acme", "requester": "r" * 201}, "/tickets"),
    ]
    for body, path in big:
        await world.refused("POST", path, body, world.lena, 422, "validation_failed")
    ref = await world.ticket()
    await world.refused(
        "POST",
        f"/tickets/{ref}/notes",
        {"text": "n" * 20_001},
        world.lena,
        422,
        "validation_failed",
    )
    await world.refused(
        "POST", f"/tickets/{ref}/notes", {"text": "\x1b\x07 "}, world.lena, 400, "invalid_input"
    )
    title = "<img src=x onerror=alert(1)>\x1b]0;owned\x07 Printer\u202e\x00"
    made = await world.call(
        "POST",
        "/tickets",
        {"title": title, "customer": "acme", "description": "a\tb\r\nc\x1b[2J"},
        world.lena,
        expect=201,
    )
    assert made["title"] == "<img src=x onerror=alert(1)>]0;owned Printer"
    note = await world.call(
        "POST",
        f"/tickets/{made['id']}/notes",
        {"text": "<script>x</script>\n\x1b[31mred\x1b[0m\x9b\x7f"},
        world.lena,
        expect=201,
    )
    assert note["text"] == "<script>x</script>\n[31mred[0m"
    shown = await world.show(str(made["id"]))
    assert shown["description"] == "a\tb\nc[2J"
    await world.refused(
        "POST",
        "/tickets",
        {"title": "\x1b\x07", "customer": "acme"},
        world.lena,
        400,
        "invalid_input",
    )


async def upload(world: World, ref: str, name: str, data: bytes) -> tuple[int, Json]:
    form = aiohttp.FormData(quote_fields=False)
    form.add_field("file", data, filename=name, content_type="application/octet-stream")
    resp = await world.api.client.post(
        f"/api/v1/tickets/{ref}/attachments", data=form, headers=Api.headers(world.lena)
    )
    body = await resp.json()
    assert isinstance(body, dict)
    return resp.status, body


async def test_attachment_names_that_leave_their_directory(world: World) -> None:
    """Upload names with separators, '..' or a leading dot are refused; nothing is written."""
    ref = await world.ticket()
    root = world.services.config.attachments_dir
    for name in ["../evil.txt", "..", "a/b.txt", "..\\evil.txt", "/etc/passwd", ".bashrc", "-rf"]:
        status, body = await upload(world, ref, name, b"x")
        assert (status, body["error"]["code"]) == (400, "bad_attachment_name"), name
    for encoded in ["evil%00.txt", "..%2Fescape.txt", "x%0Ay.txt"]:
        # RFC 5987 names arrive decoded, so NUL and separators reach the name check as such.
        raw = (
            b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename*=utf-8''"
            + encoded.encode()
            + b"\r\n\r\nx\r\n--B--\r\n"
        )
        resp = await world.api.client.post(
            f"/api/v1/tickets/{ref}/attachments",
            data=raw,
            headers={
                **Api.headers(world.lena),
                "Content-Type": "multipart/form-data; boundary=B",
            },
        )
        answer = await resp.json()
        assert (resp.status, answer["error"]["code"]) == (400, "bad_attachment_name"), encoded
    form = aiohttp.FormData()
    form.add_field("other", b"x", filename="a.txt")
    resp = await world.api.client.post(
        f"/api/v1/tickets/{ref}/attachments", data=form, headers=Api.headers(world.lena)
    )
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "file_missing"
    resp = await world.api.client.post(
        f"/api/v1/tickets/{ref}/attachments", json={"x": 1}, headers=Api.headers(world.lena)
    )
    assert resp.status == 415
    assert files_under(root) == []
    assert not (root.parent / "evil.txt").exists()
    for bad in ["..%2F..%2Fsecondline.toml", "%2e%2e", ".upload-x"]:
        resp = await world.api.client.get(
            f"/files/tickets/{ref}/attachments/{bad}", headers=Api.headers(world.lena)
        )
        assert resp.status in (400, 404), bad
        assert b"public_url" not in await resp.read()
    assert (await world.show(ref))["attachments"] == []


async def test_oversize_attachment_is_refused_and_leaves_nothing(
    data_dir: Path, aiohttp_client: object
) -> None:
    """A file over max_attachment_bytes is refused with 413 while streaming; no file remains."""
    config = load_config(data_dir, env={}, overrides={"max_attachment_bytes": 1000})
    client = await aiohttp_client(create_app(config))  # type: ignore[operator]
    world = await make_world(Api(client, (data_dir / "admin.token").read_text().strip()))
    ref = await world.ticket()
    status, body = await upload(world, ref, "big.bin", b"x" * 1001)
    assert (status, body["error"]["code"]) == (413, "attachment_too_large")
    assert files_under(config.attachments_dir) == []
    status, body = await upload(world, ref, "fits.bin", b"x" * 1000)
    assert status == 201
    assert body["size"] == 1000
    assert [p.name for p in files_under(config.attachments_dir)] == ["fits.bin"]
