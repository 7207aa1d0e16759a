"""Consent on the end user's desktop, for real under Xvfb: an attended request opens the
consent window (GTK, agent.consent_window); the test, as the end user, presses Allow in it
with xdotool and the staff member's shell opens; the running session shows the indicator,
whose "End session" ends it; a second request is denied in its window and the staff
member is refused with the reason. Screenshots of both windows go to docs/screenshots/
(docs/agent.md shows them).

One test for the whole flow, on one broker, agent and X server: 36 s measured on a shared
machine under load (over the ~20 s budget), because issue #20's "Done when" asks for this
flow under Xvfb (window, Allow, Deny, screenshots)."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import pytest

from tests.support.broker import cli_env
from tests.support.processes import communicate
from tests.support.site import (
    Site,
    agent_cli,
    new_ticket,
    ok,
    read_stderr_until,
    spawn_ssh,
)
from tests.support.xvfb import WAIT, Xvfb

pytestmark = [pytest.mark.e2e, pytest.mark.parametrize("backend", ["sqlite"], indirect=True)]

SHOTS: Final = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
ASK: Final = "Secondline: support request"
RUNNING: Final = "Secondline: session running"


@pytest.fixture
async def xvfb() -> AsyncIterator[Xvfb]:
    x = Xvfb()
    await x.start()
    try:
        yield x
    finally:
        await x.stop()


async def start_desktop_agent(site: Site, xvfb: Xvfb, name: str) -> Path:
    """An attended agent whose machine has a desktop (the agent runs in it: DISPLAY)."""
    token = ok(site.admin("token", "create", "--customer", "acme", "--consent", "attended"))
    state = site.tmp / f"agent-{name}"
    ok(agent_cli(state, "enroll", site.broker.url, token, "--name", name))
    mark = len(site.broker.output)
    site.agent_state = state
    site.agent = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent", "run", "--state-dir", str(state),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL, env=cli_env(state, DISPLAY=xvfb.display),
    )  # fmt: skip
    await site.broker.wait_for_line(
        rb"agent ag-[a-z0-9]{16} \(" + name.encode() + rb"\) online", mark
    )
    return state


async def test_allow_in_the_window_then_end_and_deny(site: Site, xvfb: Xvfb) -> None:
    """Allow in the consent window opens bob's shell; the indicator's End session ends it
    (bob is told); Deny in the next window refuses bob with the reason."""
    state = await start_desktop_agent(site, xvfb, "desk01")
    site.ticket = new_ticket(site, "desk01")

    term = await site.interactive(site.ticket)
    await read_stderr_until(term.proc, b"waiting for the end user's approval on desk01")
    window = await xvfb.window(ASK)
    await xvfb.screenshot(SHOTS / "agent-consent-window.png")
    xvfb.press(window, "alt+a")
    term.type("echo desk-$((6*7))\n")
    await term.expect(b"desk-42")

    indicator = await xvfb.window(RUNNING)
    await xvfb.screenshot(SHOTS / "agent-session-indicator.png")
    xvfb.press(indicator, "alt+e")
    _, err = await term.finish()
    assert "ended by the end user on the machine" in err

    denied = await spawn_ssh(site, site.ticket, "echo never")
    window = await xvfb.window(ASK)
    xvfb.press(window, "alt+d")
    out, err_bytes = await communicate(denied, WAIT)
    assert denied.returncode != 0
    assert b"never" not in out
    assert "the end user denied the session" in err_bytes.decode()

    log = [json.loads(line) for line in (state / "sessions.jsonl").read_text().splitlines()]
    decisions = [(e["decision"], e["by"]) for e in log if e["event"] == "consent"]
    user = pwd.getpwuid(os.geteuid()).pw_name  # the desktop's user: the agent's own here
    assert decisions == [("approved", user), ("denied", user)]
    ended = [e["ended_by"] for e in log if e["event"] == "end"]
    assert ended == ["end_user"]
