"""The queue and the ticket page, with the forms that work a ticket.

Everything is read and written through the tickets API (``/api/v1/tickets...``), so these
pages show and do exactly what the API allows the signed-in person. The ticket page also
has the knowledge base's side of a ticket, through the KB API: suggestions for an open
ticket with "This solved it", and "Write up as article" for one solved at level 2 or 3."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlencode

from aiohttp import web

from broker.console.api_calls import Json, json_dict, json_list
from broker.console.kb_view import may_write_drafts
from broker.console.pages import Page, page_handler, redirect
from broker.errors import BrokerError, InputError, NotFoundError
from broker.kb.article import parse_article_id
from broker.kb.errors import KbError
from broker.rules import InvalidName, parse_customer_name, parse_ticket_id, parse_user_name

# "active" is every status still being worked (new, open, pending).
STATUS_FILTERS: Final = ("active", "new", "open", "pending", "resolved", "closed", "all")
OPEN_STATUSES: Final = ("new", "open", "pending")
SOLVED_STATUSES: Final = ("resolved", "closed")


@dataclass(frozen=True)
class QueueFilter:
    """The queue's filters, taken from the query string and checked character by character."""

    status: str = "active"
    level: int | None = None
    customer: str = ""
    assignee: str = ""  # "", "me", "none" or a user name

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> QueueFilter:
        status = query.get("status", "active")
        if status not in STATUS_FILTERS:
            status = "active"
        level_text = query.get("level", "")
        level = int(level_text) if level_text in ("1", "2", "3") else None
        customer = _checked(query.get("customer", ""), parse_customer_name)
        assignee = query.get("assignee", "")
        if assignee not in ("", "me", "none"):
            assignee = _checked(assignee, parse_user_name)
        return cls(status, level, customer, assignee)

    def query(self) -> dict[str, str]:
        out = {"status": self.status}
        if self.level is not None:
            out["level"] = str(self.level)
        if self.customer:
            out["customer"] = self.customer
        if self.assignee:
            out["assignee"] = self.assignee
        return out


def _checked(text: str, parse: Callable[[str], str]) -> str:
    try:
        return parse(text) if text else ""
    except InvalidName:
        return ""


