"""The knowledge base: drafts from tickets, editing with version history, publishing,
search, suggestions for a ticket, "this solved it" marks, and export."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from broker.api.routing import ApiContext, ApiRouter, QueryParam
from broker.kb import actions
from broker.kb.actions import Caller
from broker.kb.analysis import QueryTerms
from broker.kb.article import ArticleContent, CommandEntry, StatusAction, parse_article_id
from broker.kb.errors import ArticleInvalid, ArticleNotFound
from broker.kb.highlight import Segment
from broker.kb.languages import LANGUAGE_RULE, LANGUAGES, guess_language
from broker.kb.results import Result
from broker.kb.search_docs import SEARCH_LIMIT_MAX
from broker.kb.store import ArticleRecord, VersionRecord

router = ApiRouter(tag="kb")

QUERY_MAX: int = 65_536  # what a person may paste; only the start is searched


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CommandIn(Strict):
    command: str = Field(max_length=4000)
    exit_status: int | None = None
    session: str | None = Field(default=None, max_length=30)


class ArticleIn(Strict):
    title: str = Field(max_length=1000)
    problem: str = Field(default="", max_length=40_000)
    environment: str = Field(default="", max_length=8_000)
    cause: str = Field(default="", max_length=40_000)
    solution: str = Field(default="", max_length=100_000)
    commands: list[CommandIn] = Field(default_factory=list, max_length=200)
    tags: list[str] = Field(default_factory=list, max_length=20)
    os: list[str] = Field(default_factory=list, max_length=10)
    language: Literal["de", "en"] | None = None  # None: guessed from title and problem


class ArticleEdit(Strict):
    title: str | None = Field(default=None, max_length=1000)
    problem: str | None = Field(default=None, max_length=40_000)
    environment: str | None = Field(default=None, max_length=8_000)
    cause: str | None = Field(default=None, max_length=40_000)
    solution: str | None = Field(default=None, max_length=100_000)
    commands: list[CommandIn] | None = Field(default=None, max_length=200)
    tags: list[str] | None = Field(default=None, max_length=20)
    os: list[str] | None = Field(default=None, max_length=10)
    language: Literal["de", "en"] | None = None
    base_version: int | None = Field(default=None, ge=1)
    note: str = Field(default="", max_length=500)


class DraftIn(Strict):
    ticket: str = Field(max_length=20)


class SolvedIn(Strict):
    ticket: str = Field(max_length=20)


class SearchIn(Strict):
    q: str = Field(max_length=QUERY_MAX)
    os: str | None = Field(default=None, max_length=100)
    tag: str | None = Field(default=None, max_length=40)
    status: str | None = Field(default=None, max_length=16)
    limit: int = Field(default=20, ge=1, le=SEARCH_LIMIT_MAX)
    lang: str | None = Field(default=None, max_length=8)


class CommandOut(BaseModel):
    command: str
    exit_status: int | None
    session: str | None


class SourceOut(BaseModel):
    kind: str
    ref: str


class ArticleOut(BaseModel):
    id: int
    ref: str
    status: str
    version: int
    title: str
    problem: str
    environment: str
    cause: str
    solution: str
    commands: list[CommandOut]
    tags: list[str]
    os: list[str]
    author: str
    reviewer: str | None
    solved_count: int
    not_helped_count: int = 0  # "did not help" marks (read with the article)
    language: str = ""  # de | en
    translation: str | None = None  # the other-language version (read with the article)
    sources: list[SourceOut]
    created_at: dt.datetime
    updated_at: dt.datetime
    published_at: dt.datetime | None
    retired_at: dt.datetime | None


class VersionOut(BaseModel):
    version: int
    action: str
    status: str
    saved_by: str
    saved_at: dt.datetime
    note: str


class VersionDetailOut(VersionOut):
    title: str
    problem: str
    environment: str
    cause: str
    solution: str
    commands: list[CommandOut]
    tags: list[str]
    os: list[str]


class FieldDiffOut(BaseModel):
    field: str
    lines: list[str]


class DiffOut(BaseModel):
    ref: str
    from_version: int
    to_version: int
    fields: list[FieldDiffOut]


class SegmentOut(BaseModel):
    text: str
    match: bool


class ProvenanceOut(BaseModel):
    ticket: str | None  # None: a ticket of a customer the caller does not serve
    minutes: int


class ResultOut(BaseModel):
    kind: str
    id: int
    ref: str
    status: str
    title: str
    title_highlight: list[SegmentOut]
    snippet_field: str
    snippet: list[SegmentOut]
    rank: float
    tags: list[str]
    os: list[str]
    solved_count: int
    solved_in: ProvenanceOut | None = None  # suggestions: the recorded work it came from


class SearchOut(BaseModel):
    words: list[str]
    results: list[ResultOut]


class SuggestionsOut(BaseModel):
    ticket: str
    words: list[str]
    articles: list[ResultOut]
    tickets: list[ResultOut]


class SolvedOut(BaseModel):
    article: ArticleOut
    linked: bool
    solved_tickets: list[str]


class NotHelpedOut(BaseModel):
    article: str
    linked: bool
    not_helped_count: int


class ExportOut(BaseModel):
    ref: str
    filename: str
    markdown: str
    html: str


def _caller(ctx: ApiContext) -> Caller:
    return Caller(ctx.principal, ctx.source)


def _article_id(ctx: ApiContext) -> int:
    return parse_article_id(ctx.path("id"))


def _commands(commands: tuple[CommandEntry, ...]) -> list[CommandOut]:
    return [
        CommandOut(command=c.command, exit_status=c.exit_status, session=c.session)
        for c in commands
    ]


def _article_out(caller: Caller, r: ArticleRecord) -> ArticleOut:
    c = r.content
    return ArticleOut(
        id=r.id,
        ref=r.ref,
        status=r.status,
        version=r.version,
        title=c.title,
        problem=c.problem,
        environment=c.environment,
        cause=c.cause,
        solution=c.solution,
        commands=_commands(c.commands),
        tags=list(c.tags),
        os=list(c.os),
        author=r.author,
        reviewer=r.reviewer,
        solved_count=r.solved_count,
        language=c.language or guess_language(c.title, c.problem),
        sources=[SourceOut(kind=s.kind, ref=s.ref) for s in actions.visible_sources(caller, r)],
        created_at=r.created_at,
        updated_at=r.updated_at,
        published_at=r.published_at,
        retired_at=r.retired_at,
    )


def _segments(segments: list[Segment]) -> list[SegmentOut]:
    return [SegmentOut(text=s.text, match=s.match) for s in segments]


def _result_out(r: Result) -> ResultOut:
    return ResultOut(
        kind=r.kind,
        id=r.id,
        ref=r.ref,
        status=r.status,
        title="".join(s.text for s in r.title),
        title_highlight=_segments(r.title),
        snippet_field=r.snippet_field,
        snippet=_segments(r.snippet),
        rank=r.rank,
        tags=list(r.tags),
        os=list(r.os),
        solved_count=r.solved_count,
        solved_in=(
            ProvenanceOut(ticket=r.provenance.ticket, minutes=r.provenance.minutes)
            if r.provenance
            else None
        ),
    )


def _search_out(terms: QueryTerms, results: list[Result]) -> SearchOut:
    return SearchOut(words=list(terms.words), results=[_result_out(r) for r in results])


def _version_out(v: VersionRecord) -> VersionOut:
    return VersionOut(
        version=v.version,
        action=v.action,
        status=v.status,
        saved_by=v.saved_by,
        saved_at=v.saved_at,
        note=v.note,
    )


def _content(body: ArticleIn) -> ArticleContent:
    return ArticleContent(
        title=body.title,
        problem=body.problem,
        environment=body.environment,
        cause=body.cause,
        solution=body.solution,
        commands=tuple(CommandEntry(c.command, c.exit_status, c.session) for c in body.commands),
        tags=tuple(body.tags),
        os=tuple(body.os),
        language=body.language or "",
    )


@router.route(
    "POST",
    "/kb/drafts",
    summary="Write up a ticket: a draft pre-filled from the ticket, its machines and sessions",
    scope="write",
    body=DraftIn,
    response=ArticleOut,
    status=201,
)
async def create_draft(ctx: ApiContext) -> ArticleOut:
    caller = _caller(ctx)
    record = await actions.draft_from_ticket(ctx.services, caller, ctx.payload(DraftIn).ticket)
    return _article_out(caller, record)


@router.route(
    "POST",
    "/kb/articles",
    summary="Start a draft article from scratch",
    scope="write",
    body=ArticleIn,
    response=ArticleOut,
    status=201,
)
async def create_article(ctx: ApiContext) -> ArticleOut:
    caller = _caller(ctx)
    record = await actions.new_draft(ctx.services, caller, _content(ctx.payload(ArticleIn)))
    return _article_out(caller, record)


@router.route(
    "GET",
    "/kb/articles",
    summary="Recently changed articles",
    response=ArticleOut,
    many=True,
    query=(
        QueryParam("status", "string", "published (default), draft, retired or any"),
        QueryParam("limit", "integer", "at most this many (1-200, default 50)"),
    ),
)
async def list_articles(ctx: ApiContext) -> list[ArticleOut]:
    caller = _caller(ctx)
    limit = ctx.query_int("limit", low=1, high=200) or 50
    records = await actions.recent(ctx.services, caller, ctx.query("status"), limit)
    return [_article_out(caller, r) for r in records]


@router.route("GET", "/kb/articles/{id}", summary="Show an article", response=ArticleOut)
async def show_article(ctx: ApiContext) -> ArticleOut:
    caller = _caller(ctx)
    article = _article_out(caller, await actions.read(ctx.services, caller, _article_id(ctx)))
    article.not_helped_count = await actions.not_helped_count(ctx.services, article.id)
    other = await actions.translation_of(ctx.services, article.id)
    article.translation = None if other is None else f"KB-{other}"
    return article


@router.route(
    "POST",
    "/kb/articles/{id}/translation",
    summary="Start the article's version in the other language: a linked draft to translate",
    scope="write",
    response=ArticleOut,
    status=201,
)
async def write_translation(ctx: ApiContext) -> ArticleOut:
    caller = _caller(ctx)
    article = _article_id(ctx)
    out = _article_out(caller, await actions.write_translation(ctx.services, caller, article))
    out.translation = f"KB-{article}"
    return out


@router.route(
    "GET",
    "/kb/translation-tasks",
    summary="Published articles that have no version in the other language yet",
    response=ArticleOut,
    many=True,
    query=(QueryParam("limit", "integer", "at most this many (1-200, default 20)"),),
)
async def translation_tasks(ctx: ApiContext) -> list[ArticleOut]:
    caller = _caller(ctx)
    limit = ctx.query_int("limit", low=1, high=200) or 20
    records = await actions.translation_tasks(ctx.services, caller, limit=limit)
    return [_article_out(caller, r) for r in records]


@router.route(
    "PATCH",
    "/kb/articles/{id}",
    summary="Edit an article; every save is a new version",
    scope="write",
    body=ArticleEdit,
    response=ArticleOut,
)
async def edit_article(ctx: ApiContext) -> ArticleOut:
    caller = _caller(ctx)
    body = ctx.payload(ArticleEdit)
    changes = body.model_dump(exclude_unset=True, exclude={"base_version", "note"})
    record = await actions.edit(
        ctx.services,
        caller,
        _article_id(ctx),
        changes,
        base_version=body.base_version,
        note=body.note,
    )
    return _article_out(caller, record)


async def _status(ctx: ApiContext, action: StatusAction) -> ArticleOut:
    caller = _caller(ctx)
    record = await actions.change_status(ctx.services, caller, _article_id(ctx), action)
    return _article_out(caller, record)


@router.route(
    "POST",
    "/kb/articles/{id}/publish",
    summary="Publish a draft (level 2 or 3; audited)",
    scope="write",
    response=ArticleOut,
)
async def publish_article(ctx: ApiContext) -> ArticleOut:
    return await _status(ctx, "publish")


@router.route(
    "POST",
    "/kb/articles/{id}/retire",
    summary="Retire an article (level 2 or 3)",
    scope="write",
    response=ArticleOut,
)
async def retire_article(ctx: ApiContext) -> ArticleOut:
    return await _status(ctx, "retire")


@router.route(
    "POST",
    "/kb/articles/{id}/reopen",
    summary="Reopen a retired article as a draft (level 2 or 3)",
    scope="write",
    response=ArticleOut,
)
async def reopen_article(ctx: ApiContext) -> ArticleOut:
    return await _status(ctx, "reopen")


@router.route(
    "GET",
    "/kb/articles/{id}/history",
    summary="Every version of an article, oldest first",
    response=VersionOut,
    many=True,
)
async def article_history(ctx: ApiContext) -> list[VersionOut]:
    versions = await actions.history(ctx.services, _caller(ctx), _article_id(ctx))
    return [_version_out(v) for v in versions]


@router.route(
    "GET",
    "/kb/articles/{id}/versions/{version}",
    summary="One version of an article as it was saved",
    response=VersionDetailOut,
)
async def article_version(ctx: ApiContext) -> VersionDetailOut:
    wanted = ctx.path("version")
    versions = await actions.history(ctx.services, _caller(ctx), _article_id(ctx))
    for v in versions:
        if str(v.version) == wanted:
            c = v.content
            return VersionDetailOut(
                **_version_out(v).model_dump(),
                title=c.title,
                problem=c.problem,
                environment=c.environment,
                cause=c.cause,
                solution=c.solution,
                commands=_commands(c.commands),
                tags=list(c.tags),
                os=list(c.os),
            )
    raise ArticleNotFound(f"there is no version {wanted[:12]!r}; see the article's history")


@router.route(
    "GET",
    "/kb/articles/{id}/diff",
    summary="What changed between two versions, field by field (unified diff)",
    response=DiffOut,
    query=(
        QueryParam("from", "integer", "the older version (default: the one before 'to')"),
        QueryParam("to", "integer", "the newer version (default: the newest)"),
    ),
)
async def article_diff(ctx: ApiContext) -> DiffOut:
    article = _article_id(ctx)
    caller = _caller(ctx)
    versions = await actions.history(ctx.services, caller, article)
    newest = versions[-1].version
    new = ctx.query_int("to", low=1, high=10**9) or newest
    old = ctx.query_int("from", low=1, high=10**9) or max(1, new - 1)
    fields = await actions.diff(ctx.services, caller, article, old, new)
    return DiffOut(
        ref=f"KB-{article}",
        from_version=old,
        to_version=new,
        fields=[FieldDiffOut(field=f.field, lines=list(f.lines)) for f in fields],
    )


@router.route(
    "GET",
    "/kb/articles/{id}/export",
    summary="The article as Markdown, and as sanitised HTML",
    response=ExportOut,
)
async def export_article(ctx: ApiContext) -> ExportOut:
    article = _article_id(ctx)
    markdown, html = await actions.export(ctx.services, _caller(ctx), article)
    return ExportOut(ref=f"KB-{article}", filename=f"KB-{article}.md", markdown=markdown, html=html)


@router.route(
    "POST",
    "/kb/articles/{id}/solved",
    summary="Mark that this article solved a ticket (links them, counts the article's help)",
    scope="write",
    body=SolvedIn,
    response=SolvedOut,
)
async def article_solved(ctx: ApiContext) -> SolvedOut:
    caller = _caller(ctx)
    article = _article_id(ctx)
    record, linked = await actions.mark_solved(
        ctx.services, caller, article, ctx.payload(SolvedIn).ticket
    )
    tickets = await actions.solved_tickets(ctx.services, caller, article)
    return SolvedOut(article=_article_out(caller, record), linked=linked, solved_tickets=tickets)


@router.route(
    "POST",
    "/kb/articles/{id}/not-helped",
    summary="Mark that this suggested article did not help with a ticket (ranks it lower)",
    scope="write",
    body=SolvedIn,
    response=NotHelpedOut,
)
async def article_not_helped(ctx: ApiContext) -> NotHelpedOut:
    article = _article_id(ctx)
    linked = await actions.mark_not_helped(
        ctx.services, _caller(ctx), article, ctx.payload(SolvedIn).ticket
    )
    count = await actions.not_helped_count(ctx.services, article)
    return NotHelpedOut(article=f"KB-{article}", linked=linked, not_helped_count=count)


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
        _caller(ctx),
        ctx.query("q") or "",
        os=ctx.query("os"),
        tag=ctx.query("tag"),
        status=ctx.query("status"),
        limit=limit,
        language=_language(ctx.query("lang")),
    )
    return _search_out(terms, results)


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
        _caller(ctx),
        body.q,
        os=body.os,
        tag=body.tag,
        status=body.status,
        limit=body.limit,
        language=_language(body.lang),
    )
    return _search_out(terms, results)


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
        ctx.services, _caller(ctx), ticket, limit=limit, language=language
    )
    return SuggestionsOut(
        ticket=ref,
        words=list(terms.words),
        articles=[_result_out(r) for r in articles],
        tickets=[_result_out(r) for r in tickets],
    )
