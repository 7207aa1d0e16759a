"""Headless Debian Chromium driven by Playwright, and what every test that works the console
through it does: the first sign-in with TOTP set-up, text on the xterm.js screen, the
terminal's end. Shared by the browser tests and the cluster e2e test's observer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Final

from playwright.async_api import Browser, Locator, Page, async_playwright
from playwright.async_api import TimeoutError as PlaywrightTimeout

CHROMIUM: Final = "/usr/bin/chromium"
ARGS: Final = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Failure bound of a wait on the page (a shared machine), never a pause.
WAIT_MS: Final = 20_000


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def first_sign_in(
    page: Page, url: str, user: str, password: str, code: Callable[[str], str]
) -> str:
    """``user``'s first sign-in at the console of ``url``: password, then the TOTP set-up
    page (its QR code shown), a code made from the secret it shows by ``code(secret)``;
    signed in on the console's start page. The TOTP secret."""
    await page.goto(f"{url}/console/")
    await page.fill("input[name=user]", user)
    await page.fill("input[name=password]", password)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/console/totp-setup**")
    assert await page.locator("figure.qr-frame svg").count() == 1
    secret = (await page.text_content("#totp-secret") or "").replace(" ", "")
    await page.fill("input[name=code]", code(secret))
    await page.click("button[type=submit]")
    await page.wait_for_url("**/console/")
    return secret


def terminal_text(page: Page, text: str) -> Locator:
    """A line of the terminal's screen (xterm.js's rows) that reads exactly ``text``."""
    return page.locator("#terminal-screen .xterm-rows").get_by_text(text, exact=True)


async def ended_with(page: Page, state: str, text: str) -> None:
    """The terminal reached ``state`` and says ``text`` (not a lost connection)."""
    await page.locator(f"#terminal-app[data-state={state}]").wait_for(timeout=WAIT_MS)
    reason = await page.text_content("#overlay-reason") or ""
    assert text in reason, reason
    assert await page.text_content("#overlay-title") not in (
        "Connection lost",
        "Verbindung verloren",
    )


# What the terminal holds and shows: the last lines of its buffer, every line that holds
# ``text`` (a line of its own, or inside another one: output written in the middle of
# another line), and where its viewport is (viewportY below baseY: the view stopped
# following the output), with the page's state.
_TERMINAL_STATE: Final = """(text) => {
  const buffer = window.secondlineTerminal.buffer.active;
  const row = (i) => buffer.getLine(i).translateToString(true);
  const lines = [];
  for (let i = Math.max(0, buffer.length - 6); i < buffer.length; i++) lines.push(row(i));
  const holding = [];
  for (let i = 0; i < buffer.length && holding.length < 5; i++) {
    if (text && row(i).includes(text)) holding.push({row: i, line: row(i)});
  }
  const app = document.getElementById("terminal-app");
  return {state: app.dataset.state, viewportY: buffer.viewportY, baseY: buffer.baseY,
          rows: buffer.length, holding: holding, lines: lines};
}"""


async def terminal_state(page: Page, text: str = "") -> dict[str, Any]:
    """The console terminal's state for a failure message: whether the bytes arrived (its
    buffer's last lines, and the lines that hold ``text`` anywhere in them) or only were
    not shown (its viewport stopped following)."""
    state: dict[str, Any] = await page.evaluate(_TERMINAL_STATE, text)
    return state


async def wait_for_line(page: Page, text: str) -> None:
    """Wait for a line of the terminal's screen that reads exactly ``text``; on a timeout,
    fail saying what the terminal held, where ``text`` is in it, and where its view was."""
    try:
        await terminal_text(page, text).wait_for(timeout=WAIT_MS)
    except PlaywrightTimeout:
        state = await terminal_state(page, text)
        raise AssertionError(f"{text!r} not on screen; {state}") from None
