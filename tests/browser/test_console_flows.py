"""The web console in headless Chromium against a real broker and a real agent: sign-in with
TOTP, a level-2 ticket, a shell with consent, output, resize, copy and paste, hostile output,
the end, the transcript played back; a level-1 colleague watching read-only; cross-site
WebSocket upgrades refused; a disabled account's terminal closed.

Screenshots of the pages are written to docs/screenshots/ (the README and docs/console.md
show them)."""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import ssl
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import aiohttp
import pytest
from playwright.async_api import Browser, BrowserContext, Dialog, Page

from broker.auth import totp
from tests.support.broker import BrokerProcess, cli_env, secondline, start_broker
from tests.support.browser import WAIT_MS, first_sign_in, terminal_text, wait_for_line
from tests.support.console import PASSWORD, build_front_end
from tests.support.processes import stop_process

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

ROOT: Final = Path(__file__).resolve().parents[2]
SHOTS: Final = ROOT / "docs" / "screenshots"
VIEW: Final = {"width": 1360, "height": 820}


def on_shortened_timeline(cast: str, at: float, limit: float) -> float:
    """Where asciinema-player, shortening every pause to ``limit`` seconds, plays the moment
    ``at`` of an asciicast v2 recording (its events carry absolute times)."""
    previous = shortened = 0.0
    for line in cast.splitlines()[1:]:
        event = float(json.loads(line)[0])
        if event > at:
            break
        shortened += min(event - previous, limit)
        previous = event
    return shortened + min(at - previous, limit)


@dataclass
class Stack:
    """A broker, an enrolled agent that is connected, staff, and an escalated ticket."""

    broker: BrokerProcess
    agent_dir: Path
    ticket: str
    steps: dict[str, int] = field(default_factory=dict)
    agent: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return self.broker.url

    def admin(self, *args: str, stdin: str | None = None) -> str:
        result = secondline(*args, data_dir=self.broker.data_dir, stdin=stdin)
        assert result.code == 0, result.err
        return result.out

    def agent_cli(self, *args: str) -> str:
        import subprocess

        proc = subprocess.run(
            [sys.executable, "-m", "agent", args[0], "--state-dir", str(self.agent_dir), *args[1:]],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=cli_env(self.broker.data_dir),
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def code(self, user: str, secret: str) -> str:
        """The next unused TOTP code of ``user`` (each works once)."""
        now = totp.step_at(time.time())
        step = max(now - 1, self.steps.get(user, 0) + 1)
        assert step <= now + 1, "ran out of codes in the window"
        self.steps[user] = step
        return totp.code_at(secret, step * totp.STEP_SECONDS)


async def _read_until(stream: asyncio.StreamReader, marker: bytes) -> None:
    async with asyncio.timeout(30):
        while True:
            line = await stream.readline()
            if not line:
                raise AssertionError(f"the agent exited before saying {marker!r}")
            if marker in line:
                return


@pytest.fixture(scope="module")
def front_end() -> None:
    build_front_end()


@pytest.fixture
async def stack(tmp_path: Path, sqlite_data_dir: Path, front_end: None) -> AsyncIterator[Stack]:
    data_dir = sqlite_data_dir
    broker = await start_broker(data_dir)
    agent: asyncio.subprocess.Process | None = None
    try:
        stack = Stack(broker, tmp_path / "agent", "")
        stack.agent_dir.mkdir(mode=0o700)
        stack.admin("customer", "add", "acme", "--display-name", "ACME GmbH")
        stack.admin(
            "user", "add", "bob", "--role", "level2", "--display-name", "Bob Berger",
            "--customer", "acme", "--password-stdin", stdin=PASSWORD + "\n",
        )  # fmt: skip
        stack.admin(
            "user", "add", "tina", "--role", "level1", "--display-name", "Tina Trainee",
            "--customer", "acme", "--password-stdin", stdin=PASSWORD + "\n",
        )  # fmt: skip
        stack.admin("user", "add", "lena", "--role", "level1", "--customer", "acme")
        lena = json.loads(stack.admin("user", "token", "lena", "--json"))["token"]
        token = stack.admin("token", "create", "--customer", "acme", "--consent", "attended")
        stack.agent_cli("enroll", broker.url, token.strip(), "--name", "web01")
        agent = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agent", "run", "--state-dir", str(stack.agent_dir),
            stdin=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            env=cli_env(data_dir),
        )  # fmt: skip
        assert agent.stderr is not None
        stack.agent = agent
        await _read_until(agent.stderr, b"connected to the broker")
        drain = asyncio.get_running_loop().create_task(agent.stderr.read())
        as_lena = ["--token", lena]
        ticket = secondline(
            *as_lena, "ticket", "create", "--title", "Drucker druckt nicht",
            "--customer", "acme", "--requester", "Max Muster", "--agent", "web01",
            "--description", "Seit dem Update hängen alle Aufträge.",
            data_dir=data_dir,
        )  # fmt: skip
        assert ticket.code == 0, ticket.err
        stack.ticket = ticket.out.strip()
        up = secondline(
            *as_lena, "ticket", "escalate", stack.ticket, "--to", "2",
            "--reason", "CUPS hängt; braucht eine Shell", data_dir=data_dir,
        )  # fmt: skip
        assert up.code == 0, up.err
        for title, requester in (
            ("Outlook fragt ständig nach dem Passwort", "Anna Schmidt"),
            ("Neuer Mitarbeiter braucht VPN-Zugang", "Jan Becker"),
        ):
            more = secondline(
                *as_lena, "ticket", "create", "--title", title, "--customer", "acme",
                "--requester", requester, data_dir=data_dir,
            )  # fmt: skip
            assert more.code == 0, more.err
        yield stack
        if agent.returncode is None:  # a test may have killed it on purpose
            agent.terminate()
        await drain
    finally:
        if agent is not None:
            await stop_process(agent, signal.SIGTERM, 30)
        await broker.stop()


