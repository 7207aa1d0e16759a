"""xterm.js's answers to queries in the output (cursor position, device attributes) are
recorded as terminal replies, never as what staff typed: in headless Chromium against a real
broker and a real agent."""

from __future__ import annotations

import json

import pytest
from playwright.async_api import Browser

from tests.browser.test_console_flows import (  # noqa: F401 - fixtures used by name
    Stack,
    enrol_and_sign_in,
    front_end,
    new_context,
    stack,
)
from tests.support.browser import WAIT_MS, terminal_text

pytestmark = [pytest.mark.browser, pytest.mark.e2e]


async def test_answer_back_is_recorded_as_replies(stack: Stack, chromium: Browser) -> None:  # noqa: F811
    """A program asks for the cursor position and the device attributes and reads the
    answers with echo on: the shell gets them, the `.cast` holds them as `a` events, and no
    `i` event holds an escape sequence."""
    ctx = await new_context(chromium)
    bob = await ctx.new_page()
    await enrol_and_sign_in(stack, bob, "bob")
    await bob.goto(f"{stack.url}/console/tickets/{stack.ticket}")
    await bob.click("#ticket-machines a.btn-primary")
    await bob.locator("#terminal-app[data-state=waiting_consent]").wait_for(timeout=WAIT_MS)
    session = await bob.get_attribute("#terminal-app", "data-session")
    assert session
    stack.agent_cli("approve", session)
    await bob.locator("#terminal-app[data-state=running]").wait_for(timeout=WAIT_MS)
    await bob.click("#terminal-screen")
    # Both answers are 7 bytes: CPR for row 5, column 10, and xterm.js's DA1.
    await bob.keyboard.type(
        "stty -icanon; printf '\\033[5;10H\\033[6n\\033[c'; head -c 14 | od -An -c | tr -d ' ';"
        " stty icanon; echo answers-$((2*3))\n"
    )
    await terminal_text(bob, "answers-6").wait_for(timeout=WAIT_MS)
    screen = await bob.text_content("#terminal-screen") or ""
    assert "033[5;10R033[?1;2c" in screen  # what the shell read, as od shows it
    await bob.keyboard.type("exit\n")
    await bob.locator("#terminal-app[data-state=ended]").wait_for(timeout=WAIT_MS)
    await ctx.close()

    cast = stack.broker.data_dir / "transcripts" / f"{session}.cast"
    events = [json.loads(line) for line in cast.read_text().splitlines()[1:]]
    assert "".join(e[2] for e in events if e[1] == "a") == "\x1b[5;10R\x1b[?1;2c"
    typed = "".join(e[2] for e in events if e[1] == "i")
    assert "\x1b[" not in typed
