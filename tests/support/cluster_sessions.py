"""A session across nodes, for the cluster e2e test: staff bob's real OpenSSH client
through HAProxy on a shell whose agent another node holds, an observer in Chromium on a
third node's console, and a kill issued on a node other than the one running the hub."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

from playwright.async_api import Browser, BrowserContext, Page
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from broker.auth import totp
from tests.support.broker import cli_env, secondline
from tests.support.browser import WAIT_MS, ended_with, first_sign_in, terminal_text
from tests.support.cluster import Cluster
from tests.support.console import PASSWORD
from tests.support.site import SESSION_ID, SSH, WAIT, Terminal, keygen, ok


def opened(sid: str) -> bytes:
    """What the hub's node logs when ``sid`` opens: for its own client, or for another
    node's (named)."""
    return (
        rb"session " + sid.encode() + rb": (?:opened on this node"
        rb"|bob \(owner\) is in it from node ([a-z0-9-]+))"
    )


def add_staff(first: Path, tmp: Path) -> Path:
    """lena (level 1, a password for the console) and bob (level 2, an SSH key); bob's
    private key."""
    key = keygen(tmp / "bob_ed25519")
    ok(
        secondline(
            "user", "add", "lena", "--role", "level1", "--customer", "acme",
            "--password-stdin", data_dir=first, stdin=PASSWORD + "\n",
        )
    )  # fmt: skip
    ok(
        secondline(
            "user", "add", "bob", "--role", "level2", "--customer", "acme",
            "--ssh-key", f"{key}.pub", data_dir=first,
        )
    )  # fmt: skip
    return key


def ticket_for(first: Path, agent: str) -> str:
    """A ticket on ``agent`` at level 2, assigned to bob."""
    lena = ok(secondline("user", "token", "lena", data_dir=first))
    ref = ok(
        secondline(
            "--token", lena, "ticket", "create", "--title", "Disk full", "--customer", "acme",
            "--agent", agent, data_dir=first,
        )
    )  # fmt: skip
    ref = ref if ref.startswith("T-") else f"T-{ref}"
    ok(
        secondline(
            "--token", lena, "ticket", "escalate", ref, "--to", "2", "--reason", "needs a shell",
            data_dir=first,
        )
    )  # fmt: skip
    ok(secondline("ticket", "assign", ref, "bob", data_dir=first))
    return ref


class Ssh:
    """bob's OpenSSH client, pointed at HAProxy's SSH port."""

    def __init__(self, first: Path, tmp: Path, key: Path, port: int) -> None:
        self.tmp, self.key, self.port = tmp, key, port
        self.known_hosts = tmp / "known_hosts_lb"
        host_key = (first / "keys" / "ssh_host_ed25519.pub").read_text().split()
        self.known_hosts.write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
        #: Every shell opened, for the test to reap at its end.
        self.shells: list[Terminal] = []

    async def shell(self, user: str) -> Terminal:
        proc = await asyncio.create_subprocess_exec(
            SSH, "-F", "/dev/null", "-p", str(self.port), "-i", str(self.key),
            "-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-tt",
            f"{user}@127.0.0.1",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=cli_env(self.tmp),
        )  # fmt: skip
        self.shells.append(Terminal(proc))
        return self.shells[-1]


async def session_of(terminal: Terminal) -> str:
    """The id of the session the shell runs in, as the shell itself says it."""
    terminal.type('echo "SID=$SL_SESSION"\n')
    await terminal.expect_in_order(b"SID=s-", b"\n")
    found = re.search(rb"SID=(s-[A-Za-z0-9]{22})", bytes(terminal.out))
    assert found is not None, bytes(terminal.out)[-300:]
    sid = found.group(1).decode()
    assert SESSION_ID.fullmatch(sid)
    return sid


async def landed_on(cluster: Cluster, holder: str, sid: str) -> str:
    """The node bob's SSH connection reached for ``sid``: the hub's node (``holder``) says
    whether it opened the session for its own client or for another node's."""
    line = await cluster.nodes[holder].wait_for_line(opened(sid))
    match = re.search(opened(sid), line)
    assert match is not None
    return match.group(1).decode() if match.group(1) else holder


class Observer:
    """lena in headless Chromium: signed in at one node's own address (past the load
    balancer), watching a session from that node's live list in the console's terminal
    (xterm.js), one page."""

    def __init__(self, context: BrowserContext, page: Page) -> None:
        self._context, self.page = context, page

    @classmethod
    async def watch(cls, browser: Browser, node_url: str, user: str, sid: str) -> Observer:
        context = await browser.new_context(ignore_https_errors=True)
        page = await context.new_page()
        try:
            await first_sign_in(
                page, node_url, user, PASSWORD, lambda secret: totp.code_at(secret, time.time())
            )
            await page.goto(f"{node_url}/console/sessions")
            await page.click(f"#live-rows a[href*='{sid}'][href*='mode=observe']")
            try:
                # Three nodes, thirty agents, HAProxy and Chromium share two cores here.
                await page.locator("#terminal-app[data-state=running]").wait_for(
                    timeout=3 * WAIT_MS
                )
            except PlaywrightTimeoutError:
                state = await page.get_attribute("#terminal-app", "data-state")
                shown = (await page.inner_text("body"))[:600]
                raise AssertionError(
                    f"the observer's terminal on {node_url} never ran: state {state!r}, "
                    f"the page shows {shown!r}"
                ) from None
            assert await page.get_attribute("#terminal-app", "data-session") == sid
        except BaseException:
            await context.close()
            raise
        return cls(context, page)

    async def expect(self, line: str) -> None:
        """Wait until a line of the terminal's screen reads ``line``."""
        await terminal_text(self.page, line).wait_for(timeout=WAIT_MS)

    async def ended(self, text: str) -> None:
        """The terminal says the session ended, with ``text`` in its reason."""
        await ended_with(self.page, "ended", text)

    async def close(self) -> None:
        await self._context.close()


async def kill_timed(data_dir: Path, sid: str, terminal: Terminal) -> float:
    """`secondline session kill` on the node of ``data_dir``; seconds until bob's ssh
    exited (measured from the command's start)."""
    began = time.monotonic()
    kill = asyncio.ensure_future(
        asyncio.to_thread(secondline, "session", "kill", sid, "--reason", "test", data_dir=data_dir)
    )
    async with asyncio.timeout(WAIT):
        await terminal.proc.wait()
    took = time.monotonic() - began
    ok(await kill)
    return took
