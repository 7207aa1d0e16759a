"""Setup paths and path traversal against the real app on loopback (SQLite and PostgreSQL):
there is no HTTP setup path, and no name from a URL leaves its directory or reaches a file
the caller may not read."""

from __future__ import annotations

import aiohttp
import pytest
from sqlalchemy import func, select

from broker.db.models_sessions import RemoteSession
from broker.db.models_staff import User
from tests.component.test_tickets_support import World, audit_events, make_world, session_row
from tests.support.api import Api, refusals_of

pytestmark = pytest.mark.postgres

SETUP_PATHS = (
    "/setup",
    "/install",
    "/installer",
    "/setup/",
    "/SetupWizard.aspx",
    "/SetupWizard.aspx/",
    "/console/setup",
    "/admin/setup",
    "/api/v1/setup",
    "/api/v1/init",
    "/api/v1/install",
    "/api/v1/bootstrap",
    "/api/v1/admin/setup",
    "/api/v1/first-admin",
)


async def user_count(world: World) -> int:
    async with world.services.db() as db:
        return int((await db.execute(select(func.count(User.id)))).scalar_one())


async def assert_error_shape(resp: aiohttp.ClientResponse, path: str) -> None:
    """The API and the /files downloads answer the stable JSON error with a sentence."""
    assert path.startswith(("/api/", "/files/")), path
    data = await resp.json()
    assert set(data["error"]) == {"code", "message"}, path
    assert data["error"]["message"].strip(), path


@pytest.fixture
async def world(api: Api) -> World:
    return await make_world(api)


async def test_no_setup_path_answers_and_no_admin_appears(world: World) -> None:
    """Every setup-looking path answers 404 to GET and POST, with or without a body, and
    no account is created."""
    client = world.api.client
    before = await user_count(world)
    body = {"name": "evil", "role": "admin", "password": "x" * 12}
    for path in SETUP_PATHS:
        for method in ("GET", "POST", "PUT"):
            resp = await client.request(method, path, json=body)
            assert resp.status == 404, (method, path, resp.status)
    assert await user_count(world) == before


async def test_setup_spellings_that_reach_the_api_still_need_a_token(world: World) -> None:
    """Dot segments that normalise into /api/v1/users reach the real route, which wants a
    token (401, audited); nobody is added."""
    client = world.api.client
    before = await user_count(world)
    refused_before = refusals_of(await audit_events(world.api), "auth.refused")
    body = {"name": "evil", "role": "admin"}
    for path in (
        "/setup/../api/v1/users",
        "/SetupWizard.aspx/../api/v1/users",
        "/api/v1/setup/../users",
        "/api/v1/init/%2e%2e/users",
    ):
        resp = await client.post(path, json=body)
        assert resp.status in (401, 404), (path, resp.status)
        if resp.status == 401:
            assert (await resp.json())["error"]["code"] == "unauthenticated"
    assert await user_count(world) == before
    assert refusals_of(await audit_events(world.api), "auth.refused") > refused_before


async def test_ticket_ids_with_dot_segments_are_refused(world: World) -> None:
    """Ticket ids that try to climb out (T-1/../2, encoded slashes, NUL) are 400 or 404 on the
    API and on attachment downloads; nothing else is read."""
    ref = await world.ticket()
    client = world.api.client
    headers = Api.headers(world.bob)
    for bad in (
        f"{ref}%2F..%2FT-2",
        f"{ref}%2f%2e%2e",
        "..%2f..%2fsecondline.toml",
        "%2e%2e",
        f"{ref}%00",
        f"{ref}%5c..%5cT-2",
        "T-1%20",
    ):
        for path in (f"/api/v1/tickets/{bad}", f"/files/tickets/{bad}/attachments/a.txt"):
            resp = await client.get(path, headers=headers)
            assert resp.status in (400, 404), (path, resp.status)
            await assert_error_shape(resp, path)


async def test_attachment_download_names_never_leave_the_ticket(world: World) -> None:
    """Download names with dot segments, encoded separators, NUL or another ticket's file
    answer 404 and return none of the broker's files."""
    ref = await world.ticket()
    other = await world.ticket()
    form_file = b"secret of the other ticket"
    form = aiohttp.FormData()
    form.add_field("file", form_file, filename="other.txt")
    resp = await world.api.client.post(
        f"/api/v1/tickets/{other}/attachments", data=form, headers=Api.headers(world.lena)
    )
    assert resp.status == 201, await resp.text()
    client = world.api.client
    headers = Api.headers(world.bob)
    for name in (
        "..%2f..%2fsecondline.toml",
        "%2e%2e%2fsecondline.toml",
        "..%5c..%5csecondline.toml",
        "%2e%2e",
        "other.txt%00.png",
        f"..%2f{other}%2fother.txt",
        "..%2f..%2fkeys%2fssh_host_key",
        "%252e%252e%252fsecondline.toml",
    ):
        resp = await client.get(f"/files/tickets/{ref}/attachments/{name}", headers=headers)
        text = await resp.text()
        assert resp.status in (400, 404), (name, resp.status)
        assert "secret of the other ticket" not in text, name
        assert "db_url" not in text, name
        assert "PRIVATE KEY" not in text, name


async def test_session_ids_that_climb_out_are_unknown(world: World) -> None:
    """Session ids with '..', encoded slashes, NUL or the wrong length are 404 on show, kill,
    transcript and download; no session row changes."""
    client = world.api.client
    headers = Api.headers(world.api.admin_token)
    for bad in (
        "s-..%2f..%2fsecondline.toml",
        "s-%2e%2e",
        "s-%00AAAAAAAAAAAAAAAAAAAAA",
        "s-AAAAAAAAAAAAAAAAAAAAA%2f",
        "..%2fs-AAAAAAAAAAAAAAAAAAAAAA",
        "s-AAAAAAAAAAAAAAAAAAAAAA%0a",
        "s-" + "A" * 400,
    ):
        for method, path in (
            ("GET", f"/api/v1/sessions/{bad}"),
            ("GET", f"/api/v1/sessions/{bad}/transcript"),
            ("POST", f"/api/v1/sessions/{bad}/kill"),
            ("GET", f"/files/sessions/{bad}/transcript.cast"),
            ("GET", f"/files/sessions/{bad}/transcript.txt"),
        ):
            resp = await client.request(method, path, headers=headers)
            assert resp.status == 404, (method, path, resp.status)
            await assert_error_shape(resp, path)
    async with world.services.db() as db:
        assert (await db.execute(select(func.count(RemoteSession.id)))).scalar_one() == 0


async def test_transcript_format_is_one_of_three(world: World) -> None:
    """A transcript format other than cast, txt or json (dot segments included) is refused
    before any file is opened."""
    async with world.services.db() as db, db.begin():
        db.add(session_row("s-" + "F" * 22, 1001, "acme", "bob", state="ended"))
    client = world.api.client
    headers = Api.headers(world.api.admin_token)
    for fmt in ("sig", "cast%2f..%2f..%2fsecondline.toml", "chain", "CAST", "cast%00"):
        resp = await client.get(f"/files/sessions/s-{'F' * 22}/transcript.{fmt}", headers=headers)
        assert resp.status in (400, 404), (fmt, resp.status)
        assert "db_url" not in await resp.text()
