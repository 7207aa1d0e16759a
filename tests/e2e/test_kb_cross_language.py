"""Across customers and languages, end to end: a recorded OpenSSH session solves a German
ticket of one customer, the article is published in German, and a level-1 colleague of
another customer, in an English browser, gets it among the top three suggestions of an
English ticket for the same problem in the console (headless Chromium); "This solved it"
counts it.

Real parts: the broker process, an agent process, the OpenSSH client, Chromium."""

from __future__ import annotations

import json
import time

import pytest
from playwright.async_api import Browser

from broker.auth import totp
from tests.browser.conftest import chromium  # noqa: F401 - its fixture, for this test too
from tests.browser.test_console_flows import new_context
from tests.e2e.test_kb_from_recorded_session import api
from tests.support.broker import secondline
from tests.support.browser import WAIT_MS
from tests.support.console import PASSWORD, build_front_end
from tests.support.site import Site, ok, sessions_of, start_agent, wait_note

pytestmark = [pytest.mark.postgres, pytest.mark.e2e, pytest.mark.browser]

GERMAN_PROBLEM = "Der Drucker druckt nicht mehr, alle Druckaufträge hängen in der Warteschlange."
ARTICLE = {
    "title": "Druckaufträge hängen in der Warteschlange",
    "problem": "Der Drucker druckt nicht. Die Druckaufträge bleiben in der Warteschlange hängen.",
    "cause": "Die Warteschlange war nach einem Stromausfall angehalten.",
    "solution": "1. Warteschlange prüfen.\n2. Warteschlange leeren und den Drucker freigeben.",
    "tags": ["drucken"],
}


@pytest.fixture(scope="module")
def front_end() -> None:
    build_front_end()


def german_ticket(site: Site, agent: str) -> str:
    """A German ticket of acme at level 1, escalated to level 2 and assigned to bob."""
    lena = ok(site.admin("user", "token", "lena"))
    ref = ok(
        secondline(
            "--token", lena, "ticket", "create", "--title", "Drucker druckt nicht",
            "--description", GERMAN_PROBLEM, "--customer", "acme", "--agent", agent,
            data_dir=site.data_dir,
        )
    )  # fmt: skip
    ok(
        secondline(
            "--token", lena, "ticket", "escalate", ref, "--to", "2",
            "--reason", "Warteschlange auf dem Druckserver", data_dir=site.data_dir,
        )
    )  # fmt: skip
    ok(site.admin("ticket", "assign", ref, "bob"))
    return ref


async def test_german_fix_is_suggested_for_an_english_ticket_of_another_customer(
    site: Site,
    chromium: Browser,  # noqa: F811 - the fixture imported above
    front_end: None,
) -> None:
    """German ticket solved in a recorded session → German article → English ticket of
    another customer shows it in the top 3 in the console, and "This solved it" counts."""
    await start_agent(site, "print01", "unattended")
    ref = german_ticket(site, "print01")
    term = await site.interactive(ref)
    term.type("printf 'Warteschlange %s\\n' geleert\n")
    await term.expect(b"Warteschlange geleert")
    term.type("exit 0\n")
    mark = len(site.broker.output)
    code, _ = await term.finish()
    assert code == 0
    await wait_note(site, ref, str(sessions_of(site, ref)[0]["id"]), mark)

    bob = ok(site.admin("user", "token", "bob"))
    ok(
        secondline(
            "--token", bob, "ticket", "resolve", ref, "--solution",
            "Warteschlange geleert, der Drucker druckt wieder.", data_dir=site.data_dir,
        )
    )  # fmt: skip
    as_bob = api(site, bob)
    made = as_bob.request("POST", "/kb/drafts", {"ticket": ref})
    assert isinstance(made, dict)
    assert "printf 'Warteschlange %s\\n' geleert" in [c["command"] for c in made["commands"]]
    as_bob.request(
        "PATCH", f"/kb/articles/{made['id']}", {**ARTICLE, "base_version": made["version"]}
    )
    published = json.loads(
        ok(secondline("--token", bob, "kb", "publish", str(made["ref"]), "--json",
                      data_dir=site.data_dir))
    )  # fmt: skip
    assert published["status"] == "published"

    ok(site.admin("customer", "add", "globex"))
    ok(
        secondline(
            "user", "add", "gina", "--role", "level1", "--customer", "globex",
            "--password-stdin", stdin=PASSWORD + "\n", data_dir=site.data_dir,
        )
    )  # fmt: skip
    gina = ok(site.admin("user", "token", "gina"))
    english = ok(
        secondline(
            "--token", gina, "ticket", "create", "--title", "print jobs stuck in queue",
            "--description", "printer not printing anything, documents just sit in the queue",
            "--customer", "globex", data_dir=site.data_dir,
        )
    )  # fmt: skip

    context = await new_context(chromium, lang="en-US")
    page = await context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    await page.goto(f"{site.broker.url}/console/")
    await page.fill("input[name=user]", "gina")
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/console/totp-setup**")
    secret = (await page.text_content("#totp-secret") or "").replace(" ", "")
    await page.fill("input[name=code]", totp.code_at(secret, time.time()))
    await page.click("button[type=submit]")
    await page.wait_for_url("**/console/")

    await page.goto(f"{site.broker.url}/console/tickets/{english}")
    box = page.locator("#kb-suggestions")
    await box.wait_for(timeout=WAIT_MS)
    top3 = [
        (await s.locator(".kb-result-title").text_content() or "").strip()
        for s in (await box.locator(".suggestion:not(.suggestion-ticket)").all())[:3]
    ]
    assert ARTICLE["title"] in top3, top3
    mine = box.locator(".suggestion", has_text=str(ARTICLE["title"]))
    assert await mine.locator("mark").count() >= 2  # the German words the English ones matched
    # Its source session, without the other customer's ticket number.
    said = await mine.locator(".kb-provenance").text_content() or ""
    assert said.startswith("This solved a ticket of another customer in "), said
    await mine.locator("form[action$='/solved'] button").click()
    await page.wait_for_url(f"**/console/tickets/{english}?done=*")

    await page.goto(f"{site.broker.url}/console/kb/articles/{made['ref']}")
    await page.locator(".kb-helped-count").wait_for(timeout=WAIT_MS)
    assert (await page.text_content(".kb-helped-count") or "").strip() == "1"
    assert errors == []
    await context.close()
