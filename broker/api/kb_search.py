"""Searching the knowledge base: articles by symptoms, and what is most like a ticket
(published articles and solved tickets)."""

from __future__ import annotations

from broker.api.kb import (
    SearchIn,
    SearchOut,
    SuggestionsOut,
    caller_of,
    result_out,
    search_out,
)
from broker.api.routing import ApiContext, ApiRouter, QueryParam
from broker.kb import actions
from broker.kb.errors import ArticleInvalid
from broker.kb.languages import LANGUAGE_RULE, LANGUAGES
from broker.kb.search_docs import SEARCH_LIMIT_MAX

# The same tag as the articles' routes: one section of the API's description.
router = ApiRouter(tag="kb")


_SEARCH_QUERY = (
    QueryParam("q", "string", "what to look for, in plain words (operators are just words)"),
    QueryParam("os", "string", "only articles for this OS, e.g. debian or 'windows 11'"),
    QueryParam("tag", "string", "only articles with this tag"),
    QueryParam("status", "string", "published (default); level 2+: draft, retired or any"),
    QueryParam("limit", "integer", f"at most this many (1-{SEARCH_LIMIT_MAX}, default 20)"),
    QueryParam("lang", "string", "de or en: show an article's version in this language"),
)


def _language(value: str | None) -> str | None:
    if value is not None and value not in LANGUAGES:
        raise ArticleInvalid(f"lang={value[:10]!r}: {LANGUAGE_RULE}")
    return value


@router.route(
    "GET",
    "/kb/search",
    summary="Search articles by symptoms, best first, with highlighted snippets",
    response=SearchOut,
    query=_SEARCH_QUERY,
)
async def search_get(ctx: ApiContext) -> SearchOut:
    limit = ctx.query_int("limit", low=1, high=SEARCH_LIMIT_MAX) or 20
    terms, results = await actions.search_articles(
        ctx.services,
        caller_of(ctx),
        ctx.query("q") or "",
        os=ctx.query("os"),
        tag=ctx.query("tag"),
        status=ctx.query("status"),
        limit=limit,
        language=_language(ctx.query("lang")),
    )
    return search_out(terms, results)


@router.route(
    "POST",
    "/kb/search",
    summary="Search articles (long text in the body instead of the URL)",
    scope="read",
    body=SearchIn,
    response=SearchOut,
)
async def search_post(ctx: ApiContext) -> SearchOut:
    body = ctx.payload(SearchIn)
    terms, results = await actions.search_articles(
        ctx.services,
        caller_of(ctx),
        body.q,
        os=body.os,
        tag=body.tag,
        status=body.status,
        limit=body.limit,
        language=_language(body.lang),
    )
    return search_out(terms, results)


@router.route(
    "GET",
    "/kb/suggestions",
    summary="Published articles and solved tickets most like a ticket",
    response=SuggestionsOut,
    query=(
        QueryParam("ticket", "string", "the ticket, e.g. T-1042"),
        QueryParam("limit", "integer", "at most this many of each (1-10, default 3)"),
        QueryParam("lang", "string", "de or en: show an article's version in this language"),
    ),
)
async def suggestions(ctx: ApiContext) -> SuggestionsOut:
    ticket = ctx.query("ticket")
    if not ticket:
        raise ArticleInvalid("name the ticket: /kb/suggestions?ticket=T-1042")
    limit = ctx.query_int("limit", low=1, high=10) or actions.SUGGESTIONS
    language = _language(ctx.query("lang"))
    ref, terms, articles, tickets = await actions.suggestions(
        ctx.services, caller_of(ctx), ticket, limit=limit, language=language
    )
    return SuggestionsOut(
        ticket=ref,
        words=list(terms.words),
        articles=[result_out(r) for r in articles],
        tickets=[result_out(r) for r in tickets],
    )
