"""What staff do with the knowledge base, as the API and the console call it: each action
checks the caller's rights (``policy``), does its work in one transaction (``store``), and
audits every change and every refusal."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

from broker.auth.principal import Principal
from broker.kb import store
from broker.kb.analysis import QueryTerms, query_terms
from broker.kb.article import ArticleContent, StatusAction, format_article_id, parse_tag
from broker.kb.drafting import draft_from_ticket as prefill
from broker.kb.errors import (
    REDACTION_NEEDED,
    ArticleInvalid,
    KbForbidden,
    SourceNotFound,
    StatusRefused,
)
from broker.kb.feedback import feedback_order, tried_last
from broker.kb.history import FieldDiff, diff_contents
from broker.kb.languages import other_language
from broker.kb.machine_fit import machine_order, os_families
from broker.kb.policy import (
    may_change_status,
    may_mark_solved,
    may_read,
    may_write,
    sees_customer,
)
from broker.kb.render import ArticleDoc, SourceRef, article_html, to_markdown
from broker.kb.results import (
    Provenance,
    Result,
    article_results,
    in_language,
    ticket_results,
)
from broker.kb.search_docs import SEARCH_LIMIT_MAX, SearchFilter, search
from broker.kb.sources import SOLVED_STATUSES, load_ticket, sync_ticket_docs, ticket_customer
from broker.rules import InvalidName
from broker.rules.names import format_ticket_id, parse_ticket_ref
from broker.rules.views import Refused, StaffView
from broker.services import Services

SUGGESTIONS: int = 3
_LANGUAGE_NAMES = {"de": "German", "en": "English"}


@dataclass(frozen=True)
class Caller:
    """Who acts, from where."""

    principal: Principal
    source: str

    @property
    def staff(self) -> StaffView:
        role = self.principal.role
        if role is None:
            raise KbForbidden("sign in first")
        return StaffView(self.principal.name, role, False, self.principal.customers)

    @property
    def name(self) -> str:
        return self.principal.name


async def _refuse(
    services: Services, caller: Caller, action: str, target: str, refused: Refused
) -> KbForbidden:
    await services.audit.record(
        actor=caller.name,
        action=action,
        target=target,
        outcome="denied",
        source=caller.source,
        details={"code": refused.code, "reason": refused.reason},
    )
    return KbForbidden(refused.reason, code=refused.code)


def ticket_number(text: str) -> int:
    try:
        return parse_ticket_ref(text)
    except InvalidName as exc:
        raise ArticleInvalid(exc.message) from None


async def _visible_ticket(services: Services, caller: Caller, ticket: int, action: str) -> str:
    """The customer of ``ticket``; SourceNotFound unless the caller may see it."""
    async with services.db() as db:
        found = await ticket_customer(db, ticket)
    ref = format_ticket_id(ticket)
    if found is None or not sees_customer(caller.staff, found[1]):
        if found is not None:
            await services.audit.record(
                actor=caller.name,
                action=action,
                target=ref,
                outcome="denied",
                source=caller.source,
                details={"code": "customer_scope"},
            )
        raise SourceNotFound(f"there is no ticket {ref} that you may see; check the number")
    return found[1]


def visible_sources(caller: Caller, record: store.ArticleRecord) -> list[store.Source]:
    staff = caller.staff
    return [s for s in record.sources if sees_customer(staff, s.customer)]


async def draft_from_ticket(services: Services, caller: Caller, ticket: str) -> store.ArticleRecord:
    """A new draft pre-filled from the ticket and its sessions."""
    number = ticket_number(ticket)
    decision = may_write(caller.staff, "draft")
    if isinstance(decision, Refused):
        raise await _refuse(services, caller, "kb.draft", format_ticket_id(number), decision)
    await _visible_ticket(services, caller, number, "kb.draft")
    async with services.db() as db, db.begin():
        digest = await load_ticket(db, number)
        if digest is None:
            raise SourceNotFound(f"ticket {format_ticket_id(number)} is gone")
        sources = [store.Source("ticket", digest.ref, digest.customer)]
        sources += [store.Source("session", s.session, digest.customer) for s in digest.sessions]
        record = await store.create(
            db, prefill(digest), author=caller.name, now=services.clock(), sources=sources
        )
    await services.audit.record(
        actor=caller.name,
        action="kb.draft",
        target=record.ref,
        source=caller.source,
        details={"ticket": digest.ref, "sessions": [s.session for s in digest.sessions]},
    )
    return record


async def new_draft(
    services: Services, caller: Caller, content: ArticleContent
) -> store.ArticleRecord:
    decision = may_write(caller.staff, "draft")
    if isinstance(decision, Refused):
        raise await _refuse(services, caller, "kb.draft", "", decision)
    async with services.db() as db, db.begin():
        record = await store.create(db, content, author=caller.name, now=services.clock())
    await services.audit.record(
        actor=caller.name, action="kb.draft", target=record.ref, source=caller.source
    )
    return record


async def write_translation(
    services: Services, caller: Caller, article: int
) -> store.ArticleRecord:
    """A draft of the article in the other language, linked to it: the commands, tags, OS
    names and sources carried over, the texts there to be translated by its author."""
    source = await read(services, caller, article)
    decision = may_write(caller.staff, "draft")
    if isinstance(decision, Refused):
        raise await _refuse(services, caller, "kb.translate", source.ref, decision)
    language = other_language(source.content.language)
    async with services.db() as db, db.begin():
        existing = (await store.translations(db, [article])).get(article)
        if existing is not None:
            raise StatusRefused(
                f"{source.ref} has its {_LANGUAGE_NAMES[language]} version already: "
                f"{format_article_id(existing)}",
                code="translation_exists",
            )
        record = await store.create(
            db,
            replace(source.content, language=language),
            author=caller.name,
            now=services.clock(),
            sources=source.sources,
        )
        await store.link_translation(db, article, record.id)
    await services.audit.record(
        actor=caller.name,
        action="kb.translate",
        target=record.ref,
        source=caller.source,
        details={"of": source.ref, "language": language},
    )
    return record


async def translation_of(services: Services, article: int) -> int | None:
    async with services.db() as db:
        return (await store.translations(db, [article])).get(article)


async def translation_tasks(
    services: Services, caller: Caller, *, limit: int
) -> list[store.ArticleRecord]:
    """Published articles that have no version in the other language yet."""
    async with services.db() as db:
        return await store.untranslated(db, limit=limit)


async def read(services: Services, caller: Caller, article: int) -> store.ArticleRecord:
    async with services.db() as db:
        record = await store.get(db, article)
    decision = may_read(caller.staff, record.status, record.author)
    if isinstance(decision, Refused):
        raise await _refuse(services, caller, "kb.read", record.ref, decision)
    return record


async def edit(
    services: Services,
    caller: Caller,
    article: int,
    changes: Mapping[str, object],
    *,
    base_version: int | None,
    note: str,
) -> store.ArticleRecord:
    """Save the changed fields as a new version."""
    current = await read(services, caller, article)
    decision = may_write(caller.staff, current.status)
    if isinstance(decision, Refused):
        raise await _refuse(services, caller, "kb.edit", current.ref, decision)
    merged = ArticleContent.from_dict({**current.content.as_dict(), **changes})
    async with services.db() as db, db.begin():
        record = await store.save(
            db,
            article,
            merged,
            by=caller.name,
            now=services.clock(),
            base_version=base_version,
            note=note,
        )
    await services.audit.record(
        actor=caller.name,
        action="kb.edit",
        target=record.ref,
        source=caller.source,
        details={"version": record.version, "fields": sorted(changes)},
    )
    return record


async def change_status(
    services: Services, caller: Caller, article: int, action: StatusAction
) -> store.ArticleRecord:
    ref = format_article_id(article)
    decision = may_change_status(caller.staff, action)
    if isinstance(decision, Refused):
        raise await _refuse(services, caller, f"kb.{action}", ref, decision)
    try:
        async with services.db() as db, db.begin():
            record = await store.change_status(
                db, article, action, by=caller.name, now=services.clock()
            )
    except StatusRefused as exc:
        if exc.code == REDACTION_NEEDED:  # the refusal is audited; the secret itself is not
            await services.audit.record(
                actor=caller.name,
                action=f"kb.{action}",
                target=ref,
                outcome="denied",
                source=caller.source,
                details={"code": exc.code, "reason": exc.message[:500]},
            )
        raise
    await services.audit.record(
        actor=caller.name,
        action=f"kb.{action}",
        target=record.ref,
        source=caller.source,
        details={"version": record.version, "title": record.content.title},
    )
    return record


async def history(services: Services, caller: Caller, article: int) -> list[store.VersionRecord]:
    await read(services, caller, article)
    async with services.db() as db:
        return await store.versions(db, article)


async def diff(
    services: Services, caller: Caller, article: int, old: int, new: int
) -> list[FieldDiff]:
    found = {v.version: v for v in await history(services, caller, article)}
    for number in (old, new):
        if number not in found:
            raise ArticleInvalid(
                f"{format_article_id(article)} has no version {number}; "
                f"it has versions 1 to {max(found)}"
            )
    return diff_contents(found[old].content, found[new].content)


async def export(services: Services, caller: Caller, article: int) -> tuple[str, str]:
    """The article as Markdown and as sanitised HTML."""
    record = await read(services, caller, article)
    doc = ArticleDoc(
        id=record.id,
        status=record.status,
        version=record.version,
        author=record.author,
        reviewer=record.reviewer,
        content=record.content,
        sources=[SourceRef(s.kind, s.ref) for s in visible_sources(caller, record)],
    )
    return to_markdown(doc), article_html(doc)


def _statuses(staff: StaffView, wanted: str | None) -> tuple[str, ...]:
    if wanted is None or wanted == "published":
        return ("published",)
    if wanted not in ("draft", "retired", "any"):
        raise ArticleInvalid("status is published, draft, retired or any")
    decision = may_read(staff, "draft")
    if isinstance(decision, Refused):
        raise KbForbidden(decision.reason, code=decision.code)
    return ("draft", "published", "retired") if wanted == "any" else (wanted,)


async def recent(
    services: Services, caller: Caller, status: str | None, limit: int
) -> list[store.ArticleRecord]:
    """Recently changed articles in the statuses the caller may list."""
    statuses = _statuses(caller.staff, status)
    async with services.db() as db:
        return await store.list_articles(db, statuses=statuses, limit=limit)


async def search_articles(
    services: Services,
    caller: Caller,
    text: str,
    *,
    os: str | None = None,
    tag: str | None = None,
    status: str | None = None,
    limit: int = 20,
    language: str | None = None,
) -> tuple[QueryTerms, list[Result]]:
    """Articles for what a person typed; published only unless level 2+ asks for more; an
    article with a published version in ``language`` is shown in that one, once."""
    terms = query_terms(text)
    flt = SearchFilter(
        kind="article",
        statuses=_statuses(caller.staff, status),
        os=os,
        tag=parse_tag(tag) if tag else None,
        limit=limit,
    )
    async with services.db() as db:
        hits = await search(db, terms, flt)
        results = await article_results(db, terms, hits)
        return terms, await in_language(db, terms, results, language)


async def suggestions(
    services: Services,
    caller: Caller,
    ticket: str,
    *,
    limit: int = SUGGESTIONS,
    language: str | None = None,
) -> tuple[str, QueryTerms, list[Result], list[Result]]:
    """Published articles and solved tickets most like ``ticket``."""
    number = ticket_number(ticket)
    await _visible_ticket(services, caller, number, "kb.suggestions")
    async with services.db() as db, db.begin():
        digest = await load_ticket(db, number)
        if digest is None:
            raise SourceNotFound(f"ticket {format_ticket_id(number)} is gone")
        await sync_ticket_docs(db, services.clock())
    terms = query_terms(f"{digest.title}\n{digest.description}")
    machine = os_families(m.os_name for m in digest.machines)
    installed = frozenset().union(*(m.software for m in digest.machines))
    async with services.db() as db:
        # More candidates than shown, so that what people marked and articles for the
        # ticket's OS can move up past ones that only match the words a little better.
        candidates = await article_results(
            db,
            terms,
            await search(db, terms, SearchFilter(limit=min(SEARCH_LIMIT_MAX, limit * 4))),
        )
        marked = await store.not_helped_counts(db, [r.id for r in candidates])
        tried = await store.not_helped_for(db, number)
        by_feedback = feedback_order(candidates, marked)
        fitting = machine_order(
            machine, [(r, r.families, r.software) for r in by_feedback], installed
        )
        articles = tried_last(fitting, tried)[:limit]
        sources = await store.session_sources(db, [r.id for r in articles])
        articles = [_with_provenance(caller, r, sources.get(r.id)) for r in articles]
        articles = await in_language(db, terms, articles, language)
        ticket_hits = await search(
            db,
            terms,
            SearchFilter(
                kind="ticket",
                statuses=SOLVED_STATUSES,
                customers=caller.principal.customers,
                exclude_ref=number,
                limit=limit,
            ),
        )
        tickets = await ticket_results(db, terms, ticket_hits)
    return digest.ref, terms, articles, tickets


def _with_provenance(caller: Caller, result: Result, source: store.SessionSource | None) -> Result:
    """The result with the ticket it came from and how long that took; the ticket's number
    only for staff serving its customer, like the article's sources."""
    if source is None:
        return result
    ticket = format_ticket_id(source.ticket_id)
    shown = ticket if sees_customer(caller.staff, source.customer) else None
    minutes = max(1, math.ceil(source.seconds / 60))
    return replace(result, provenance=Provenance(shown, minutes))


