"""The browser terminal's first frame and its end states, in headless Chromium against a real
broker and a real attended agent: an observer who comes in mid-session sees the screen at
once; every way a session ends (by you, by the end user, by an admin, refused with the
rule's reason, the agent gone, the broker restarting) has its own text, in the viewer's
language (German for bob, English for tina).

Screenshots go to docs/screenshots/terminal-*.png (docs/console.md shows them)."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, Page

from tests.browser import test_console_flows as flows
from tests.browser.test_console_flows import (
    SHOTS,
    VIEW,
    Stack,
    enrol_and_sign_in,
    new_context,
)
from tests.support.broker import cli_env
from tests.support.browser import WAIT_MS, ended_with, terminal_text
from tests.support.processes import stop_process

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

# The same broker, agent, staff and ticket as the console flows.
front_end = flows.front_end
stack = flows.stack


async def open_shell(stack: Stack, page: Page) -> str:
    """Open a shell on web01 from the terminal page; the end user approves it."""
    await page.goto(f"{stack.url}/console/terminal?ticket={stack.ticket}&agent=web01&mode=open")
    await page.locator("#terminal-app[data-state=waiting_consent]").wait_for(timeout=WAIT_MS)
    session = await page.get_attribute("#terminal-app", "data-session")
    assert session
    stack.agent_cli("approve", session)
    await page.locator("#terminal-app[data-state=running]").wait_for(timeout=WAIT_MS)
    return session


async def watch(stack: Stack, page: Page, session: str) -> None:
    """Observe ``session``; the end user approves the watcher too (attended agent)."""
    await page.goto(f"{stack.url}/console/terminal?session={session}&mode=observe")
    await page.locator("#terminal-app[data-state=waiting_consent]").wait_for(timeout=WAIT_MS)
    stack.agent_cli("approve", session, "tina")
    await page.locator("#terminal-app[data-state=running]").wait_for(timeout=WAIT_MS)


async def check_ticket_and_playback(stack: Stack, bob: Page, tina: Page, session: str) -> None:
    await bob.goto(f"{stack.url}/console/tickets/{stack.ticket}")
    chip = bob.locator(f".note .attachments a.tag-link:text('{session}.cast')")
    await chip.wait_for(timeout=WAIT_MS)
    href = await chip.get_attribute("href")
    assert href == f"/files/tickets/{stack.ticket}/attachments/{session}.cast"
    download = await bob.request.get(f"{stack.url}{href}")
    assert download.status == 200
    assert b'"version": 2' in (await download.body()).split(b"\n", 1)[0]
    options = " ".join(await bob.locator("select[name=user] option").all_text_contents())
    assert "(Level 2)" in options, options
    assert "level2" not in options
    await tina.goto(f"{stack.url}/console/tickets/{stack.ticket}")
    quote = tina.locator(".history q").first
    await quote.wait_for(timeout=WAIT_MS)
    before = await quote.evaluate("q => getComputedStyle(q, '::before').content")
    assert "\u201e" not in before, before

    await bob.goto(f"{stack.url}/console/sessions/{session}/play")
    await bob.locator(".playback-grid.playback-wide").wait_for(timeout=WAIT_MS)
    cols = int(await bob.get_attribute(".playback-grid", "data-cols") or "0")
    assert cols >= 150, cols
    size = await bob.locator(".ap-term").evaluate("t => parseFloat(getComputedStyle(t).fontSize)")
    assert size >= 12.0, size
    await bob.locator("#commands .cmd").first.click()
    await bob.mouse.move(0, 0)
    await bob.locator("#player").get_by_text("vor-dem-beitritt 42").first.wait_for(timeout=WAIT_MS)
    # In a low window with the player's top at its top, the recording reaches below the
    # window and the seek bar is still on screen while it plays.
    low = {"width": VIEW["width"], "height": 560}
    await bob.set_viewport_size(low)  # type: ignore[arg-type]
    await bob.evaluate("document.getElementById('player').scrollIntoView()")
    bar = bob.locator(".ap-wrapper.ap-hud .ap-control-bar")
    await bar.wait_for(timeout=WAIT_MS)
    player = await bob.locator("#player").bounding_box()
    box = await bar.bounding_box()
    assert player is not None
    assert box is not None
    assert player["y"] + player["height"] > low["height"], player
    assert box["y"] + box["height"] <= low["height"], box
    await bob.set_viewport_size(VIEW)  # type: ignore[arg-type]
    await bob.evaluate("window.scrollTo(0, 0)")
    await bob.screenshot(path=SHOTS / "playback-wide.png")


@pytest.fixture
async def second_agent(stack: Stack) -> AsyncIterator[list[asyncio.subprocess.Process]]:
    """Agents this test starts again after killing the stack's; stopped at the end."""
    started: list[asyncio.subprocess.Process] = []
    yield started
    for agent in started:
        await stop_process(agent, signal.SIGTERM, 30)


