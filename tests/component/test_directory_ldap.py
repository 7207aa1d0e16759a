"""Directory accounts against a real OpenLDAP (slapd started by the test): the sync, console
sign-in by a bind as the person, hostile user names, an outage, a directory that does not
answer, and losing a group while a shell is open."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncssh
import pytest

from broker.app import CONFIG
from broker.directory.feature import DIRECTORIES
from broker.directory.ldap_client import DirectoryClient, DirectoryUnavailable
from tests.component.test_sessions_harness import WAIT, world
from tests.support.api import Api
from tests.support.blackhole_proxy import BlackholeProxy
from tests.support.console import PASSWORD, ConsoleClient
from tests.support.slapd import (
    BASE_DN,
    SERVICE_DN,
    SERVICE_PASSWORD,
    USER_PASSWORD,
    Slapd,
)

pytestmark = [
    pytest.mark.postgres,
    # broker.agents.tokens (another part) still calls Result.tuples().
    pytest.mark.filterwarnings("ignore:The Result.tuples:DeprecationWarning"),
]

ROLES = "cn=helpdesk-l1=level1,cn=helpdesk-l2=level2"


async def call(api: Api, method: str, path: str, body: object = None, **kw: Any) -> tuple[int, Any]:
    """``api.call`` with the JSON answer typed for indexing."""
    return await api.call(method, path, body, **kw)


def directory_body(url: str, **extra: object) -> dict[str, object]:
    return {
        "name": "corp",
        "url": url,
        "bind_dn": SERVICE_DN,
        "bind_password": SERVICE_PASSWORD + "\n",
        "base_dn": BASE_DN,
        "roles": ROLES,
        "customer_groups": "cn=cust-acme=acme",
        **extra,
    }


@pytest.fixture
async def slapd(tmp_path: Path) -> AsyncIterator[Slapd]:
    server = Slapd(tmp_path / "slapd")
    server.prepare(asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode())
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def add_directory(api: Api, url: str, **extra: object) -> None:
    status, data = await call(api, "POST", "/directories", directory_body(url, **extra))
    assert status == 201, data
    status, data = await call(api, "POST", "/directories/corp/sync")
    assert status == 200, data


def console(api: Api) -> ConsoleClient:
    return ConsoleClient(api.client, api.client.app[CONFIG].public_url)


async def users(api: Api) -> dict[str, dict[str, Any]]:
    status, data = await call(api, "GET", "/users")
    assert status == 200
    return {u["name"]: u for u in data}


async def test_people_in_mapped_groups_become_directory_accounts(api: Api, slapd: Slapd) -> None:
    """A sync makes accounts for the people of the mapped groups with the role, customers
    and SSH key the directory gives them; the service account's password never comes out."""
    await call(api, "POST", "/customers", {"name": "acme"})
    await add_directory(api, slapd.url)
    found = await users(api)
    dora = found["dora"]
    assert (dora["role"], dora["source"], dora["source_name"]) == ("level2", "directory", "corp")
    assert dora["customers"] == ["acme"]
    assert dora["display_name"] == "Dora Directory"
    assert [k["source"] for k in dora["ssh_keys"]] == ["directory"]
    # emil is level 1 but in no customer group; fritz is in no mapped group.
    assert "emil" not in found
    assert "fritz" not in found
    assert found["admin"]["source"] == "local"
    status, listed = await call(api, "GET", "/directories")
    assert status == 200
    assert listed[0]["healthy"] is True
    assert SERVICE_PASSWORD not in str(listed)
    # The directory owns its keys: removing one here is refused (and audited).
    fingerprint = dora["ssh_keys"][0]["fingerprint"]
    status, data = await call(api, "DELETE", f"/users/dora/keys?fingerprint={quote(fingerprint)}")
    assert status == 403
    assert data["error"]["code"] == "directory_owned"


async def test_console_sign_in_is_a_bind_as_the_person(api: Api, slapd: Slapd) -> None:
    """The directory password signs dora in (and sets up her authenticator); a wrong or an
    empty password, or Secondline's own password field, does not."""
    await call(api, "POST", "/customers", {"name": "acme"})
    await add_directory(api, slapd.url)
    b = console(api)
    for wrong in ("wrong password", "", PASSWORD):
        page = await b.sign_in("dora", wrong, code="")
        assert page.status == 401, page.text[:300]
        assert "User name, password or code is wrong" in page.text
    done = await b.enrol("dora", USER_PASSWORD)
    assert done.location == "/console/"
    home = await b.get("/console/")
    assert home.status == 200
    assert "Dora Directory" in home.text


@pytest.mark.parametrize("name", ["*)(uid=*", "*", "dora\x00", "dora)(|(uid=*", "d" * 4096])
async def test_hostile_user_names_match_nobody(api: Api, slapd: Slapd, name: str) -> None:
    """Filter metacharacters, NUL and 4 KB reach slapd escaped: they find nobody, so no
    bind is ever tried, and the console sign-in gives the usual answer."""
    await call(api, "POST", "/customers", {"name": "acme"})
    await add_directory(api, slapd.url)
    directories = api.client.app[DIRECTORIES]
    record = (await directories.store.all())[0]
    client = directories.client(record)
    assert await client.find(name) is None
    assert (await client.find("dora")) is not None
    page = await console(api).sign_in(name[:64], USER_PASSWORD, code="")
    assert page.status == 401
    assert "User name, password or code is wrong" in page.text