async def mark_solved(
    services: Services, caller: Caller, article: int, ticket: str
) -> tuple[store.ArticleRecord, bool]:
    number = ticket_number(ticket)
    customer = await _visible_ticket(services, caller, number, "kb.solved")
    decision = may_mark_solved(caller.staff, customer)
    ref = format_article_id(article)
    if isinstance(decision, Refused):
        raise await _refuse(services, caller, "kb.solved", ref, decision)
    async with services.db() as db, db.begin():
        record, linked = await store.mark_solved(
            db, article, ticket_id=number, customer=customer, by=caller.name, now=services.clock()
        )
    if linked:
        await services.audit.record(
            actor=caller.name,
            action="kb.solved",
            target=record.ref,
            source=caller.source,
            details={"ticket": format_ticket_id(number), "solved_count": record.solved_count},
        )
    return record, linked


async def mark_not_helped(services: Services, caller: Caller, article: int, ticket: str) -> bool:
    """ "Did not help": the suggestion goes last on this ticket and weighs against the
    article elsewhere. False when it was noted already."""
    number = ticket_number(ticket)
    customer = await _visible_ticket(services, caller, number, "kb.not_helped")
    decision = may_mark_solved(caller.staff, customer)
    ref = format_article_id(article)
    if isinstance(decision, Refused):
        raise await _refuse(services, caller, "kb.not_helped", ref, decision)
    async with services.db() as db, db.begin():
        linked = await store.mark_not_helped(
            db, article, ticket_id=number, customer=customer, by=caller.name, now=services.clock()
        )
    if linked:
        await services.audit.record(
            actor=caller.name,
            action="kb.not_helped",
            target=ref,
            source=caller.source,
            details={"ticket": format_ticket_id(number)},
        )
    return linked


async def not_helped_count(services: Services, article: int) -> int:
    async with services.db() as db:
        return (await store.not_helped_counts(db, [article])).get(article, 0)


async def solved_tickets(services: Services, caller: Caller, article: int) -> list[str]:
    """The tickets this article solved that the caller may see."""
    async with services.db() as db:
        rows = await store.solved_tickets(db, article)
    return [format_ticket_id(t) for t, c in rows if sees_customer(caller.staff, c)]
