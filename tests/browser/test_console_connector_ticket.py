"""A ticket mirrored from a real Request Tracker in the console, in headless Chromium: the
ticket page shows RT's number linked to the ticket in RT, in German for bob and English for
tina. Screenshots go to docs/screenshots/ticket-rt-de.png and ticket-rt-en.png
(docs/connectors.md shows them)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser

from tests.browser import test_console_flows as flows
from tests.browser.test_console_flows import SHOTS, Stack, enrol_and_sign_in, new_context
from tests.support.browser import WAIT_MS
from tests.support.request_tracker import RequestTracker

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

front_end = flows.front_end
stack = flows.stack


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[RequestTracker]:
    tracker = RequestTracker(tmp_path / "rt")
    tracker.prepare()
    tracker.start()
    try:
        yield tracker
    finally:
        tracker.stop()


async def test_a_mirrored_rt_ticket_shows_and_links_its_rt_number(
    stack: Stack, rt: RequestTracker, chromium: Browser
) -> None:
    """A ticket waiting in RT's level-1 queue is imported when the connector is added; its
    page names `RT-<n>` as a link to RT's ticket, beside our number, in each language."""
    api = rt.api()
    number = await api.create_ticket(
        "Level 1", "Scanner im 2. OG meldet »Papierstau«", "anna.schmidt@example.com"
    )
    credential = stack.broker.data_dir.parent / "rt.token"
    credential.write_text(rt.token + "\n")
    mark = len(stack.broker.output)
    stack.admin(
        "connector", "add", "rt-acme", "--kind", "rt", "--url", rt.url,
        "--credential-file", str(credential), "--customer", "acme",
    )  # fmt: skip
    line = await stack.broker.wait_for_line(
        rf"connector rt-acme: RT-{number} mirrored as T-\d+".encode(), mark
    )
    ref = line.decode().rsplit(" ", 1)[1].strip()
    link = f"{rt.url}/Ticket/Display.html?id={number}"

    for user, lang, title in (("bob", "de-DE", "de"), ("tina", "en-US", "en")):
        context = await new_context(chromium, lang=lang)
        page = await context.new_page()
        await enrol_and_sign_in(stack, page, user)
        await page.goto(f"{stack.url}/console/tickets/{ref}")
        anchor = page.locator(f"a[href='{link}']")
        await anchor.wait_for(timeout=WAIT_MS)
        assert (await anchor.text_content() or "").strip() == f"RT-{number}"
        assert await anchor.get_attribute("rel") == "noopener noreferrer"
        assert "Papierstau" in (await page.text_content("h1") or "")
        await page.screenshot(path=SHOTS / f"ticket-rt-{title}.png", full_page=True)
        await context.close()
