"""The terminal page's transfer panel in headless Chromium against a real broker and a real
attended agent (OpenSSH's sftp-server as the login account): a file uploaded with the
button and downloaded back is byte-identical, each transfer is a file session the end user
approves, and its SHA-256 is in the ticket's note; without the page's CSRF token or from
another origin the same request is refused.

The screenshot goes to docs/screenshots/console-file-transfer.png (docs/console.md)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, FilePayload, Page

from tests.browser import test_console_flows as flows
from tests.browser.test_console_flows import SHOTS, Stack, enrol_and_sign_in, new_context
from tests.browser.test_terminal_end_states import open_shell
from tests.support.browser import WAIT_MS

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

# The same broker, agent, staff and ticket as the console flows.
front_end = flows.front_end
stack = flows.stack

SIZE = 3 << 20  # several progress events, a few seconds at most on a loaded machine


async def approve_file_session(stack: Stack, shell: str) -> str:
    """Approve the file session the panel just asked for (the agent is attended). Each look
    is a `secondline-agent sessions` run that answers what waits now."""
    async with asyncio.timeout(WAIT_MS / 1000):
        while True:
            out = await asyncio.to_thread(stack.agent_cli, "sessions", "--json")
            waiting = [p["session"] for p in json.loads(out)["pending"] if p["session"] != shell]
            if waiting:
                await asyncio.to_thread(stack.agent_cli, "approve", waiting[0])
                return str(waiting[0])


async def finished(page: Page, way: str) -> str:
    """Wait for the newest transfer of ``way`` to end; its file session's id."""
    row = page.locator(f".transfer[data-way={way}]").first
    await page.locator(
        f".transfer[data-way={way}][data-state=done], .transfer[data-way={way}][data-state=failed]"
    ).first.wait_for(timeout=WAIT_MS)
    assert await row.get_attribute("data-state") == "done", await row.text_content()
    return await row.get_attribute("data-session") or ""


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short name, as a person would type it (the screenshot shows it)."""
    made = Path(tempfile.mkdtemp(prefix="sl-", dir="/tmp"))
    yield made
    shutil.rmtree(made)


async def test_upload_and_download_through_the_panel(
    stack: Stack, chromium: Browser, short_dir: Path
) -> None:
    """A dropped file is taken; bob uploads 3 MiB with the button and downloads it back
    byte-identical; the panel shows the SHA-256, both file sessions are approved by the end
    user, the ticket's notes list the file with that SHA-256, and the cookie alone (no CSRF
    token, or another origin) moves nothing."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    payload = os.urandom(SIZE)
    sha = hashlib.sha256(payload).hexdigest()
    there = short_dir / "fixed.conf"
    ctx = await new_context(chromium)
    bob = await ctx.new_page()
    await enrol_and_sign_in(stack, bob, "bob")
    shell = await open_shell(stack, bob)

    await bob.click("#btn-files")
    # A file dropped on the panel is the one to upload (chosen, not sent yet).
    await bob.evaluate(
        """() => {
            const drop = new DataTransfer();
            drop.items.add(new File(["dropped"], "dropped.txt"));
            const zone = document.getElementById("drop-zone");
            zone.dispatchEvent(new DragEvent("drop", { dataTransfer: drop, bubbles: true }));
        }"""
    )
    assert await bob.text_content("#upload-name") == "dropped.txt (7 B)"
    assert await bob.input_value("#upload-path") == "dropped.txt"
    await bob.fill("#upload-path", "")
    await bob.set_input_files(
        "#upload-file",
        files=[FilePayload(name="fixed.conf", mimeType="text/plain", buffer=payload)],
    )
    await bob.fill("#upload-path", str(there))
    await bob.click("#upload-form button[type=submit]")
    up = await approve_file_session(stack, shell)
    assert await finished(bob, "upload") == up
    assert await bob.text_content(".transfer[data-way=upload] .transfer-sha") == sha
    assert there.read_bytes() == payload

    await bob.fill("#download-path", str(there))
    async with bob.expect_download(timeout=WAIT_MS) as info:
        await bob.click("#download-form button[type=submit]")
        down = await approve_file_session(stack, shell)
    download = await info.value
    assert download.suggested_filename == "fixed.conf"
    saved = await download.path()
    assert await asyncio.to_thread(Path(saved).read_bytes) == payload
    assert await finished(bob, "download") == down
    await bob.locator("#files-panel").screenshot(path=SHOTS / "console-file-transfer.png")

    # The cookie alone moves nothing: without the page's CSRF token, or from another
    # site, the same request is refused (and audited) before any file session opens.
    token = await bob.evaluate("document.querySelector('meta[name=csrf-token]').content")
    url = f"{stack.url}/files/sessions/{shell}/download?path={there}"
    for headers in ({}, {"X-CSRF-Token": token, "Origin": "https://evil.example"}):
        refused = await bob.request.post(url, headers=headers)
        assert refused.status == 403, await refused.text()
    sessions = json.loads(stack.admin("session", "list", "--ticket", stack.ticket, "--json"))
    assert len(sessions) == 3  # the shell and the two transfers

    for session in (up, down):
        await stack.broker.wait_for_line(b"session " + session.encode() + b": note delivered")
    await bob.goto(f"{stack.url}/console/tickets/{stack.ticket}")
    notes = await bob.locator(".note").all_text_contents()
    moved = [n for n in notes if sha in n and str(there) in n]
    assert len(moved) == 2, notes
    await ctx.close()
