"""The knowledge base in headless Chromium against a real broker: a level-1 colleague signs in
with a German browser, searches symptoms in her own words, finds the published article with
the words marked, reads it, and writes a draft whose preview the server renders as she types.

Screenshots go to docs/screenshots/ (kb-search.png, kb-article.png, kb-editor.png), which
docs/knowledge-base.md shows."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote_plus

import aiohttp
import pytest
from playwright.async_api import Browser, Page

from broker.auth import totp
from tests.browser.test_console_flows import SHOTS, new_context
from tests.support.broker import BrokerProcess, secondline, start_broker
from tests.support.browser import WAIT_MS
from tests.support.console import PASSWORD, build_front_end

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

QUERY = "Drucker druckt nicht, Aufträge hängen"
PRINTER = {
    "title": "Drucker druckt nicht: Aufträge hängen mit „Filter failed“",
    "problem": (
        "Der Drucker im 2. OG druckt nicht mehr. Druckaufträge bleiben in der Warteschlange "
        "hängen, die CUPS-Weboberfläche zeigt **Filter failed**."
    ),
    "environment": "Debian GNU/Linux 12 (Kernel 6.1, x86_64), CUPS 2.4",
    "cause": (
        "Nach einem abgebrochenen Update war das Paket `cups-filters` beschädigt: der "
        "PDF-Filter brach bei jedem Auftrag ab."
    ),
    "solution": (
        "1. Im Journal nach `Filter failed` suchen.\n"
        "2. `cups-filters` neu installieren.\n"
        "3. CUPS neu starten und eine Testseite drucken.\n\n"
        "> Hängende Aufträge laufen danach von selbst weiter."
    ),
    "commands": [
        {"command": "lpstat -p", "exit_status": 0},
        {"command": "journalctl -u cups --since today", "exit_status": 0},
        {"command": "apt-get install --reinstall cups-filters", "exit_status": 0},
        {"command": "systemctl restart cups", "exit_status": 0},
        {"command": "lp -d buero-2og /usr/share/cups/data/testprint", "exit_status": 0},
    ],
    "tags": ["drucken", "cups", "debian"],
    "os": ["Debian GNU/Linux 12"],
}
PRINTER_EN = {
    "title": "Printer does not print: jobs stuck with 'Filter failed'",
    "problem": (
        "The printer on the 2nd floor prints nothing. Print jobs stay in the queue, the CUPS "
        "web interface says **Filter failed**."
    ),
    "solution": (
        "1. Look for `Filter failed` in the journal.\n"
        "2. Reinstall `cups-filters`.\n"
        "3. Restart CUPS and print a test page."
    ),
    "language": "en",
}
OTHERS = [
    {
        "title": "Druckaufträge verschwinden ohne Ausdruck",
        "problem": "Aufträge erscheinen kurz in der Druckwarteschlange und verschwinden dann.",
        "solution": "Den Dienst *Druckwarteschlange* neu starten und den Spooler-Ordner leeren.",
        "commands": [
            {"command": "net stop spooler", "exit_status": 0},
            {"command": r"del /q C:\Windows\System32\spool\PRINTERS\*", "exit_status": 0},
            {"command": "net start spooler", "exit_status": 0},
        ],
        "tags": ["drucken", "windows", "spooler"],
        "os": ["Windows 11"],
    },
    {
        "title": "Outlook fragt ständig nach dem Passwort",
        "problem": "Nach der Umstellung auf Microsoft 365 fragt Outlook alle paar Minuten.",
        "solution": "Die alten Anmeldedaten in der Windows-Anmeldeinformationsverwaltung löschen.",
        "tags": ["outlook", "m365"],
        "os": ["Windows 11"],
    },
]


@dataclass
class Desk:
    broker: BrokerProcess
    article: int
    ticket: str
    english: int = 0  # the printer article's English version
    last_step: int = 0

    def code(self, secret: str) -> str:
        now = totp.step_at(time.time())
        step = max(now - 1, self.last_step + 1)
        assert step <= now + 1, "ran out of codes in the window"
        self.last_step = step
        return totp.code_at(secret, step * totp.STEP_SECONDS)


def admin(data_dir: Path, *args: str, stdin: str | None = None) -> str:
    result = secondline(*args, data_dir=data_dir, stdin=stdin)
    assert result.code == 0, result.err
    return result.out


async def write_articles(broker: BrokerProcess, token: str, ticket: str) -> tuple[int, int]:
    """The printer article from the ticket (published, helped once) with its English
    version, and two more."""
    tls = ssl.create_default_context(cafile=str(broker.data_dir / "keys" / "tls.crt"))
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(base_url=broker.url, headers=headers) as http:

        async def call(method: str, path: str, body: object = None) -> dict[str, object]:
            async with http.request(method, f"/api/v1{path}", json=body, ssl=tls) as r:
                data = await r.json()
                assert r.status in (200, 201), data
                assert isinstance(data, dict)
                return data

        draft = await call("POST", "/kb/drafts", {"ticket": ticket})
        number = int(str(draft["id"]))
        await call("PATCH", f"/kb/articles/{number}", PRINTER)
        await call("POST", f"/kb/articles/{number}/publish")
        await call("POST", f"/kb/articles/{number}/solved", {"ticket": ticket})
        english = await call("POST", f"/kb/articles/{number}/translation")
        await call("PATCH", f"/kb/articles/{english['id']}", PRINTER_EN)
        await call("POST", f"/kb/articles/{english['id']}/publish")
        for other in OTHERS:
            created = await call("POST", "/kb/articles", other)
            await call("POST", f"/kb/articles/{created['id']}/publish")
    return number, int(str(english["id"]))


@pytest.fixture(scope="module")
def front_end() -> None:
    build_front_end()


@pytest.fixture
async def desk(sqlite_data_dir: Path, front_end: None) -> AsyncIterator[Desk]:
    data_dir = sqlite_data_dir
    broker = await start_broker(data_dir)
    try:
        admin(data_dir, "customer", "add", "acme", "--display-name", "ACME GmbH")
        for name, role, display in (("max", "level2", "Max Weber"), ("tina", "level1", "Tina")):
            admin(
                data_dir, "user", "add", name, "--role", role, "--display-name", display,
                "--customer", "acme", "--password-stdin", stdin=PASSWORD + "\n",
            )  # fmt: skip
        token = json.loads(admin(data_dir, "user", "token", "max", "--json"))["token"]
        ticket = secondline(
            "--token", token, "ticket", "create", "--title", "Drucker im 2. OG druckt nicht",
            "--customer", "acme", "--requester", "Anna Schmidt",
            "--description", "Alle Aufträge hängen in der Warteschlange.", data_dir=data_dir,
        )  # fmt: skip
        assert ticket.code == 0, ticket.err
        ref = ticket.out.strip()
        number, english = await write_articles(broker, token, ref)
        yield Desk(broker, number, ref, english)
    finally:
        await broker.stop()


async def sign_in_first_time(desk: Desk, page: Page, user: str) -> None:
    """Password, then the authenticator set-up the first sign-in asks for."""
    await page.goto(f"{desk.broker.url}/console/")
    await page.fill("input[name=user]", user)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/console/totp-setup**")
    secret = (await page.text_content("#totp-secret") or "").replace(" ", "")
    await page.fill("input[name=code]", desk.code(secret))
    await page.click("button[type=submit]")
    await page.wait_for_url("**/console/")


async def test_level_one_finds_reads_and_writes_in_german(desk: Desk, chromium: Browser) -> None:
    """Tina (level 1, German browser) searches symptoms, finds and reads the published
    article without publishing rights, and drafts an article with a live preview."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    context = await new_context(chromium, lang="de-DE")
    page = await context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    await sign_in_first_time(desk, page, "tina")

    await page.click("nav.mainnav a[href='/console/kb']")
    await page.wait_for_url("**/console/kb")
    await page.fill("input[name=q]", QUERY)
    await page.press("input[name=q]", "Enter")
    await page.wait_for_url("**/console/kb?q=*")
    first = page.locator(".kb-result").first
    await first.wait_for(timeout=WAIT_MS)
    assert await first.locator("mark").count() >= 2
    assert "Filter failed" in (await first.locator(".kb-result-title").text_content() or "")
    # Outlook does not match; the printer article is shown once, in German.
    assert await page.locator(".kb-result").count() == 2
    await page.mouse.move(0, 0)
    await page.screenshot(path=SHOTS / "kb-search.png")

    await first.locator(".kb-result-title").click()
    await page.wait_for_url(f"**/console/kb/articles/KB-{desk.article}")
    await page.locator(".kb-section-solution ol li").first.wait_for()
    assert await page.locator("form[action$='/publish'], form[action$='/retire']").count() == 0
    assert await page.locator(".kb-commands li").count() == 5
    assert await page.locator(f".kb-sources a:text('{desk.ticket}')").count() == 1
    assert (await page.text_content(".kb-helped-count") or "").strip() == "1"
    await page.screenshot(path=SHOTS / "kb-article.png", full_page=True)

    await page.goto(f"{desk.broker.url}/console/kb/new")
    await page.fill("input[name=title]", "Scanner sendet keine Mails mehr")
    await page.fill(
        "#f-problem", "Scan-to-Mail bricht ab mit **Authentifizierung fehlgeschlagen**."
    )
    await page.locator("#preview-problem strong").wait_for(timeout=WAIT_MS)
    await page.fill(
        "#f-environment", "Multifunktionsgerät Kyocera M2540dn, Mail über `smtp.acme.de`"
    )
    await page.locator("#preview-environment code").wait_for(timeout=WAIT_MS)
    await page.fill("#f-solution", "1. SMTP-Passwort im Scanner erneuern\n2. Testscan senden")
    await page.locator("#preview-solution ol li").nth(1).wait_for(timeout=WAIT_MS)
    await page.fill("#f-cause", "<script>window.pwned = 1</script>[x](javascript:alert(1))")
    await page.locator("#preview-cause p").wait_for(timeout=WAIT_MS)
    assert await page.evaluate("window.pwned === undefined")
    assert await page.locator("#preview-cause a[href^='javascript']").count() == 0
    await page.fill("#f-cause", "Das SMTP-Passwort wurde zentral geändert.")
    await page.locator("#preview-cause p:text('zentral')").wait_for(timeout=WAIT_MS)
    await page.evaluate("document.activeElement.blur(); window.scrollTo(0, 0)")
    await page.screenshot(path=SHOTS / "kb-editor.png")
    await page.click("button[value=save]")
    await page.wait_for_url("**/console/kb/articles/KB-*?done=kb_created")
    assert await page.locator(".chip-kb-draft").count() == 1
    assert errors == []
    await context.close()


async def test_search_shows_each_article_in_the_readers_language(
    desk: Desk, chromium: Browser
) -> None:
    """An English reader searching in German gets the printer article once, in English:
    the search results page shows the reader's version where both exist."""
    context = await new_context(chromium, lang="en-US")
    page = await context.new_page()
    await sign_in_first_time(desk, page, "tina")
    await page.goto(f"{desk.broker.url}/console/kb?q={quote_plus(QUERY)}")
    first = page.locator(".kb-result").first
    await first.wait_for(timeout=WAIT_MS)
    assert await page.locator(".kb-result").count() == 2
    title = first.locator(".kb-result-title")
    assert (await title.text_content() or "").startswith("Printer does not print")
    assert await title.get_attribute("href") == f"/console/kb/articles/KB-{desk.english}"
    assert await page.locator(f"a[href='/console/kb/articles/KB-{desk.article}']").count() == 0
    await context.close()