async def test_outage_refuses_directory_people_and_lets_local_staff_in(
    api: Api, slapd: Slapd
) -> None:
    """With slapd stopped, dora is refused with that reason, a local account signs in, and
    the directory is listed unhealthy; dora's account keeps its access (policy "keep")."""
    await call(api, "POST", "/customers", {"name": "acme"})
    await add_directory(api, slapd.url)
    status, _ = await call(
        api, "POST", "/users", {"name": "lena", "role": "level1", "password": PASSWORD}
    )
    assert status == 201
    await slapd.stop()
    status, data = await call(
        api, "POST", "/auth/login", {"user": "dora", "password": USER_PASSWORD}, token=None
    )
    assert status == 503
    assert "directory cannot be reached" in data["error"]["message"]
    page = await console(api).sign_in("dora", USER_PASSWORD, code="")
    assert page.status == 503
    assert "directory cannot be reached" in page.text
    status, data = await call(
        api, "POST", "/auth/login", {"user": "lena", "password": PASSWORD}, token=None
    )
    assert status == 201, data
    status, data = await call(api, "POST", "/directories/corp/sync")
    assert status == 200
    assert data["healthy"] is False
    assert "cannot reach" in data["health"]
    assert (await users(api))["dora"]["disabled"] is False


async def test_a_directory_that_never_answers_times_out_and_the_loop_runs_on(
    api: Api, slapd: Slapd
) -> None:
    """Behind a proxy that swallows everything, a sign-in ends at the directory's timeout
    with the outage answer, and the event loop keeps serving meanwhile."""
    await call(api, "POST", "/customers", {"name": "acme"})
    async with BlackholeProxy("127.0.0.1", slapd.port) as proxy:
        await add_directory(api, f"ldap://127.0.0.1:{proxy.port}", timeout_seconds=1.0)
        proxy.cut()
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.05)
                ticks += 1

        ticker = asyncio.get_running_loop().create_task(tick())
        started = time.monotonic()
        page = await console(api).sign_in("dora", USER_PASSWORD, code="")
        took = time.monotonic() - started
        ticker.cancel()
        assert page.status == 503
        assert "directory cannot be reached" in page.text
        assert took < WAIT
        # The loop was never held: the ticker ran all along (a blocked loop gives ~0).
        assert ticks >= int(took / 0.05) // 2
        records = await api.client.app[DIRECTORIES].store.all()
        with pytest.raises(DirectoryUnavailable, match="did not answer"):
            await DirectoryClient(records[0].connection, records[0].settings).everyone()
        proxy.restore()


async def test_losing_the_group_cuts_the_shell_and_the_console_says_why(
    data_dir: Path, tmp_path: Path
) -> None:
    """dora (helpdesk-l2 in slapd, her key from the directory) signs in to the console and
    opens a shell; removed from the group in slapd, the next sync cuts the shell within
    10 s and the console refuses her with the reason."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    server = Slapd(tmp_path / "slapd")
    server.prepare(key.export_public_key().decode().strip())
    await server.start()
    try:
        async with world(data_dir, tmp_path) as w:
            status, data = await w.call("POST", "/directories", directory_body(server.url))
            assert status == 201, data
            await w.call("POST", "/directories/corp/sync", expect=200)
            b = ConsoleClient(w.client, w.app[CONFIG].public_url)
            await b.enrol("dora", USER_PASSWORD)
            assert (await b.get("/console/")).status == 200
            ticket = await w.new_ticket(w.agent, assignee="dora")  # type: ignore[arg-type]
            conn = await w.ssh(ticket, key)
            proc = await conn.create_process(term_type="xterm")
            proc.stdin.write("echo READY-$((6*7))\n")
            async with asyncio.timeout(WAIT):
                seen = ""
                while "READY-42" not in seen:
                    seen += await proc.stdout.read(4096)
            await server.remove_member("helpdesk-l2", "dora")
            await w.call("POST", "/directories/corp/sync", expect=200)
            synced = time.monotonic()
            async with asyncio.timeout(10):
                await proc.wait_closed()
            assert time.monotonic() - synced < 10
            conn.close()
            found = {u["name"]: u for u in (await w.call("GET", "/users"))[1]}
            assert found["dora"]["disabled"] is True
            assert "helpdesk-l2" in found["dora"]["source_refusal"]
            # The open console page is signed out; signing in again says why.
            assert (await b.get("/console/")).status in (302, 303)
            page = await b.sign_in("dora", USER_PASSWORD, code=b.next_code())
            assert page.status == 401
            assert "gives your account no access" in page.text
            assert "helpdesk-l2" in page.text
            _, events = await w.call("GET", "/audit?limit=50&action=directory.access_lost")
            assert [e["target"] for e in events] == ["dora"]
            # Back in the group: access returns at the next sync.
            await server.add_member("helpdesk-l2", "dora")
            await w.call("POST", "/directories/corp/sync", expect=200)
            found = {u["name"]: u for u in (await w.call("GET", "/users"))[1]}
            assert found["dora"]["disabled"] is False
    finally:
        await server.stop()


async def test_outage_policy_end_takes_access_until_the_directory_is_back(
    api: Api, slapd: Slapd
) -> None:
    """With `on_outage: end`, a failed sync disables the directory's accounts with that
    reason; the first good sync after the outage gives access back."""
    await call(api, "POST", "/customers", {"name": "acme"})
    await add_directory(api, slapd.url, on_outage="end")
    await slapd.stop()
    status, data = await call(api, "POST", "/directories/corp/sync")
    assert (status, data["healthy"]) == (200, False)
    dora = (await users(api))["dora"]
    assert dora["disabled"] is True
    assert "could not be reached" in dora["source_refusal"]
    await slapd.start()
    await call(api, "POST", "/directories/corp/sync", expect=200)
    assert (await users(api))["dora"]["disabled"] is False
