"""The knowledge base in the console: search, an article, its history with differences, and
publishing, retiring and reopening.

Everything is read and written through the KB API (``/api/v1/kb...``) as the signed-in
person, so these pages show and do what the API allows that person; the buttons a page
offers follow the same rules (``kb_view``), and a request the rules refuse anyway (a forged
POST) is refused by the API, audited there, and its reason shown. Articles' Markdown is
turned into HTML by the KB's own safe renderer (``broker.kb.render``: markdown-it without
raw HTML, then nh3); search highlights arrive as ``{text, match}`` pieces and the templates
build the ``<mark>`` elements, escaping every piece."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from aiohttp import web
from markupsafe import Markup

from broker.console.api_calls import Json, json_dict, json_list
from broker.console.kb_view import (
    TEXT_FIELDS,
    VERSION,
    SearchForm,
    article_actions,
    may_see_drafts,
    may_write_drafts,
    os_and_tags,
    version_diff_lines,
)
from broker.console.pages import Page, PageHandler, page_handler, redirect
from broker.errors import BrokerError, NotFoundError
from broker.kb.article import parse_article_id
from broker.kb.errors import KbError
from broker.kb.render import render_html

# The search page's filter choices come from this many recently changed articles.
FILTER_SOURCE: Final = "100"
RECENT_SHOWN: Final = 10
STATUS_ACTIONS: Final = ("publish", "retire", "reopen")


def article_number(page: Page) -> str:
    """The article of the page's path (``KB-12`` or ``12``) as its number."""
    try:
        return str(parse_article_id(page.request.match_info["id"]))
    except KbError:
        raise NotFoundError("there is no such article", code="article_not_found") from None


def article_url(number: str | int, tail: str = "") -> str:
    return f"/console/kb/articles/KB-{number}{tail}"


def markdown_html(text: str) -> Markup:
    """An article field's Markdown as the KB's sanitised HTML, safe to put into a page."""
    # S704: render_html is markdown-it with raw HTML off, then nh3 with an allow-list.
    return Markup(render_html(text)) if text.strip() else Markup("")  # noqa: S704


async def search_page(page: Page) -> web.StreamResponse:
    drafts = may_see_drafts(page.user)
    form = SearchForm.from_query(page.request.query, drafts=drafts)
    recent = json_list(await page.api("GET", "/kb/articles", query={"limit": FILTER_SOURCE}))
    oses, tags = os_and_tags(recent)
    results: list[dict[str, Json]] = []
    error: tuple[str, str] | None = None
    if form.searching:
        try:
            # Articles in both languages are shown in the reader's, as suggestions are.
            query = form.api_query() | {"lang": page.lang}
            found = json_dict(await page.api("GET", "/kb/search", query=query))
        except BrokerError as exc:  # a bad filter is said on the page, never an error page
            error = page.explain(exc)
        else:
            results = json_list(found.get("results"))
    to_review: list[dict[str, Json]] = []
    to_translate: list[dict[str, Json]] = []
    if drafts and not form.searching:
        to_review = json_list(
            await page.api("GET", "/kb/articles", query={"status": "draft", "limit": "20"})
        )
        to_translate = json_list(
            await page.api("GET", "/kb/translation-tasks", query={"limit": "10"})
        )
    return page.render(
        "kb_search.html",
        form=form,
        results=results,
        error=error,
        recent=recent[:RECENT_SHOWN],
        to_review=to_review,
        to_translate=to_translate,
        oses=oses,
        tags=tags,
        drafts=drafts,
        can_write=may_write_drafts(page.user) is None,
    )


async def article_page(page: Page) -> web.StreamResponse:
    number = article_number(page)
    article = json_dict(await page.api("GET", "/kb/articles/{id}", params={"id": number}))
    sections = {name: markdown_html(str(article.get(name) or "")) for name in TEXT_FIELDS}
    return page.render(
        "kb_article.html",
        article=article,
        sections=sections,
        actions=article_actions(
            page.user, str(article.get("status")), str(article.get("author") or "")
        ),
        # Staff who write both languages (level 2 and 3) are offered the missing version.
        may_translate=may_see_drafts(page.user) and not article.get("translation"),
    )


async def translate(page: Page) -> web.StreamResponse:
    """Start the other-language version of an article and open it in the editor."""
    number = article_number(page)
    draft = json_dict(
        await page.api("POST", "/kb/articles/{id}/translation", params={"id": number})
    )
    raise redirect(f"{article_url(int(str(draft.get('id'))))}/edit", done="kb_translation")


def _diff_query(query: Mapping[str, str], versions: list[dict[str, Json]]) -> dict[str, str]:
    """The versions to compare: as asked, else the first against the newest."""
    out = {k: query[k] for k in ("from", "to") if VERSION.fullmatch(query.get(k, ""))}
    if not out and versions:
        out = {"from": str(versions[0].get("version")), "to": str(versions[-1].get("version"))}
    return out


async def history_page(page: Page) -> web.StreamResponse:
    number = article_number(page)
    article = json_dict(await page.api("GET", "/kb/articles/{id}", params={"id": number}))
    versions = json_list(await page.api("GET", "/kb/articles/{id}/history", params={"id": number}))
    compare = _diff_query(page.request.query, versions)
    diff: Json = None
    error: tuple[str, str] | None = None
    if len(versions) > 1:
        try:
            diff = await page.api(
                "GET", "/kb/articles/{id}/diff", params={"id": number}, query=compare
            )
        except BrokerError as exc:  # versions that do not exist: said beside the form
            error = page.explain(exc)
    shown = json_dict(diff)
    return page.render(
        "kb_history.html",
        article=article,
        versions=list(reversed(versions)),
        diff=version_diff_lines(diff),
        diff_from=shown.get("from_version"),
        diff_to=shown.get("to_version"),
        error=error,
    )


def status_change(action: str) -> PageHandler:
    """The handler of a publish, retire or reopen button."""
    path = f"/kb/articles/{{id}}/{action}"

    async def change(page: Page) -> web.StreamResponse:
        number = article_number(page)
        await page.api("POST", path, params={"id": number})
        raise redirect(article_url(number), done=f"kb_{action}")

    return change


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/console/kb", page_handler(search_page))
    router.add_get("/console/kb/articles/{id}", page_handler(article_page))
    router.add_get("/console/kb/articles/{id}/history", page_handler(history_page))
    router.add_post("/console/kb/articles/{id}/translate", page_handler(translate))
    for action in STATUS_ACTIONS:
        router.add_post(
            f"/console/kb/articles/{{id}}/{action}", page_handler(status_change(action))
        )
