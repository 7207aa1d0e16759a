"""The knowledge base in the console over the real KB API, on SQLite and PostgreSQL: search
with highlights and filters, an article, the editor with its server-side preview and version
conflicts, history, publishing rights, hostile Markdown rendered inert, the ticket page's
suggestions, "This solved it" and "Write up as article", in German and English."""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from typing import Any

import pytest

from broker.app import CONFIG
from tests.component.test_kb_api import PRINTER_PROBLEM, printer_article, seed_ticket
from tests.support.api import Api
from tests.support.console import ConsoleClient, Page, add_customer, add_staff, csrf_of
from tests.unit.test_kb_render import Elements

pytestmark = pytest.mark.postgres

GERMAN = {"Accept-Language": "de-DE,de;q=0.9"}
ENGLISH = {"Accept-Language": "en-GB,en;q=0.9"}


@dataclass
class Desk:
    """Staff at their browsers, and an API token of the level-2 colleague."""

    lena: ConsoleClient  # level 1, acme
    max: ConsoleClient  # level 2, acme
    gus: ConsoleClient  # level 1, globex
    tokens: dict[str, str]


def browser(api: Api) -> ConsoleClient:
    return ConsoleClient(api.client, api.client.app[CONFIG].public_url)


@pytest.fixture
async def desk(api: Api) -> Desk:
    await add_customer(api, "acme")
    await add_customer(api, "globex")
    await add_staff(api, "lena", "level1", ["acme"])
    await add_staff(api, "max", "level2", ["acme"])
    await add_staff(api, "gus", "level1", ["globex"])
    _, token = await api.call("POST", "/users/max/tokens", {}, expect=201)
    assert isinstance(token, dict)
    lena, max_, gus = browser(api), browser(api), browser(api)
    for client, name in ((lena, "lena"), (max_, "max"), (gus, "gus")):
        await client.enrol(name)
    return Desk(lena, max_, gus, tokens={"l2": str(token["token"])})


async def published(api: Api, desk: Desk) -> dict[str, Any]:
    """The printer article of the KB API tests, published, with its resolved ticket."""
    return await printer_article(api, desk.tokens)


def main_text(page: Page) -> str:
    """The page's <main>, where the article's content is (the layout's script is outside)."""
    return page.text.split('<main class="content')[1].split("</main>")[0]


def edit_fields(page: Page) -> dict[str, str]:
    """The editor's fields as the browser would post them (every command row kept)."""
    text = page.text
    fields: dict[str, str] = {"_csrf": csrf_of(text), "action": "save"}
    for name in ("title", "tags", "os", "note", "base_version"):
        match = re.search(rf'name="{name}" value="([^"]*)"', text)
        if match:
            fields[name] = html.unescape(match.group(1))
    for name in ("problem", "environment", "cause", "solution"):
        match = re.search(rf'name="{name}"[^>]*>(.*?)</textarea>', text, re.S)
        assert match is not None, name
        fields[name] = html.unescape(match.group(1))
    return fields


def command_rows(page: Page) -> list[tuple[str, str]]:
    commands = re.findall(r'name="cmd_command" value="([^"]*)"', page.text)
    exits = re.findall(r'name="cmd_exit" value="([^"]*)"', page.text)
    return [(html.unescape(c), e) for c, e in zip(commands, exits, strict=True)]


async def save_form(client: ConsoleClient, path: str, fields: dict[str, str], page: Page) -> Page:
    """Post the editor with its command rows kept as they are."""
    rows = command_rows(page)
    body = list(fields.items())
    sessions = re.findall(r'name="cmd_session" value="([^"]*)"', page.text)
    for i, (command, code) in enumerate(rows):
        body += [("cmd_keep", str(i)), ("cmd_command", command), ("cmd_exit", code)]
        body += [("cmd_session", sessions[i])]
    return await client.request("POST", path, data=body)  # type: ignore[arg-type]


