"""Writing knowledge-base articles in the console: a new draft, the editor with a live
preview, and what a refused save looks like.

The preview is the KB's own safe renderer on the server (``POST /console/kb/preview``, with
the session's CSRF token), so what an author sees is exactly what readers will get, and no
Markdown is ever turned into HTML in the browser. Saves go through ``PATCH
/api/v1/kb/articles/{id}`` with the version the editor was opened at; when someone saved in
between, the API refuses (``version_conflict``) and the editor comes back on the newer
version with the author's changes on top (``ArticleForm.rebase``), the other person's change
shown as a difference and the fields both changed marked, so nothing of either is lost and
saving again is a decision rather than an accident."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web
from markupsafe import Markup
from multidict import MultiDict, MultiDictProxy

from broker.console.api_calls import Json, json_dict
from broker.console.kb_view import (
    TEXT_FIELDS,
    ArticleForm,
    edit_refused,
    may_write_drafts,
    version_diff_lines,
)
from broker.console.pages import Page, page_handler, redirect
from broker.console.pages_kb import article_number, article_url, markdown_html
from broker.errors import BrokerError
from broker.kb.errors import KbError, KbForbidden
from broker.kb.render import RENDER_MAX_CHARS, render_html


def _form_page(
    page: Page,
    form: ArticleForm,
    article: dict[str, Json] | None,
    *,
    error: BrokerError | None = None,
    conflict: Json = None,
    both: Sequence[str] = (),
) -> web.Response:
    previews: dict[str, Markup] = {}
    for name in TEXT_FIELDS:
        try:
            previews[name] = markdown_html(getattr(form, name))
        except KbError:  # too large to show: the save will say so
            previews[name] = Markup("")
    return page.render(
        "kb_edit.html",
        status=error.http_status if error is not None else 200,
        form=form,
        article=article,
        previews=previews,
        error=page.explain(error) if error is not None else None,
        conflict=version_diff_lines(conflict),
        both=list(both),
        action=article_url(str(article.get("id")), "/edit") if article else "/console/kb/new",
    )


def _posted(page: Page) -> ArticleForm:
    return ArticleForm.from_fields(page.form or MultiDictProxy(MultiDict()))


def _previewing(page: Page) -> bool:
    return page.field("action", cap=10) == "preview"


async def new_page(page: Page) -> web.StreamResponse:
    refused = may_write_drafts(page.user)
    if refused is not None:
        raise KbForbidden(refused.reason, code=refused.code)
    return _form_page(page, ArticleForm(), None)


async def new_submit(page: Page) -> web.StreamResponse:
    form = _posted(page)
    if _previewing(page):
        return _form_page(page, form, None)
    try:
        created = json_dict(await page.api("POST", "/kb/articles", body=form.body()))
    except BrokerError as exc:
        return _form_page(page, form, None, error=exc)
    raise redirect(article_url(str(created.get("id"))), done="kb_created")


async def _article(page: Page, number: str) -> dict[str, Json]:
    return json_dict(await page.api("GET", "/kb/articles/{id}", params={"id": number}))


async def edit_page(page: Page) -> web.StreamResponse:
    article = await _article(page, article_number(page))
    refused = edit_refused(page.user, str(article.get("status")), str(article.get("author")))
    if refused is not None:
        raise KbForbidden(refused.reason, code=refused.code)
    return _form_page(page, ArticleForm.from_article(article), article)


async def edit_submit(page: Page) -> web.StreamResponse:
    number = article_number(page)
    form = _posted(page)
    current = await _article(page, number)
    if _previewing(page):
        return _form_page(page, form, current)
    try:
        changes = form.changes(current)
        if not changes:
            raise redirect(article_url(number), done="kb_unchanged")
        body: dict[str, object] = {**changes, "note": form.note}
        if form.base_version is not None:
            body["base_version"] = form.base_version
        await page.api("PATCH", "/kb/articles/{id}", params={"id": number}, body=body)
    except BrokerError as exc:
        if exc.code != "version_conflict":
            return _form_page(page, form, current, error=exc)
        return await _conflict(page, number, form, exc)
    raise redirect(article_url(number), done="kb_saved")


async def _conflict(page: Page, number: str, form: ArticleForm, error: BrokerError) -> web.Response:
    """The editor again after a lost race: the author's changes on top of the newer version,
    what the other save changed, and the fields both changed marked for merging."""
    current = await _article(page, number)
    newest = current.get("version")
    if form.base_version is None or not isinstance(newest, int):
        return _form_page(page, form, current, error=error)
    around = {"id": number}
    try:
        base = await page.api(
            "GET",
            "/kb/articles/{id}/versions/{version}",
            params={**around, "version": str(form.base_version)},
        )
        diff = await page.api(
            "GET",
            "/kb/articles/{id}/diff",
            params=around,
            query={"from": str(form.base_version), "to": str(newest)},
        )
    except BrokerError:  # a base that never existed: the refusal alone says enough
        return _form_page(page, form, current, error=error)
    rebased, both = form.rebase(json_dict(base), current)
    return _form_page(page, rebased, current, error=error, conflict=diff, both=both)


async def preview(page: Page) -> web.StreamResponse:
    """Markdown to sanitised HTML for the editor's live preview (JSON: ``html`` or ``error``)."""
    text = page.field("text", cap=RENDER_MAX_CHARS + 1)
    try:
        html = render_html(text)
    except KbError as exc:
        headline, _detail = page.explain(exc)
        return web.json_response({"error": headline}, status=exc.http_status)
    return web.json_response({"html": html}, headers={"Cache-Control": "no-store"})


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/console/kb/new", page_handler(new_page))
    router.add_post("/console/kb/new", page_handler(new_submit))
    router.add_get("/console/kb/articles/{id}/edit", page_handler(edit_page))
    router.add_post("/console/kb/articles/{id}/edit", page_handler(edit_submit))
    router.add_post("/console/kb/preview", page_handler(preview))
