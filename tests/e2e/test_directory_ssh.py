"""A directory account end to end: a real slapd, `secondline serve`, a really enrolled agent
and the real OpenSSH client. dora (helpdesk-l2 in slapd, her key in its sshPublicKey)
opens a shell; removed from the group in slapd, the sync cuts the shell within 10 s."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.support.broker import cli_env
from tests.support.site import Site, Terminal, keygen, new_ticket, ok, start_agent
from tests.support.slapd import BASE_DN, SERVICE_DN, SERVICE_PASSWORD, Slapd

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


async def test_a_directory_shell_is_cut_when_the_group_is_left(site: Site) -> None:
    """`directory add` and `directory sync` make dora; her OpenSSH shell runs; after
    `ldapmodify` takes her out of helpdesk-l2, the next sync ends it within 10 s."""
    key = keygen(site.tmp / "dora_ed25519")
    slapd = Slapd(site.tmp / "slapd")
    slapd.prepare(key.with_suffix(".pub").read_text())
    await slapd.start()
    try:
        password = site.tmp / "directory.pw"
        password.write_text(SERVICE_PASSWORD + "\n")
        ok(
            site.admin(
                "directory", "add", "corp", "--url", slapd.url, "--bind-dn", SERVICE_DN,
                "--bind-password-file", str(password), "--base-dn", BASE_DN,
                "--roles", "cn=helpdesk-l2=level2", "--customer-groups", "cn=cust-acme=acme",
            )
        )  # fmt: skip
        ok(site.admin("directory", "sync", "corp"))
        await start_agent(site, "web01", "unattended")
        ticket = new_ticket(site, "web01")
        ok(site.admin("ticket", "assign", ticket, "dora"))
        argv = site.ssh_argv(ticket, "-tt", key=key)
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=cli_env(site.tmp),
        )
        site.children.append(proc)  # reaped by the site fixture if the test fails
        term = Terminal(proc)
        term.type("echo dora-$((40+2))\n")
        await term.expect(b"dora-42")
        await slapd.remove_member("helpdesk-l2", "dora")
        ok(site.admin("directory", "sync", "corp"))
        synced = time.monotonic()
        code, err = await term.finish()
        assert time.monotonic() - synced < 10
        assert code != 0
        assert "disabled" in err + bytes(term.out).decode(errors="replace"), err
        shown = ok(site.admin("user", "show", "dora", "--json"))
        assert "helpdesk-l2" in shown
        again = await site.ssh(ticket, "true", key=key)
        assert again.code != 0
    finally:
        await slapd.stop()