async def test_level_one_searches_in_german_and_finds_the_article(api: Api, desk: Desk) -> None:
    """A level-1 person's German symptoms find the published article, with the matched words
    marked, and the OS and tag filters offered and applied."""
    article = await published(api, desk)
    page = await desk.lena.get(
        "/console/kb?q=Drucker+druckt+nicht%2C+Auftr%C3%A4ge+h%C3%A4ngen", headers=GERMAN
    )
    assert page.status == 200
    assert 'lang="de"' in page.text
    assert "Wissensdatenbank" in page.text
    assert "Treffer: 1" in page.text
    results = page.text.split('id="kb-results"')[1]
    assert f'href="/console/kb/articles/KB-{article["id"]}"' in results
    assert "<mark>Druckaufträge</mark>" in results
    assert "<mark>Drucker</mark>" in results
    assert '<option value="Debian GNU/Linux 12"' in page.text
    assert '<option value="cups"' in page.text

    tagged = await desk.lena.get("/console/kb?q=printer&tag=cups")
    assert f"KB-{article['id']}" in tagged.text.split('id="kb-results"')[1]
    windows = await desk.lena.get("/console/kb?q=printer&os=Windows+11", headers=ENGLISH)
    assert "No article matches" in windows.text
    landing = await desk.lena.get("/console/kb", headers=ENGLISH)
    assert "Recently changed" in landing.text
    assert article["title"].replace("'", "&#39;") in landing.text
    assert "Drafts to review" not in landing.text


async def test_search_text_never_makes_an_error_page(api: Api, desk: Desk) -> None:
    """FTS operators, unbalanced quotes, NUL, bidi controls, bad percent-encoding and a
    malformed tag filter answer with the search page, never an error page."""
    await published(api, desk)
    queries = [
        "printer%20AND%20NOT%20%22cups",
        "%22%22%22",
        "printer%20OR%20(queue",
        "title%3Aprinter%20NEAR(%22a%20b%22)%20%5Estart%20*",
        "printer%00queue",
        "%E2%80%AEprinter%E2%80%8B",
        "%FF%FE",
        "-printer%20%2Bqueue%20~%20%7C%20%26%20!%20%3A*%20%3C-%3E%20%27",
    ]
    for q in queries:
        page = await desk.lena.get(f"/console/kb?q={q}")
        assert page.status == 200, q
        assert 'id="kb-results"' in page.text, q
        assert "\u202e" not in page.text
    bad_tag = await desk.lena.get("/console/kb?q=printer&tag=NOT%20A%20TAG!")
    assert bad_tag.status == 200
    assert 'class="alert alert-warn"' in bad_tag.text
    assert "invalid tag" in bad_tag.text
    level_one_drafts = await desk.lena.get("/console/kb?q=printer&status=any")
    assert level_one_drafts.status == 200
    assert 'name="status"' not in level_one_drafts.text


async def test_article_page_shows_every_part(api: Api, desk: Desk) -> None:
    """The article shows rendered sections, commands with their exit status, tags, OS,
    its sources to staff of the ticket's customer only, and how often it helped."""
    article = await published(api, desk)
    path = f"/console/kb/articles/KB-{article['id']}"
    page = await desk.max.get(path)
    assert page.status == 200
    body = main_text(page)
    for heading in ("Problem", "Environment", "Cause", "Solution", "Commands"):
        assert f"<h2>{heading}</h2>" in body
    assert "<p>The cups-filters package was broken.</p>" in body
    assert "<code>apt-get install --reinstall cups-filters</code>" in body
    assert body.count('class="exit exit-ok"') == 4
    assert f'href="/console/tickets/{article["ticket"]}"' in body
    session = next(s["ref"] for s in article["sources"] if s["kind"] == "session")
    assert f'href="/console/sessions/{session}/play"' in body
    assert 'href="/console/kb?q=cups&amp;tag=cups"' in body
    assert 'class="kb-helped-count">0<' in body
    assert "Debian GNU/Linux 12" in body
    assert "/edit" in body  # level 2 may edit a published article
    assert "/retire" in body

    other = await desk.gus.get(path)
    assert other.status == 200
    assert article["ticket"] not in main_text(other)
    assert "No ticket or session that you may see." in other.text
    assert "/edit" not in main_text(other)
    assert "/retire" not in main_text(other)
    assert (await desk.max.get("/console/kb/articles/KB-99999")).status == 404
    assert (await desk.max.get("/console/kb/articles/nonsense")).status == 404


