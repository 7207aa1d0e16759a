"""Joining a live session from OpenSSH (`ssh T-1042+s-…@broker`): the newcomer sees the
screen as it is at once, then the live stream; level 3 types, a level-2 colleague who was not
invited watches."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.broker import cli_env
from tests.support.site import Site, Terminal, keygen, new_ticket, ok, sessions_of, start_agent

pytestmark = [pytest.mark.e2e]


async def ssh_as(site: Site, user: str, name: str) -> Terminal:
    """An interactive `ssh -tt` as the staff member ``name`` (their own key)."""
    argv = site.ssh_argv(user, "-tt", key=site.tmp / f"{name}_ed25519")
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_env(site.tmp),
    )
    site.children.append(proc)  # reaped by the site fixture if the test fails
    return Terminal(proc)


async def test_ssh_joiner_and_watcher_start_with_the_current_screen(site: Site) -> None:
    """Carol (level 3) and dave (level 2, not invited) come into bob's shell mid-way: both
    see what bob printed before without new output; carol's typing reaches the shell, dave
    is told that his does not."""
    for name, role in (("carol", "level3"), ("dave", "level2")):
        key = keygen(site.tmp / f"{name}_ed25519")
        ok(
            site.admin(
                "user", "add", name, "--role", role, "--customer", "acme",
                "--ssh-key", f"{key}.pub",
            )
        )  # fmt: skip
    await start_agent(site, "web01", "unattended")
    site.ticket = new_ticket(site, "web01")
    bob = await site.interactive(site.ticket)
    bob.type("printf '\\033[1;33mvor-dem-beitritt\\033[0m %s\\n' $((6*7))\n")
    await bob.expect(b"vor-dem-beitritt\x1b[0m 42")
    sid = str(sessions_of(site, site.ticket)[0]["id"])

    carol = await ssh_as(site, f"{site.ticket}+{sid}", "carol")
    await carol.expect(b"vor-dem-beitritt")
    await carol.expect(b"42")
    dave = await ssh_as(site, f"{site.ticket}+{sid}", "dave")
    await dave.expect(b"vor-dem-beitritt")

    carol.type("echo carol-typed-$((2+3))\n")
    await bob.expect(b"carol-typed-5")
    await dave.expect(b"carol-typed-5")
    dave.type("echo dave-typed\n")
    bob.type("echo after-$((1+1))\n")
    await bob.expect(b"after-2")
    await dave.expect(b"after-2")
    assert b"dave-typed" not in bob.out

    bob.type("exit\n")
    await bob.finish()
    _code, carol_err = await carol.finish()
    _code, dave_err = await dave.finish()
    assert "what you type is not sent" in dave_err
    assert "what you type is not sent" not in carol_err
