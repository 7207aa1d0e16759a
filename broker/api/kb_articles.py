"""The knowledge base's articles: drafts from tickets, editing with version history,
publishing, "this solved it" marks, and export. Search and suggestions are in
broker.api.kb_search; what requests and answers hold is in broker.api.kb."""

from __future__ import annotations

from broker.api.kb import (
    ArticleEdit,
    ArticleIn,
    ArticleOut,
    DiffOut,
    DraftIn,
    ExportOut,
    FieldDiffOut,
    NotHelpedOut,
    SolvedIn,
    SolvedOut,
    VersionDetailOut,
    VersionOut,
    article_out,
    caller_of,
    commands_out,
    content_of,
    version_out,
)
from broker.api.routing import ApiContext, ApiRouter, QueryParam
from broker.kb import actions
from broker.kb.article import StatusAction, parse_article_id
from broker.kb.errors import ArticleNotFound

router = ApiRouter(tag="kb")


def _article_id(ctx: ApiContext) -> int:
    return parse_article_id(ctx.path("id"))


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
    caller = caller_of(ctx)
    record = await actions.draft_from_ticket(ctx.services, caller, ctx.payload(DraftIn).ticket)
    return article_out(caller, record)


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
    caller = caller_of(ctx)
    record = await actions.new_draft(ctx.services, caller, content_of(ctx.payload(ArticleIn)))
    return article_out(caller, record)


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
    caller = caller_of(ctx)
    limit = ctx.query_int("limit", low=1, high=200) or 50
    records = await actions.recent(ctx.services, caller, ctx.query("status"), limit)
    return [article_out(caller, r) for r in records]


@router.route("GET", "/kb/articles/{id}", summary="Show an article", response=ArticleOut)
async def show_article(ctx: ApiContext) -> ArticleOut:
    caller = caller_of(ctx)
    article = article_out(caller, await actions.read(ctx.services, caller, _article_id(ctx)))
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
    caller = caller_of(ctx)
    article = _article_id(ctx)
    out = article_out(caller, await actions.write_translation(ctx.services, caller, article))
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
    caller = caller_of(ctx)
    limit = ctx.query_int("limit", low=1, high=200) or 20
    records = await actions.translation_tasks(ctx.services, caller, limit=limit)
    return [article_out(caller, r) for r in records]


@router.route(
    "PATCH",
    "/kb/articles/{id}",
    summary="Edit an article; every save is a new version",
    scope="write",
    body=ArticleEdit,
    response=ArticleOut,
)
async def edit_article(ctx: ApiContext) -> ArticleOut:
    caller = caller_of(ctx)
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
    return article_out(caller, record)


async def _status(ctx: ApiContext, action: StatusAction) -> ArticleOut:
    caller = caller_of(ctx)
    record = await actions.change_status(ctx.services, caller, _article_id(ctx), action)
    return article_out(caller, record)


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
    versions = await actions.history(ctx.services, caller_of(ctx), _article_id(ctx))
    return [version_out(v) for v in versions]


@router.route(
    "GET",
    "/kb/articles/{id}/versions/{version}",
    summary="One version of an article as it was saved",
    response=VersionDetailOut,
)
async def article_version(ctx: ApiContext) -> VersionDetailOut:
    wanted = ctx.path("version")
    versions = await actions.history(ctx.services, caller_of(ctx), _article_id(ctx))
    for v in versions:
        if str(v.version) == wanted:
            c = v.content
            return VersionDetailOut(
                **version_out(v).model_dump(),
                title=c.title,
                problem=c.problem,
                environment=c.environment,
                cause=c.cause,
                solution=c.solution,
                commands=commands_out(c.commands),
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
    caller = caller_of(ctx)
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
    markdown, html = await actions.export(ctx.services, caller_of(ctx), article)
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
    caller = caller_of(ctx)
    article = _article_id(ctx)
    record, linked = await actions.mark_solved(
        ctx.services, caller, article, ctx.payload(SolvedIn).ticket
    )
    tickets = await actions.solved_tickets(ctx.services, caller, article)
    return SolvedOut(article=article_out(caller, record), linked=linked, solved_tickets=tickets)


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
        ctx.services, caller_of(ctx), article, ctx.payload(SolvedIn).ticket
    )
    count = await actions.not_helped_count(ctx.services, article)
    return NotHelpedOut(article=f"KB-{article}", linked=linked, not_helped_count=count)