async def test_level_one_gets_no_publish_button_and_a_forced_post_is_refused(
    api: Api, desk: Desk
) -> None:
    """Level 1 writes a draft but gets no publish or retire button; a forced POST is refused
    by the API with its reason shown and audited; level 2 publishes it."""
    new = await desk.lena.get("/console/kb/new")
    assert new.status == 200
    created = await desk.lena.post_form(
        "/console/kb/new",
        {
            "action": "save",
            "title": "VPN drops every hour",
            "problem": "The VPN drops every hour.",
            "solution": "Renew the certificate.",
            "tags": "vpn, certificates",
            "cmd_new": "ipsec statusall\n\n",
        },
        csrf_from="/console/kb/new",
    )
    assert created.status == 303, created.text[:500]
    location = created.location.split("?")[0]
    assert created.location.endswith("?done=kb_created")
    draft = await desk.lena.get(created.location)
    body = main_text(draft)
    assert "Draft saved." in draft.text
    assert "/edit" in body
    assert "/publish" not in body
    assert "/retire" not in body
    assert "<code>ipsec statusall</code>" in body
    assert 'class="exit exit-unknown"' in body

    forced = await desk.lena.post_form(f"{location}/publish", {}, csrf_from=location)
    assert forced.status == 403
    assert "Level-1 staff do not publish, retire or reopen articles" in forced.text
    _, events = await api.call("GET", "/audit?action=kb.publish", expect=200)
    assert isinstance(events, list)
    assert [(e["actor"], e["outcome"]) for e in events] == [("lena", "denied")]

    review = await desk.max.get(location)
    assert "/publish" in main_text(review)
    done = await desk.max.post_form(f"{location}/publish", {}, csrf_from=location)
    assert done.status == 303
    assert done.location.endswith("?done=kb_publish")
    after = await desk.lena.get(location)
    assert "Published" in main_text(after)
    assert "/edit" not in main_text(after)  # level 1 edits drafts only


async def test_editor_preview_save_history_and_version_conflict(api: Api, desk: Desk) -> None:
    """The preview is the server's safe rendering (CSRF required); a save is a version that
    the history shows as a diff; a save on a stale version is refused with the author's
    text kept and the other change shown, and saving again then goes through."""
    article = await published(api, desk)
    base = f"/console/kb/articles/KB-{article['id']}"
    editor = await desk.max.get(f"{base}/edit")
    assert editor.status == 200
    assert "data-kb-editor" in editor.text
    assert f'name="base_version" value="{article["version"]}"' in editor.text
    assert command_rows(editor)[0] == ("lpstat -p", "0")
    assert '<div class="md kb-preview" id="preview-cause" aria-live="polite"><p>' in editor.text

    token = desk.max.csrf_header(editor.text)["X-CSRF-Token"]
    shown = await desk.max.request(
        "POST", "/console/kb/preview", data={"_csrf": token, "text": "**CUPS** `lpstat`\n\n- a"}
    )
    assert shown.status == 200
    assert json.loads(shown.text) == {
        "html": "<p><strong>CUPS</strong> <code>lpstat</code></p>\n<ul>\n<li>a</li>\n</ul>\n"
    }
    refused = await desk.max.request("POST", "/console/kb/preview", data={"text": "x"})
    assert refused.status == 403
    too_big = await desk.max.request(
        "POST", "/console/kb/preview", data={"_csrf": token, "text": "x" * 262_145}
    )
    assert too_big.status == 413
    assert "error" in json.loads(too_big.text)

    fields = edit_fields(editor)
    fields["solution"] = "1. Reinstall **cups-filters**.\r\n2. Restart CUPS."
    fields["note"] = "numbered steps"
    no_js_preview = await save_form(
        desk.max, f"{base}/edit", {**fields, "action": "preview"}, editor
    )
    assert no_js_preview.status == 200
    assert "<li>Reinstall <strong>cups-filters</strong>.</li>" in no_js_preview.text
    assert "1. Reinstall **cups-filters**." in no_js_preview.text  # the text stays in the form

    # A colleague saves in between.
    await api.call(
        "PATCH",
        f"/kb/articles/{article['id']}",
        {"cause": "A broken cups-filters update."},
        token=desk.tokens["l2"],
        expect=200,
    )
    conflict = await save_form(desk.max, f"{base}/edit", fields, editor)
    assert conflict.status == 409
    assert "Someone saved this article after you opened it." in conflict.text
    assert 'id="kb-conflict"' in conflict.text
    assert '<span class="diff-add">+A broken cups-filters update.</span>' in conflict.text
    assert "1. Reinstall **cups-filters**." in conflict.text
    newest = article["version"] + 1
    assert f'name="base_version" value="{newest}"' in conflict.text

    saved = await save_form(desk.max, f"{base}/edit", edit_fields(conflict), conflict)
    assert saved.status == 303, saved.text[:300]
    assert saved.location == f"{base}?done=kb_saved"
    page = await desk.max.get(base)
    assert "<li>Reinstall <strong>cups-filters</strong>.</li>" in page.text
    assert "A broken cups-filters update." in page.text  # the colleague's change kept
    reopened = await desk.max.get(f"{base}/edit")
    unchanged = await save_form(desk.max, f"{base}/edit", edit_fields(reopened), reopened)
    assert unchanged.location == f"{base}?done=kb_unchanged"

    history = await desk.max.get(f"{base}/history")
    assert history.status == 200
    assert "numbered steps" in history.text
    assert "Reopened as draft" not in history.text
    last = await desk.max.get(f"{base}/history?from={newest}&to={newest + 1}")
    assert '<span class="diff-del">-Reinstalled the cups-filters package' in last.text
    assert '<span class="diff-add">+2. Restart CUPS.</span>' in last.text
    same = await desk.max.get(f"{base}/history?from=2&to=2")
    assert "No differences between version 2 and version 2." in same.text
    wrong = await desk.max.get(f"{base}/history?from=1&to=999")
    assert wrong.status == 200
    assert "has no version 999" in wrong.text


