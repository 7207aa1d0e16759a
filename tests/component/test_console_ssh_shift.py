"""The console's "Allow my key for this shift" (docs/identity.md): after a sign-in with
password and code it opens a code-less SSH window for the staff member's keys, audited;
signing out, removing the key and disabling the account end it."""

from __future__ import annotations

from urllib.parse import quote

import asyncssh
import pytest
from sqlalchemy import select

from broker.app import CONFIG
from broker.auth import shift_windows
from broker.db.models_staff import User
from broker.services import SERVICES
from tests.support.api import Api
from tests.support.console import ConsoleClient, add_customer, add_staff

pytestmark = pytest.mark.postgres


def new_key() -> tuple[str, str]:
    key = asyncssh.generate_private_key("ssh-ed25519")
    public = key.export_public_key().decode().strip()
    return public, key.convert_to_public().get_fingerprint("sha256")


async def window_open(api: Api, user_id: int, fingerprint: str) -> bool:
    services = api.client.app[SERVICES]
    async with services.db() as db:
        return await shift_windows.is_open(db, user_id, fingerprint, services.clock())


async def bob_with_key(api: Api) -> tuple[ConsoleClient, int, str]:
    await add_customer(api, "acme")
    await add_staff(api, "bob", "level2", ["acme"])
    public, fingerprint = new_key()
    await api.call("POST", "/users/bob/keys", {"public_key": public}, expect=201)
    async with api.client.app[SERVICES].db() as db:
        user_id = (await db.execute(select(User.id).where(User.name == "bob"))).scalar_one()
    bob = ConsoleClient(api.client, api.client.app[CONFIG].public_url)
    await bob.enrol("bob")
    return bob, user_id, fingerprint


async def allow(bob: ConsoleClient, language: str = "en") -> str:
    headers = {"Accept-Language": language}
    done = await bob.post_form(
        "/console/settings/ssh-shift", {}, csrf_from="/console/settings", headers=headers
    )
    assert done.status == 303, done
    assert done.location == "/console/settings?done=ssh_shift", done.location
    page = await bob.get(done.location, headers=headers)
    return page.text


async def test_allow_my_key_opens_the_window_and_sign_out_ends_it(api: Api) -> None:
    bob, user_id, fingerprint = await bob_with_key(api)
    settings = await bob.get("/console/settings", headers={"Accept-Language": "de"})
    assert "Meinen Schlüssel für diese Schicht erlauben" in settings.text
    assert not await window_open(api, user_id, fingerprint)

    text = await allow(bob)
    assert "Your SSH keys need no code for the rest of this shift" in text
    assert await window_open(api, user_id, fingerprint)
    _, events = await api.call("GET", "/audit?action=ssh.shift_window_opened")
    assert isinstance(events, list | dict)
    assert "ssh.shift_window_opened" in str(events)
    assert fingerprint in str(events)

    out = await bob.post_form("/console/logout", {}, csrf_from="/console/settings")
    assert out.status == 303
    assert not await window_open(api, user_id, fingerprint)
    _, logouts = await api.call("GET", "/audit?action=logout")
    assert isinstance(logouts, list)
    assert logouts[0]["details"] == {"ssh_windows_ended": 1}


async def test_key_removal_and_disable_end_the_window(api: Api) -> None:
    bob, user_id, fingerprint = await bob_with_key(api)
    german = await allow(bob, "de")
    assert "brauchen für den Rest dieser Schicht keinen Code" in german
    assert await window_open(api, user_id, fingerprint)
    await api.call("DELETE", f"/users/bob/keys?fingerprint={quote(fingerprint)}", expect=200)
    assert not await window_open(api, user_id, fingerprint)

    public, second = new_key()
    await api.call("POST", "/users/bob/keys", {"public_key": public}, expect=201)
    await allow(bob)
    assert await window_open(api, user_id, second)
    await api.call("POST", "/users/bob/disable", expect=200)
    assert not await window_open(api, user_id, second)
