"""The knowledge base's API on the wire: what a request may carry (``...In``, strict: unknown
fields are refused) and what an answer holds (``...Out``), made from the knowledge base's
records, shared by the routes of broker.api.kb_articles and broker.api.kb_search."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from broker.api.routing import ApiContext
from broker.kb import actions
from broker.kb.actions import Caller
from broker.kb.analysis import QueryTerms
from broker.kb.article import ArticleContent, CommandEntry
from broker.kb.highlight import Segment
from broker.kb.languages import guess_language
from broker.kb.results import Result
from broker.kb.search_docs import SEARCH_LIMIT_MAX
from broker.kb.store import ArticleRecord, VersionRecord

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


class ArticleCommandOut(BaseModel):
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
    commands: list[ArticleCommandOut]
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
    commands: list[ArticleCommandOut]
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


def caller_of(ctx: ApiContext) -> Caller:
    """Who calls, as the knowledge base's actions take it."""
    return Caller(ctx.principal, ctx.source)


def commands_out(commands: tuple[CommandEntry, ...]) -> list[ArticleCommandOut]:
    return [
        ArticleCommandOut(command=c.command, exit_status=c.exit_status, session=c.session)
        for c in commands
    ]


def article_out(caller: Caller, r: ArticleRecord) -> ArticleOut:
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
        commands=commands_out(c.commands),
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


def segments_out(segments: list[Segment]) -> list[SegmentOut]:
    return [SegmentOut(text=s.text, match=s.match) for s in segments]


def result_out(r: Result) -> ResultOut:
    return ResultOut(
        kind=r.kind,
        id=r.id,
        ref=r.ref,
        status=r.status,
        title="".join(s.text for s in r.title),
        title_highlight=segments_out(r.title),
        snippet_field=r.snippet_field,
        snippet=segments_out(r.snippet),
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


def search_out(terms: QueryTerms, results: list[Result]) -> SearchOut:
    return SearchOut(words=list(terms.words), results=[result_out(r) for r in results])


def version_out(v: VersionRecord) -> VersionOut:
    return VersionOut(
        version=v.version,
        action=v.action,
        status=v.status,
        saved_by=v.saved_by,
        saved_at=v.saved_at,
        note=v.note,
    )


def content_of(body: ArticleIn) -> ArticleContent:
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