def _int(value: Json, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def queue_order(tickets: list[dict[str, Json]], me: str) -> list[dict[str, Json]]:
    """Unassigned first, then the viewer's own, then colleagues'; higher levels first within
    each group, and the longest-waiting ticket first after that."""

    def key(t: dict[str, Json]) -> tuple[int, int, str]:
        assignee = t.get("assignee")
        group = 0 if not assignee else 1 if assignee == me else 2
        return (group, -_int(t.get("level")), str(t.get("created_at") or ""))

    return sorted(tickets, key=key)


async def queue_tickets(page: Page, flt: QueueFilter) -> list[dict[str, Json]]:
    """The tickets the queue shows for ``flt``: the viewer's level and below."""
    query: dict[str, str] = {}
    if flt.status not in ("active", "all"):
        query["status"] = flt.status
    if flt.level is not None:
        query["level"] = str(flt.level)
    if flt.customer:
        query["customer"] = flt.customer
    if flt.assignee == "me":
        query["assignee"] = page.user.name
    elif flt.assignee not in ("", "none"):
        query["assignee"] = flt.assignee
    tickets = json_list(await page.api("GET", "/tickets", query=query))
    top = page.user.level or 3
    shown = [
        t
        for t in tickets
        if _int(t.get("level"), 1) <= top
        and (flt.status != "active" or t.get("status") in OPEN_STATUSES)
        and (flt.assignee != "none" or not t.get("assignee"))
    ]
    return queue_order(shown, page.user.name)


def queue_live_query(flt: QueueFilter) -> str:
    return urlencode({"view": "queue", **flt.query()})


async def render_queue_rows(page: Page, query: Mapping[str, str]) -> dict[str, str]:
    """The live part of the queue: its table body, re-rendered for the event stream."""
    flt = QueueFilter.from_query(query)
    tickets = await queue_tickets(page, flt)
    html = page.state.renderer.render(
        page.lang, "_queue_rows.html", {"tickets": tickets, "user": page.user}
    )
    return {"queue-rows": html, "queue-count": str(len(tickets))}


async def queue_page(page: Page) -> web.StreamResponse:
    if page.user.role == "admin":
        raise web.HTTPSeeOther("/console/admin")
    flt = QueueFilter.from_query(page.request.query)
    tickets = await queue_tickets(page, flt)
    customers = json_list(await page.api("GET", "/customers"))
    return page.render(
        "queue.html",
        tickets=tickets,
        flt=flt,
        customers=[str(c.get("name")) for c in customers],
        live_query=queue_live_query(flt),
        levels=[lvl for lvl in (1, 2, 3) if lvl <= (page.user.level or 3)],
    )


def ticket_ref(page: Page) -> str:
    ref = page.request.match_info["id"]
    try:
        parse_ticket_id(ref)
    except InvalidName:
        raise NotFoundError("there is no such ticket") from None
    return ref


async def machine_rows(page: Page, ticket: dict[str, Json]) -> list[dict[str, Json]]:
    """The ticket's linked machines, each with its facts and the session rule's decision."""
    rows: list[dict[str, Json]] = []
    ref = str(ticket.get("id"))
    for linked in json_list(ticket.get("linked_agents")):
        agent_id = str(linked.get("id") or "")
        row: dict[str, Json] = dict(linked)
        try:
            row["agent"] = await page.api("GET", "/agents/{ref}", params={"ref": agent_id})
        except BrokerError:
            row["agent"] = {}
        if page.state.api.has("GET", "/tickets/{id}/session-check"):
            try:
                row["check"] = await page.api(
                    "GET",
                    "/tickets/{id}/session-check",
                    params={"id": ref},
                    query={"agent": agent_id},
                )
            except BrokerError as error:
                headline, detail = page.explain(error)
                row["check"] = {"allowed": False, "code": error.code, "reason": detail or headline}
        else:
            row["check"] = {"allowed": False, "code": "not_available", "reason": ""}
        check = json_dict(row["check"])
        code = check.get("code")
        if not check.get("allowed") and isinstance(code, str):
            headline, detail = page.explain(_Refusal(code, str(check.get("reason") or "")))
            row["refusal"] = {"headline": headline, "detail": detail}
        rows.append(row)
    return rows


class _Refusal(BrokerError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)


async def ticket_sessions(page: Page, ticket: dict[str, Json]) -> list[dict[str, Json]]:
    sessions = json_list(ticket.get("sessions"))
    if sessions or not page.state.api.has("GET", "/sessions"):
        return sessions
    try:
        return json_list(
            await page.api("GET", "/sessions", query={"ticket": str(ticket.get("id"))})
        )
    except BrokerError:
        return []


async def render_ticket_live(page: Page, query: Mapping[str, str]) -> dict[str, str]:
    ref = query.get("ticket", "")
    try:
        parse_ticket_id(ref)
    except InvalidName:
        return {}
    ticket = json_dict(await page.api("GET", "/tickets/{id}", params={"id": ref}))
    renderer = page.state.renderer
    context = {
        "ticket": ticket,
        "machines": await machine_rows(page, ticket),
        "sessions": await ticket_sessions(page, ticket),
        "user": page.user,
        "csrf": page.user.csrf_token,
    }
    return {
        "ticket-machines": renderer.render(page.lang, "_ticket_machines.html", context),
        "ticket-sessions": renderer.render(page.lang, "_ticket_sessions.html", context),
    }


async def ticket_page(page: Page) -> web.StreamResponse:
    ref = ticket_ref(page)
    ticket = json_dict(await page.api("GET", "/tickets/{id}", params={"id": ref}))
    staff: list[dict[str, Json]] = []
    try:
        staff = json_list(await page.api("GET", "/users"))
    except BrokerError:
        staff = []
    level = _int(ticket.get("level"), 1)
    assignable = [
        s
        for s in staff
        if not s.get("disabled")
        and str(s.get("role", "")).startswith("level")
        and int(str(s.get("role"))[-1]) >= level
    ]
    return page.render(
        "ticket.html",
        ticket=ticket,
        suggestions=await ticket_suggestions(page, ticket),
        write_up=_may_write_up(page, ticket),
        machines=await machine_rows(page, ticket),
        sessions=await ticket_sessions(page, ticket),
        assignable=assignable,
        live_query=f"view=ticket&ticket={ref}",
        escalate_to=[n for n in (2, 3) if n > level and n <= (page.user.level or 0) + 1],
        hand_back_to=[n for n in (1, 2) if n < level],
    )


async def _ticket_action(
    page: Page, path: str, body: dict[str, object] | None, done: str
) -> web.StreamResponse:
    ref = ticket_ref(page)
    await page.api("POST", path, params={"id": ref}, body=body if body else None)
    raise redirect(f"/console/tickets/{ref}", done=done)


async def add_note(page: Page) -> web.StreamResponse:
    text = page.field("text")
    if not text.strip():
        raise InputError("write the note first", code="validation_failed")
    internal = page.field("visibility", cap=10) != "public"
    return await _ticket_action(
        page, "/tickets/{id}/notes", {"text": text, "internal": internal}, "note"
    )


def _level_field(page: Page) -> int:
    value = page.field("to", cap=2)
    if value not in ("1", "2", "3"):
        raise InputError("choose a level", code="bad_level")
    return int(value)


async def escalate(page: Page) -> web.StreamResponse:
    body = {"to": _level_field(page), "reason": page.field("reason", cap=2000)}
    return await _ticket_action(page, "/tickets/{id}/escalate", body, "escalated")


async def hand_back(page: Page) -> web.StreamResponse:
    body = {"to": _level_field(page), "reason": page.field("reason", cap=2000)}
    return await _ticket_action(page, "/tickets/{id}/hand-back", body, "handed_back")


async def assign(page: Page) -> web.StreamResponse:
    name = page.field("user", cap=64)
    if not name or name == page.user.name:
        # Taking is its own API call: of two people taking one ticket at once, one wins.
        return await _ticket_action(page, "/tickets/{id}/take", {}, "assigned")
    try:
        parse_user_name(name)
    except InvalidName:
        raise InputError("choose a colleague from the list", code="validation_failed") from None
    return await _ticket_action(page, "/tickets/{id}/assign", {"user": name}, "assigned")


async def resolve(page: Page) -> web.StreamResponse:
    solution = page.field("solution")
    if not solution.strip():
        raise InputError("write the solution first", code="validation_failed")
    return await _ticket_action(page, "/tickets/{id}/resolve", {"solution": solution}, "resolved")


async def ticket_suggestions(page: Page, ticket: dict[str, Json]) -> dict[str, Json] | None:
    """Published articles and solved tickets like an open ticket (None for a solved one, or
    when the knowledge base cannot answer: the page works without them)."""
    if ticket.get("status") not in OPEN_STATUSES:
        return None
    try:
        return json_dict(
            await page.api(
                "GET",
                "/kb/suggestions",
                # Articles in both languages are shown in the reader's.
                query={"ticket": str(ticket.get("id")), "lang": page.lang},
            )
        )
    except BrokerError:
        return None


def _may_write_up(page: Page, ticket: dict[str, Json]) -> bool:
    """A ticket solved at level 2 or 3 is worth an article; the KB API decides who may."""
    return (
        ticket.get("status") in SOLVED_STATUSES
        and _int(ticket.get("level"), 1) >= 2
        and may_write_drafts(page.user) is None
    )


async def write_up(page: Page) -> web.StreamResponse:
    """A draft pre-filled from the ticket, opened in the editor."""
    ref = ticket_ref(page)
    draft = json_dict(await page.api("POST", "/kb/drafts", body={"ticket": ref}))
    raise redirect(f"/console/kb/articles/KB-{_int(draft.get('id'))}/edit", done="kb_drafted")


async def mark_solved(page: Page) -> web.StreamResponse:
    """ "This solved it": the article is linked to the ticket and counted as having helped."""
    return await _mark_suggestion(page, "solved", done="kb_solved")


async def mark_not_helped(page: Page) -> web.StreamResponse:
    """ "Did not help": the suggestion goes last on this ticket and counts against it."""
    return await _mark_suggestion(page, "not-helped", done="kb_not_helped")


async def _mark_suggestion(page: Page, verb: str, *, done: str) -> web.StreamResponse:
    """Send a level-1 verdict on a suggested article; ``done`` names the notice, with
    ``_known`` when the ticket had that verdict already."""
    ref = ticket_ref(page)
    try:
        article = str(parse_article_id(page.field("article", cap=20)))
    except KbError:
        raise InputError("choose an article from the suggestions", code="article_invalid") from None
    result = json_dict(
        await page.api(
            "POST", f"/kb/articles/{{id}}/{verb}", params={"id": article}, body={"ticket": ref}
        )
    )
    raise redirect(
        f"/console/tickets/{ref}", done=done if result.get("linked") else f"{done}_known"
    )


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/console/", page_handler(queue_page))
    router.add_get("/console/tickets/{id}", page_handler(ticket_page))
    router.add_post("/console/tickets/{id}/notes", page_handler(add_note))
    router.add_post("/console/tickets/{id}/escalate", page_handler(escalate))
    router.add_post("/console/tickets/{id}/hand-back", page_handler(hand_back))
    router.add_post("/console/tickets/{id}/assign", page_handler(assign))
    router.add_post("/console/tickets/{id}/resolve", page_handler(resolve))
    router.add_post("/console/tickets/{id}/write-up", page_handler(write_up))
    router.add_post("/console/tickets/{id}/solved", page_handler(mark_solved))
    router.add_post("/console/tickets/{id}/not-helped", page_handler(mark_not_helped))