HOSTILE_MARKDOWN = (
    "<script>alert('md')</script>\n\n"
    "<img src=x onerror=alert(1)>\n\n"
    '<a href="#" onclick="alert(2)">click</a>\n\n'
    "[link](javascript:alert(3)) [data](data:text/html;base64,PHNjcmlwdD4=)\n\n"
    '<iframe src="https://evil.example"></iframe> <style>body{display:none}</style>\n\n'
    "[ok](https://example.org/help)"
)


def assert_inert(fragment: str) -> None:
    found = Elements(fragment)
    assert not {"script", "img", "iframe", "style", "object", "embed"} & set(found.tags)
    for name, value in found.attrs:
        assert not name.startswith("on"), (name, value)
        assert not value.strip().lower().startswith(("javascript:", "data:")), (name, value)


async def test_hostile_markdown_and_html_are_inert(api: Api, desk: Desk) -> None:
    """Script, event handlers, javascript: and data: links, frames and styles in an article
    render as inert text on the article page, in the editor, in the preview and in search."""
    _, article = await api.call(
        "POST",
        "/kb/articles",
        {
            "title": "Printer <script>alert('t')</script> hostile",
            "problem": HOSTILE_MARKDOWN,
            "solution": HOSTILE_MARKDOWN,
            "commands": [{"command": "echo '<script>alert(4)</script>'", "exit_status": 0}],
            "tags": ["printing"],
        },
        token=desk.tokens["l2"],
        expect=201,
    )
    assert isinstance(article, dict)
    await api.call(
        "POST", f"/kb/articles/{article['id']}/publish", token=desk.tokens["l2"], expect=200
    )
    path = f"/console/kb/articles/KB-{article['id']}"
    for page in (
        await desk.lena.get(path),
        await desk.max.get(f"{path}/edit"),
        await desk.lena.get("/console/kb?q=printer+hostile"),
    ):
        assert page.status == 200
        assert_inert(main_text(page))
        assert "&lt;script&gt;" in main_text(page)
    read = main_text(await desk.lena.get(path))
    assert 'href="https://example.org/help"' in read
    token = desk.max.csrf_header((await desk.max.get(path)).text)["X-CSRF-Token"]
    preview = await desk.max.request(
        "POST", "/console/kb/preview", data={"_csrf": token, "text": HOSTILE_MARKDOWN}
    )
    assert_inert(json.loads(preview.text)["html"])