async def test_first_frame_and_every_end_state(
    stack: Stack, chromium: Browser, second_agent: list[asyncio.subprocess.Process]
) -> None:
    """Tina (English) observes bob's (German) session mid-way and sees its screen before any
    new output; then each end state shows its own sentence in each viewer's language."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    bob_ctx = await new_context(chromium, lang="de-DE")
    bob = await bob_ctx.new_page()
    await enrol_and_sign_in(stack, bob, "bob")
    tina_ctx = await new_context(chromium)
    tina = await tina_ctx.new_page()
    await enrol_and_sign_in(stack, tina, "tina")

    # A joiner's first frame: what is on bob's screen, at once, with no new output.
    session = await open_shell(stack, bob)
    await bob.click("#terminal-screen")
    await bob.keyboard.type("printf '\\033[1;33mvor-dem-beitritt\\033[0m %s\\n' $((6*7))\n")
    await terminal_text(bob, "vor-dem-beitritt 42").wait_for(timeout=WAIT_MS)
    await watch(stack, tina, session)
    await terminal_text(tina, "vor-dem-beitritt 42").wait_for(timeout=WAIT_MS)
    await tina.screenshot(path=SHOTS / "terminal-joiner-first-frame.png")

    # Ended by you ("End session"), and by bob as the observer is told.
    await bob.click("#btn-leave")
    await ended_with(bob, "ended", "Sie haben die Sitzung beendet.")
    await bob.screenshot(path=SHOTS / "terminal-ended-de.png")
    await ended_with(tina, "ended", "bob ended the session.")
    await tina.screenshot(path=SHOTS / "terminal-ended-en.png")

    # The note's attachments are links that download; roles and quotes are in the viewer's
    # language; a 160-column recording plays in a readable font with its seek bar in view.
    await check_ticket_and_playback(stack, bob, tina, session)

    # Refused by the end user (German), and by the rules (English: level 1 gets no shell).
    await bob.goto(f"{stack.url}/console/terminal?ticket={stack.ticket}&agent=web01&mode=open")
    await bob.locator("#terminal-app[data-state=waiting_consent]").wait_for(timeout=WAIT_MS)
    denied = await bob.get_attribute("#terminal-app", "data-session")
    assert denied
    stack.agent_cli("deny", denied)
    await ended_with(bob, "refused", "Die Person am Rechner hat die Sitzung abgelehnt.")
    await bob.screenshot(path=SHOTS / "terminal-refused-de.png")
    await tina.goto(f"{stack.url}/console/terminal?ticket={stack.ticket}&agent=web01&mode=open")
    # In English the broker's own sentence, which names the ticket and the levels.
    await ended_with(
        tina, "refused", f"Ticket {stack.ticket} is at level 2 and you work at level 1"
    )
    await tina.screenshot(path=SHOTS / "terminal-refused-en.png")

    # Ended by the end user on the machine, and by an admin.
    session = await open_shell(stack, bob)
    stack.agent_cli("end", session)
    await ended_with(bob, "ended", "Die Person am Rechner hat die Sitzung beendet.")
    session = await open_shell(stack, bob)
    stack.admin("session", "kill", session, "--reason", "Wartungsfenster")
    await ended_with(bob, "ended", "Ein Administrator (")
    await ended_with(bob, "ended", "— Wartungsfenster")

    # The agent gone: its process is killed; then a new one comes back for the last case.
    session = await open_shell(stack, bob)
    assert stack.agent is not None
    stack.agent.kill()
    await ended_with(bob, "ended", "Der Agent auf dem Rechner hat die Verbindung verloren")
    await bob.screenshot(path=SHOTS / "terminal-agent-gone-de.png")
    agent = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent", "run", "--state-dir", str(stack.agent_dir),
        stdin=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env=cli_env(stack.broker.data_dir),
    )  # fmt: skip
    second_agent.append(agent)
    assert agent.stderr is not None
    await flows._read_until(agent.stderr, b"connected to the broker")

    # The broker restarting (SIGTERM drains): said as such, in both languages.
    session = await open_shell(stack, bob)
    await watch(stack, tina, session)
    await stack.broker.stop()
    await ended_with(bob, "ended", "Der Broker startet neu")
    await ended_with(tina, "ended", "The broker is restarting")
    await bob_ctx.close()
    await tina_ctx.close()