async def new_context(browser: Browser, *, lang: str = "en-US") -> BrowserContext:
    return await browser.new_context(
        ignore_https_errors=True,
        viewport=VIEW,  # type: ignore[arg-type]
        locale=lang,
        extra_http_headers={"Accept-Language": lang},
    )


async def enrol_and_sign_in(stack: Stack, page: Page, user: str) -> None:
    """First sign-in (TOTP set-up from the page), sign out, then sign in with a fresh code."""
    secret = await first_sign_in(
        page, stack.url, user, PASSWORD, lambda secret: stack.code(user, secret)
    )
    await page.click("form[action='/console/logout'] button")
    await page.wait_for_url("**/console/login")
    await page.fill("input[name=user]", user)
    await page.fill("input[name=password]", PASSWORD)
    await page.fill("input[name=code]", stack.code(user, secret))
    await page.click("button[type=submit]")
    await page.wait_for_url("**/console/")


async def test_a_level_two_shell_from_sign_in_to_playback(stack: Stack, chromium: Browser) -> None:
    """Bob signs in with TOTP, opens a shell on the ticket's machine after consent, works in it
    while Tina watches read-only (after the end user approved her too), ends it, and plays
    the transcript back from the ticket."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    bob_ctx = await new_context(chromium, lang="de-DE")
    await bob_ctx.grant_permissions(["clipboard-read", "clipboard-write"], origin=stack.url)
    bob = await bob_ctx.new_page()
    await enrol_and_sign_in(stack, bob, "bob")
    await bob.locator(f"#queue-rows a:text('{stack.ticket}')").wait_for()
    await bob.screenshot(path=SHOTS / "queue.png")

    await bob.click(f"#queue-rows a:text('{stack.ticket}')")
    await bob.wait_for_url(f"**/console/tickets/{stack.ticket}")
    await bob.screenshot(path=SHOTS / "ticket.png", full_page=True)
    await bob.click("#ticket-machines a.btn-primary")
    await bob.locator("#terminal-app[data-state=waiting_consent]").wait_for(timeout=WAIT_MS)
    await bob.screenshot(path=SHOTS / "terminal-consent.png")
    session = await bob.get_attribute("#terminal-app", "data-session")
    assert session
    assert session.startswith("s-")
    stack.agent_cli("approve", session)
    await bob.locator("#terminal-app[data-state=running]").wait_for(timeout=WAIT_MS)

    tina_ctx = await new_context(chromium)
    tina = await tina_ctx.new_page()
    await enrol_and_sign_in(stack, tina, "tina")
    await tina.goto(f"{stack.url}/console/sessions")
    await tina.locator(f"#live-rows a[href*='{session}']").first.wait_for()
    await tina.screenshot(path=SHOTS / "live-sessions.png")
    await tina.click(f"#live-rows a[href*='{session}'][href*='mode=observe']")
    # Tina sees the end user's screen too, so the end user is asked about her by name.
    await tina.locator("#terminal-app[data-state=waiting_consent]").wait_for(timeout=WAIT_MS)
    stack.agent_cli("approve", session, "tina")
    await tina.locator("#terminal-app[data-state=running]").wait_for(timeout=WAIT_MS)
    await tina.locator("#participants .participant-observer").wait_for(timeout=WAIT_MS)

    await bob.click("#terminal-screen")
    await bob.keyboard.type("echo hallo-welt\n")
    await terminal_text(bob, "hallo-welt").wait_for(timeout=WAIT_MS)
    await terminal_text(tina, "hallo-welt").wait_for(timeout=WAIT_MS)

    # The observer's keystrokes go nowhere: the broker says so, and the shell never sees them.
    await tina.click("#terminal-screen")
    await tina.keyboard.type("echo observer-typed\n")
    await tina.locator("#term-notice").wait_for(timeout=WAIT_MS)
    await bob.keyboard.type("echo after-observer\n")
    await terminal_text(bob, "after-observer").wait_for(timeout=WAIT_MS)
    assert "observer-typed" not in (await bob.text_content("#terminal-screen") or "")

    # Colours and UTF-8: umlauts, box drawing, emoji.
    await bob.keyboard.type("printf '\\033[1;32mgrün\\033[0m äöü ─┼─ 😀\\n'\n")
    await (
        bob.locator("#terminal-screen .xterm-rows")
        .get_by_text("grün äöü ─┼─ 😀")
        .wait_for(timeout=WAIT_MS)
    )
    await bob.screenshot(path=SHOTS / "terminal.png")

    # Output cannot set the clipboard (OSC 52) nor put markup into the page (title).
    await bob.evaluate("navigator.clipboard.writeText('echo pasted-ok')")
    await bob.keyboard.type(
        "printf '\\033]52;c;ZWNobyBwd25lZA==\\007\\033]0;<img src=x id=pwn>\\007done-osc\\n'\n"
    )
    await terminal_text(bob, "done-osc").wait_for(timeout=WAIT_MS)
    assert await bob.evaluate("navigator.clipboard.readText()") == "echo pasted-ok"
    assert await bob.locator("#pwn").count() == 0
    # Hyperlinks (OSC 8) from the output open only http(s), and only after a confirmation:
    # a click on an https link asks; a click on a javascript: link does nothing at all.
    await bob.keyboard.type(
        "printf '\\033]8;;https://example.invalid/kb\\033\\\\safe-link\\033]8;;\\033\\\\\\n"
        "\\033]8;;javascript:alert(document.cookie)\\033\\\\evil-link\\033]8;;\\033\\\\\\n'\n"
    )
    await terminal_text(bob, "evil-link").wait_for(timeout=WAIT_MS)
    dialogs: list[str] = []

    async def dismiss(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    bob.on("dialog", dismiss)
    for name in ("evil-link", "safe-link"):
        # The mouse goes where the text is drawn: xterm.js's own layers take the events.
        box = await terminal_text(bob, name).bounding_box()
        assert box is not None
        await bob.mouse.move(box["x"] + box["width"] / 2 - 3, box["y"] + box["height"] / 2)
        await bob.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        if name == "safe-link":
            async with bob.expect_event("dialog", timeout=WAIT_MS):
                await bob.mouse.down()
                await bob.mouse.up()
        else:
            await bob.mouse.down()
            await bob.mouse.up()
        await bob.mouse.move(0, 0)
    # Dialogs arrive in order: one from the javascript: link would be the first.
    assert len(dialogs) == 1, dialogs
    assert "https://example.invalid/kb" in dialogs[0]
    assert len(bob.context.pages) == 1
    bob.remove_listener("dialog", dismiss)
    # Copy takes the selection; paste goes through the button (a click reads the clipboard).
    await bob.evaluate("window.secondlineTerminal.selectAll()")
    await bob.click("#btn-copy")
    assert "hallo-welt" in await bob.evaluate("navigator.clipboard.readText()")
    await bob.evaluate("navigator.clipboard.writeText('echo pasted-ok')")
    await bob.click("#btn-paste")
    # The button reads the clipboard asynchronously: wait for the pasted line to be echoed
    # before pressing Enter, or Enter may reach the shell first.
    await (
        bob.locator("#terminal-screen .xterm-rows")
        .get_by_text("echo pasted-ok")
        .wait_for(timeout=WAIT_MS)
    )
    await bob.keyboard.press("Enter")
    await terminal_text(bob, "pasted-ok").wait_for(timeout=WAIT_MS)

    # A paste over the 64 KiB message limit goes out in pieces and arrives whole (one
    # message that size would close the terminal). `head -c` reads exactly the paste and the
    # shell then prints what arrived; bash reads nothing while head runs, so the paste may
    # come as soon as head's start is shown. The terminal does not echo the paste: when the
    # agent reads the PTY's output later than the shell takes the paste in (a loaded
    # machine), the kernel's line discipline drops echoes and writes those it still holds
    # only as far as there is room before the shell's next output, so "got-N" came out in
    # the middle of an echoed line.
    big = "".join(f"line-{i:04d}-{'x' * 70}\n" for i in range(1000)) + "paste-end-marker\n"
    target = f"/tmp/secondline-paste-{secrets.token_hex(6)}"
    await bob.keyboard.type(
        f"stty -echo; echo cat-$((1+1))-ready; head -c {len(big)} > {target}; stty echo;"
        f" echo got-$(wc -c < {target}); rm -f {target}\n"
    )
    await terminal_text(bob, "cat-2-ready").wait_for(timeout=WAIT_MS)
    await bob.evaluate("text => navigator.clipboard.writeText(text)", big)
    await bob.click("#btn-paste")
    # A failure says whether head's answer reached the terminal (its buffer, on a line of
    # its own or inside another) or was only not shown (its view stopped following).
    await wait_for_line(bob, f"got-{len(big)}")
    assert await bob.get_attribute("#terminal-app", "data-state") == "running"

    # Resize: the PTY follows the browser window.
    before = await bob.get_attribute("#terminal-app", "data-size")
    await bob.set_viewport_size({"width": 980, "height": 640})
    await bob.locator(f'#terminal-app:not([data-size="{before}"])').wait_for(timeout=WAIT_MS)
    cols, rows = (await bob.get_attribute("#terminal-app", "data-size") or "x").split("x")
    await bob.keyboard.type("stty size\n")
    await terminal_text(bob, f"{rows} {cols}").wait_for(timeout=WAIT_MS)
    await bob.set_viewport_size(VIEW)  # type: ignore[arg-type]

    await bob.keyboard.type("exit\n")
    await bob.locator("#terminal-app[data-state=ended]").wait_for(timeout=WAIT_MS)
    await tina.locator("#terminal-app[data-state=ended]").wait_for(timeout=WAIT_MS)

    # The transcript is on the ticket, and plays back from a command.
    await bob.goto(f"{stack.url}/console/tickets/{stack.ticket}")
    await bob.locator(f"#ticket-sessions td:text('{session}')").wait_for(timeout=WAIT_MS)
    await bob.click(f"#ticket-sessions a[href='/console/sessions/{session}/play']")
    await bob.wait_for_url(f"**/console/sessions/{session}/play")
    # The player shortens pauses over 3 s: each command is jumped to on that shortened
    # timeline (a consent wait before the first command used to make the jump land later).
    command = bob.locator("#commands .cmd:has(code:text('echo hallo-welt'))")
    cast = await (
        await bob.request.get(f"{stack.url}/files/sessions/{session}/transcript.cast")
    ).text()
    recorded = float(await command.get_attribute("data-time") or "nan")
    played = float(await command.get_attribute("data-play-time") or "nan")
    assert played == pytest.approx(on_shortened_timeline(cast, recorded, 3.0), abs=1e-6)
    await command.click()
    await (
        bob.locator("#player").get_by_text("hallo-welt", exact=True).first.wait_for(timeout=WAIT_MS)
    )
    await bob.screenshot(path=SHOTS / "playback.png")
    await tina_ctx.close()
    await bob_ctx.close()


async def test_cross_site_upgrades_are_refused_and_disabling_closes_the_terminal(
    stack: Stack, chromium: Browser
) -> None:
    """The terminal WebSocket refuses evil, null, missing and look-alike origins; disabling
    an account closes its open terminal within five seconds."""
    ctx = await new_context(chromium)
    page = await ctx.new_page()
    await enrol_and_sign_in(stack, page, "bob")
    cookies = {c["name"]: c["value"] for c in await ctx.cookies()}
    tls = ssl.create_default_context(cafile=str(stack.broker.data_dir / "keys" / "tls.crt"))
    ws_url = f"wss://127.0.0.1:{stack.broker.https_port}/console/ws/terminal"
    cookie = "; ".join(f"{k}={v}" for k, v in cookies.items())
    async with aiohttp.ClientSession() as http:
        for origin in (
            "https://evil.example",
            "null",
            None,
            f"https://127.0.0.1.evil.example:{stack.broker.https_port}",
            f"http://127.0.0.1:{stack.broker.https_port}",
        ):
            headers = {"Cookie": cookie}
            if origin is not None:
                headers["Origin"] = origin
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(ws_url, headers=headers, ssl=tls)
            assert refused.value.status == 403, origin

    await page.goto(f"{stack.url}/console/terminal?ticket={stack.ticket}&agent=web01&mode=open")
    await page.locator("#terminal-app[data-state=waiting_consent]").wait_for(timeout=WAIT_MS)
    session = await page.get_attribute("#terminal-app", "data-session")
    assert session
    stack.agent_cli("approve", session)
    await page.locator("#terminal-app[data-state=running]").wait_for(timeout=WAIT_MS)
    stack.admin("user", "disable", "bob")
    started = time.monotonic()
    await page.locator(
        "#terminal-app[data-state=lost], #terminal-app[data-state=ended], "
        "#terminal-app[data-state=signed_out]"
    ).wait_for(timeout=WAIT_MS)
    assert time.monotonic() - started < 5.0
    # Cut off by the disabling, not merely left: the record says why it ended.
    await stack.broker.wait_for_line(b"session " + session.encode() + b": note delivered")
    shown = json.loads(stack.admin("session", "show", session, "--json"))
    assert shown["end_reason"] == "account disabled"
    await page.goto(f"{stack.url}/console/")
    await page.wait_for_url("**/console/login**")
    await ctx.close()