async def test_ticket_page_suggestions_and_this_solved_it(api: Api, desk: Desk) -> None:
    """A new level-1 ticket lists the similar article and the solved ticket; "This solved
    it" links them once, counts the help, and says so in either case."""
    article = await published(api, desk)
    new = await seed_ticket(
        api, "acme", "Printer not printing", "print jobs stuck in the queue, filter failed"
    )
    path = f"/console/tickets/{new}"
    page = await desk.lena.get(path)
    assert page.status == 200
    panel = page.text.split('id="kb-suggestions"')[1].split("</section>")[0]
    assert f'href="/console/kb/articles/KB-{article["id"]}"' in panel
    assert f'href="/console/tickets/{article["ticket"]}"' in panel
    assert "<mark>" in panel
    assert f'name="article" value="KB-{article["id"]}"' in panel
    assert panel.count("This solved it") == 1  # articles only: a ticket is no article

    fields = {"article": f"KB-{article['id']}"}
    first = await desk.lena.post_form(f"{path}/solved", fields, csrf_from=path)
    assert first.location == f"{path}?done=kb_solved"
    again = await desk.lena.post_form(f"{path}/solved", fields, csrf_from=path)
    assert again.location == f"{path}?done=kb_solved_known"
    shown = await desk.lena.get(again.location, headers=GERMAN)
    assert "Dieser Artikel war schon als Lösung dieses Tickets vermerkt." in shown.text
    read = await desk.lena.get(f"/console/kb/articles/KB-{article['id']}")
    assert 'class="kb-helped-count">1<' in read.text
    bad = await desk.lena.post_form(f"{path}/solved", {"article": "KB-x"}, csrf_from=path)
    assert bad.status == 400

    resolved = await desk.lena.get(f"/console/tickets/{article['ticket']}")
    assert 'id="kb-suggestions"' not in resolved.text


async def test_write_up_a_resolved_level_two_ticket(api: Api, desk: Desk) -> None:
    """A ticket resolved at level 2 offers "Write up as article", which opens the editor
    on a draft pre-filled from the ticket and its sessions; an open ticket does not."""
    ticket = await seed_ticket(
        api,
        "acme",
        "Scanner sends no mail",
        "Scan to mail fails since the password change.",
        status="resolved",
        solution="Updated the SMTP password on the scanner.",
        reasons=["needs the scanner's admin page"],
        sessions=[[("curl -v smtp://mail", 0), ("false", 1)]],
    )
    path = f"/console/tickets/{ticket}"
    page = await desk.max.get(path, headers=GERMAN)
    assert "Als Artikel aufschreiben" in page.text
    written = await desk.max.post_form(f"{path}/write-up", {}, csrf_from=path)
    assert written.status == 303
    assert re.fullmatch(r"/console/kb/articles/KB-\d+/edit\?done=kb_drafted", written.location)
    editor = await desk.max.get(written.location)
    assert "Draft written from the ticket." in editor.text
    assert 'value="Scanner sends no mail"' in editor.text
    assert command_rows(editor) == [("curl -v smtp://mail", "0")]
    assert "Scan to mail fails since the password change." in editor.text

    open_ticket = await seed_ticket(api, "acme", "Scanner jams", "paper jam")
    assert "write-up" not in (await desk.max.get(f"/console/tickets/{open_ticket}")).text


async def test_pages_in_german_and_english(api: Api, desk: Desk) -> None:
    """Every KB page renders in both languages, and the navigation leads there for staff."""
    article = await published(api, desk)
    base = f"/console/kb/articles/KB-{article['id']}"
    expected = {
        "/console/kb": ("Wissensdatenbank", "Knowledge base"),
        base: ("Ursache", "Cause"),
        f"{base}/edit": ("Vorschau", "Preview"),
        f"{base}/history": ("Verlauf", "History"),
        "/console/kb/new": ("Neuer Artikel", "New article"),
    }
    for path, (german, english) in expected.items():
        de = await desk.max.get(path, headers=GERMAN)
        en = await desk.max.get(path, headers=ENGLISH)
        assert de.status == en.status == 200, path
        assert german in de.text, path
        assert english in en.text, path
        assert 'href="/console/kb" aria-current="page"' in de.text
    queue = await desk.lena.get("/console/", headers=GERMAN)
    assert re.search(r'<a href="/console/kb"\s*>Wissensdatenbank</a>', queue.text)
    assert PRINTER_PROBLEM[:20] in (await desk.lena.get(base)).text


async def test_ticket_page_did_not_help(api: Api, desk: Desk) -> None:
    """ "Did not help" beside each suggested article notes it once, says so in either case,
    and the article page counts it."""
    article = await published(api, desk)
    new = await seed_ticket(
        api, "acme", "Printer not printing", "print jobs stuck in the queue, filter failed"
    )
    path = f"/console/tickets/{new}"
    page = await desk.lena.get(path)
    panel = page.text.split('id="kb-suggestions"')[1].split("</section>")[0]
    assert f'action="{path}/not-helped"' in panel
    assert panel.count("Did not help") == 1  # articles only

    fields = {"article": f"KB-{article['id']}"}
    first = await desk.lena.post_form(f"{path}/not-helped", fields, csrf_from=path)
    assert first.location == f"{path}?done=kb_not_helped"
    again = await desk.lena.post_form(f"{path}/not-helped", fields, csrf_from=path)
    assert again.location == f"{path}?done=kb_not_helped_known"
    shown = await desk.lena.get(again.location, headers=GERMAN)
    assert "Für dieses Ticket ist schon vermerkt, dass der Artikel nicht geholfen hat." in (
        shown.text
    )
    read = await desk.lena.get(f"/console/kb/articles/KB-{article['id']}")
    assert "Did not help 1\u00d7" in read.text
    bad = await desk.lena.post_form(f"{path}/not-helped", {"article": "KB-x"}, csrf_from=path)
    assert bad.status == 400


async def test_other_language_version_is_a_task_for_level_two(api: Api, desk: Desk) -> None:
    """Level 2 sees a published article without its other-language version among the tasks
    and gets "Write the English version", which opens the linked draft in the editor; level
    1 gets neither; the article then links its other version."""
    article = await published(api, desk)  # its problem is German: a German article
    ref = f"KB-{article['id']}"
    kb = await desk.max.get("/console/kb")
    tasks = kb.text.split("kb-translation-tasks")[1].split("</section>")[0]
    assert f'href="/console/kb/articles/{ref}"' in tasks
    assert "German, English version wanted" in tasks
    assert "kb-translation-tasks" not in (await desk.lena.get("/console/kb")).text
    assert (
        "Write the English version" not in (await desk.lena.get(f"/console/kb/articles/{ref}")).text
    )

    path = f"/console/kb/articles/{ref}"
    page = await desk.max.get(path)
    assert "Write the English version" in page.text
    done = await desk.max.post_form(f"{path}/translate", {}, csrf_from=path)
    assert done.location is not None
    assert done.location.endswith("/edit?done=kb_translation")
    draft_ref = done.location.split("/console/kb/articles/")[1].split("/")[0]
    linked = await desk.max.get(path)
    assert f'href="/console/kb/articles/{draft_ref}"' in linked.text
    assert "English version" in linked.text
    assert "Write the English version" not in linked.text


async def test_editor_sets_the_language(api: Api, desk: Desk) -> None:
    """The editor shows the article's language and saves another one; left out of the post,
    the language stays as it was."""
    article = await published(api, desk)
    path = f"/console/kb/articles/KB-{article['id']}/edit"
    page = await desk.max.get(path)
    assert '<option value="de" selected>' in page.text
    unchanged = await save_form(desk.max, path, edit_fields(page), page)
    assert unchanged.status == 303
    _, same = await api.call("GET", f"/kb/articles/{article['id']}", token=desk.tokens["l2"])
    assert isinstance(same, dict)
    assert same["language"] == "de"
    page = await desk.max.get(path)
    saved = await save_form(desk.max, path, {**edit_fields(page), "language": "en"}, page)
    assert saved.status == 303
    _, now = await api.call("GET", f"/kb/articles/{article['id']}", token=desk.tokens["l2"])
    assert isinstance(now, dict)
    assert now["language"] == "en"
    assert '<option value="en" selected>' in (await desk.max.get(path)).text
