"""A stand-in for Zammad's REST API, for the connector tests (Zammad cannot run on these
machines).

It follows the Zammad REST API documentation as published for Zammad 6.x
(docs.zammad.org, "API" → Introduction, Tickets, Articles, Groups, Users; the
``zammad-documentation`` sources ``api/intro.rst``, ``api/ticket/index.rst``,
``api/ticket/articles.rst``) and, where the documentation is thin, Zammad's own controllers
(``app/controllers/tickets_controller.rb``: search pages with ``page``/``per_page``, at most
200 a page; ``ticket_articles_controller.rb``: ``by_ticket`` lists every article with its
attachments' names, never their content):

- ``Authorization: Token token=…``; a wrong token is ``401 {"error": "authentication
  failed"}``; a user without access to a ticket's group gets ``403 {"error": "Not
  authorized"}``; an unknown ticket is ``404 {"error": "Couldn't find Ticket with 'id'=…"}``;
  a bad value is ``422 {"error": …, "error_human": …}``.
- ``?expand=true`` gives relations by name (``group``, ``state``, ``owner``, ``customer``,
  ``organization``, ``updated_by``; ``owner`` is ``"-"`` for nobody); ``users/me`` with it
  the user's ``groups`` as ``{name: [access, …]}``.
- ``tickets/search`` understands the query forms the connector sends (``number:"N"``,
  ``updated_at:["…" TO *]``, ``(group.name:"A" OR …)``, ``state.name:("new" OR …)``, joined
  by ``AND``), sorts by ``sort_by``/``order_by`` and answers the expanded list.
- Merges as ``Ticket#merge_to`` (``app/models/ticket.rb``) makes them: the merged ticket's
  articles move to the target, its links are handed to the target, it gets the link
  ``parent`` from the target, an article ``merged``, the state ``merged`` and owner ``-``;
  both tickets are updated. ``GET links?link_object=Ticket&link_object_value=ID``
  (``links_controller.rb``, ``Link.list`` with the user) answers ``{"links": [{link_type,
  link_object, link_object_value}], "assets": {"Ticket": {"ID": {…}}}}``, a link's type
  seen from the ticket asked about, links to tickets the user may not see left out.
- Articles: ``POST ticket_articles`` with ``internal``, ``type`` and base64 ``attachments``
  (``filename``, ``data``, ``mime-type``); ``GET ticket_attachment/T/A/F`` serves a file.
- Rate limiting and outages come from :class:`tests.support.standin_http.StandIn`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from tests.support.standin_http import StandIn, locked

STATES = ("new", "open", "pending reminder", "pending close", "closed", "merged", "removed")
SEARCH_MAX = 200
_RANGE = re.compile(r'^([\w.]+):\[(".*?"|\S+) TO \*\]$')
_LIST = re.compile(r"^([\w.]+):\((.*)\)$")
_TERM = re.compile(r'^([\w.]+):(".*"|\S+)$')


@dataclass
class Agent:
    login: str
    token: str
    groups: dict[str, list[str]]
    agent: bool = True  # the token carries ticket.agent


@dataclass
class Article:
    id: int
    ticket_id: int
    subject: str
    body: str
    internal: bool
    type: str
    created_by: str
    attachments: list[tuple[int, str, str, bytes]] = field(default_factory=list)

    def shown(self) -> dict[str, object]:
        return {
            "id": self.id,
            "ticket_id": self.ticket_id,
            "subject": self.subject,
            "body": self.body,
            "content_type": "text/plain",
            "type": self.type,
            "internal": self.internal,
            "created_by": self.created_by,
            "attachments": [
                {"id": i, "filename": n, "size": str(len(d)), "preferences": {"Mime-Type": t}}
                for i, n, t, d in self.attachments
            ],
        }


@dataclass
class Ticket:
    id: int
    number: str
    title: str
    group: str
    state: str
    customer: str
    organization: str
    owner: str = "-"
    updated_by: str = "-"
    updated_at: str = ""
    pending_time: str | None = None

    def shown(self) -> dict[str, object]:
        return {
            "id": self.id,
            "number": self.number,
            "title": self.title,
            "group": self.group,
            "state": self.state,
            "owner": self.owner,
            "customer": self.customer,
            "organization": self.organization,
            "updated_by": self.updated_by,
            "updated_at": self.updated_at,
            "pending_time": self.pending_time,
        }


FIELDS: dict[str, Callable[[Ticket], str]] = {
    "number": lambda t: t.number,
    "updated_at": lambda t: t.updated_at,
    "group.name": lambda t: t.group,
    "state.name": lambda t: t.state,
    "title": lambda t: t.title,
}


def _unquote(value: str) -> str:
    if value.startswith('"') and value.endswith('"'):
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def _split(text: str, word: str) -> list[str]:
    """``text`` split at ``word`` outside quotes and parentheses."""
    parts, depth, quoted, start, i = [], 0, False, 0, 0
    while i < len(text):
        c = text[i]
        if c == "\\" and quoted:
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif not quoted and c in "([":
            depth += 1
        elif not quoted and c in ")]":
            depth -= 1
        elif not quoted and depth == 0 and text.startswith(word, i):
            parts.append(text[start:i])
            start = i + len(word)
            i = start
            continue
        i += 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


class ZammadStandIn(StandIn):
    def __init__(self) -> None:
        super().__init__()
        self.groups = ["Users", "2nd Level", "3rd Level"]
        self.agents: dict[str, Agent] = {}
        self.tickets: dict[int, Ticket] = {}
        self.articles: dict[int, Article] = {}
        # (type, source ticket id, target ticket id), as Zammad's links table holds them.
        self.links: list[tuple[str, int, int]] = []
        self._last = ""
        self._next_article = 1
        self._next_file = 1
        self.token = self.add_agent("secondline@example.com").token

    # -- the test's side: people working in Zammad ------------------------------------------

    @locked
    def add_agent(self, login: str, groups: list[str] | None = None) -> Agent:
        names = self.groups if groups is None else groups
        agent = Agent(login, secrets.token_hex(16), {g: ["full"] for g in names})
        self.agents[agent.token] = agent
        return agent

    def _stamp(self) -> str:
        now = dt.datetime.now(dt.UTC)
        text = f"{now:%Y-%m-%dT%H:%M:%S}.{now.microsecond // 1000:03d}Z"
        if text <= self._last:  # strictly later than the last change, as a real clock moves
            last = dt.datetime.strptime(self._last, "%Y-%m-%dT%H:%M:%S.%fZ")
            later = last + dt.timedelta(milliseconds=1)
            text = f"{later:%Y-%m-%dT%H:%M:%S}.{later.microsecond // 1000:03d}Z"
        self._last = text
        return text

    @locked
    def create_ticket(
        self, group: str, title: str, customer: str = "eve@example.com", organization: str = ""
    ) -> str:
        ticket_id = len(self.tickets) + 1
        ticket = Ticket(
            id=ticket_id,
            number=str(31000 + ticket_id),
            title=title,
            group=group,
            state="new",
            customer=customer,
            organization=organization,
            updated_by=customer,
            updated_at=self._stamp(),
        )
        self.tickets[ticket_id] = ticket
        return ticket.number

    @locked
    def by_number(self, number: str) -> Ticket:
        return next(t for t in self.tickets.values() if t.number == number)

    @locked
    def move(self, number: str, group: str, by: str = "anna@example.com") -> None:
        ticket = self.by_number(number)
        ticket.group, ticket.updated_by, ticket.updated_at = group, by, self._stamp()

    @locked
    def merge(self, number: str, into: str, by: str = "anna@example.com") -> None:
        """Merge ticket ``number`` into ``into`` as Zammad's ``Ticket#merge_to`` does."""
        ticket, target = self.by_number(number), self.by_number(into)
        if target.state == "merged" or target.id == ticket.id:
            raise ValueError("Zammad refuses this merge")
        for article in self.articles.values():
            if article.ticket_id == ticket.id:
                article.ticket_id = target.id
        self.links = [
            (
                kind,
                target.id if source == ticket.id else source,
                target.id if dest == ticket.id else dest,
            )
            for kind, source, dest in self.links
        ]
        self.links.append(("parent", target.id, ticket.id))
        merged = Article(self._next_article, ticket.id, "", "merged", False, "note", by)
        self._next_article += 1
        self.articles[merged.id] = merged
        ticket.state, ticket.owner = "merged", "-"
        ticket.updated_by, ticket.updated_at = by, self._stamp()
        target.updated_by, target.updated_at = by, self._stamp()

    @locked
    def add_article(
        self,
        number: str,
        subject: str,
        body: str,
        files: list[tuple[str, bytes]] = (),  # type: ignore[assignment]
    ) -> None:
        """An article written in Zammad (a customer's mail, a colleague's note)."""
        ticket = self.by_number(number)
        article = Article(self._next_article, ticket.id, subject, body, False, "email", "-")
        self._next_article += 1
        for name, data in files:
            article.attachments.append((self._next_file, name, "application/octet-stream", data))
            self._next_file += 1
        self.articles[article.id] = article

    @locked
    def notes(self, number: str) -> list[Article]:
        """The internal notes on the ticket, oldest first."""
        ticket = self.by_number(number)
        return [a for a in self.articles.values() if a.ticket_id == ticket.id and a.type == "note"]

    # -- the API -----------------------------------------------------------------------------

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/api/v1/users/me", self._me)
        app.router.add_get("/api/v1/tickets/search", self._search)
        app.router.add_get("/api/v1/tickets/{id}", self._show)
        app.router.add_put("/api/v1/tickets/{id}", self._update)
        app.router.add_get("/api/v1/ticket_articles/by_ticket/{id}", self._by_ticket)
        app.router.add_post("/api/v1/ticket_articles", self._create_article)
        app.router.add_get("/api/v1/ticket_attachment/{t}/{a}/{f}", self._attachment)
        app.router.add_get("/api/v1/links", self._links)

    def _agent(self, request: web.Request) -> Agent:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Token token=") if header.startswith("Token token=") else ""
        agent = self.agents.get(token)
        if agent is None:
            raise _error(401, "authentication failed")
        return agent

    def _ticket(self, request: web.Request, agent: Agent, ticket_id: str) -> Ticket:
        if not agent.agent:
            raise _error(403, "Not authorized (token)!")
        ticket = self.tickets.get(int(ticket_id)) if ticket_id.isdigit() else None
        if ticket is None:
            raise _error(404, f"Couldn't find Ticket with 'id'={ticket_id}")
        if ticket.group not in agent.groups:
            raise _error(403, "Not authorized")
        return ticket

    async def _me(self, request: web.Request) -> web.Response:
        agent = self._agent(request)
        me: dict[str, object] = {"id": 3, "login": agent.login}
        if request.query.get("expand") == "true":
            me["groups"] = {g: r for g, r in agent.groups.items() if g in self.groups}
        return web.json_response(me)

    async def _search(self, request: web.Request) -> web.Response:
        agent = self._agent(request)
        if not agent.agent:
            raise _error(403, "Not authorized (token)!")
        try:
            match = self._query(request.query.get("query", ""))
        except ValueError as exc:
            raise _error(422, str(exc)) from None
        found = [t for t in self.tickets.values() if t.group in agent.groups and match(t)]
        sort_by = request.query.get("sort_by", "updated_at")
        found.sort(key=lambda t: (str(getattr(t, sort_by, "")), t.id))
        if request.query.get("order_by") == "desc":
            found.reverse()
        per_page = min(int(request.query.get("per_page", "50")), SEARCH_MAX)
        page = int(request.query.get("page", "1"))
        shown = found[(page - 1) * per_page : page * per_page]
        if request.query.get("expand") == "true":
            return web.json_response([t.shown() for t in shown])
        return web.json_response(
            {"tickets": [t.id for t in shown], "tickets_count": len(found), "assets": {}}
        )

    def _query(self, query: str) -> Callable[[Ticket], bool]:
        """The query as a test of a ticket: every clause holds (``AND``); a clause is a
        range from a value, or one value of a list of field values (``OR``)."""
        clauses: list[tuple[str, list[tuple[str, str]]]] = []
        for clause in _split(query, " AND "):
            inner = clause[1:-1] if clause.startswith("(") and clause.endswith(")") else clause
            if found := _RANGE.match(inner):
                clauses.append((">=", [(found.group(1), _unquote(found.group(2)))]))
                continue
            if found := _LIST.match(inner):
                name = found.group(1)
                values = [(name, _unquote(v)) for v in _split(found.group(2), " OR ")]
                clauses.append(("=", values))
                continue
            terms = []
            for term in _split(inner, " OR "):
                found = _TERM.match(term)
                if found is None:
                    raise ValueError(f"the stand-in does not understand {term!r}")
                terms.append((found.group(1), _unquote(found.group(2))))
            clauses.append(("=", terms))
        for _, terms in clauses:
            for name, _ in terms:
                if name not in FIELDS:
                    raise ValueError(f"the stand-in knows no field {name!r}")

        def holds(ticket: Ticket) -> bool:
            for op, terms in clauses:
                if op == ">=" and not FIELDS[terms[0][0]](ticket) >= terms[0][1]:
                    return False
                if op == "=" and not any(FIELDS[n](ticket) == v for n, v in terms):
                    return False
            return True

        return holds

    async def _show(self, request: web.Request) -> web.Response:
        agent = self._agent(request)
        return web.json_response(self._ticket(request, agent, request.match_info["id"]).shown())

    async def _update(self, request: web.Request) -> web.Response:
        agent = self._agent(request)
        ticket = self._ticket(request, agent, request.match_info["id"])
        body = await request.json()
        group = body.get("group", ticket.group)
        if group not in self.groups:
            raise _error(422, f"No lookup value found for 'group': {group!r}")
        owner = body.get("owner", ticket.owner)
        if owner != "-" and owner not in {a.login for a in self.agents.values()}:
            raise _error(422, f"No lookup value found for 'owner': {owner!r}")
        state = body.get("state", ticket.state)
        if state not in STATES:
            raise _error(422, f"No lookup value found for 'state': {state!r}")
        if state.startswith("pending") and not body.get("pending_time"):
            raise _error(422, "Missing required value for field 'pending_time'!")
        ticket.group, ticket.owner, ticket.state = group, owner, state
        ticket.pending_time = body.get("pending_time", ticket.pending_time)
        ticket.updated_by, ticket.updated_at = agent.login, self._stamp()
        return web.json_response(ticket.shown())

    async def _by_ticket(self, request: web.Request) -> web.Response:
        agent = self._agent(request)
        ticket = self._ticket(request, agent, request.match_info["id"])
        shown = [a.shown() for a in self.articles.values() if a.ticket_id == ticket.id]
        return web.json_response(shown)

    async def _create_article(self, request: web.Request) -> web.Response:
        agent = self._agent(request)
        body = await request.json()
        ticket = self._ticket(request, agent, str(body.get("ticket_id", "")))
        if "full" not in agent.groups.get(ticket.group, []):
            raise _error(403, "Not authorized")
        article = Article(
            self._next_article,
            ticket.id,
            str(body.get("subject", "")),
            str(body.get("body", "")),
            bool(body.get("internal", False)),
            str(body.get("type", "note")),
            agent.login,
        )
        for item in body.get("attachments", []):
            try:
                data = base64.b64decode(item["data"], validate=True)
            except (KeyError, TypeError, binascii.Error):
                raise _error(422, "Invalid attachment data") from None
            article.attachments.append(
                (self._next_file, str(item.get("filename")), str(item.get("mime-type")), data)
            )
            self._next_file += 1
        self._next_article += 1
        self.articles[article.id] = article
        ticket.updated_by, ticket.updated_at = agent.login, self._stamp()
        return web.json_response(article.shown(), status=201)

    async def _links(self, request: web.Request) -> web.Response:
        agent = self._agent(request)
        if request.query.get("link_object") != "Ticket":
            raise _error(422, "the stand-in knows links of tickets only")
        asked = request.query.get("link_object_value", "")
        ticket_id = int(asked) if asked.isdigit() else 0
        flip = {"parent": "child", "child": "parent", "normal": "normal"}
        # Seen from the ticket asked about: as its source, the type is flipped.
        seen = [(flip[k], dest) for k, source, dest in self.links if source == ticket_id]
        seen += [(k, source) for k, source, dest in self.links if dest == ticket_id]
        visible = [
            (k, other)
            for k, other in seen
            if other in self.tickets and self.tickets[other].group in agent.groups
        ]
        links = [
            {"link_type": k, "link_object": "Ticket", "link_object_value": other}
            for k, other in visible
        ]
        assets = {"Ticket": {str(o): self.tickets[o].shown() for _, o in visible}}
        return web.json_response({"links": links, "assets": assets})

    async def _attachment(self, request: web.Request) -> web.Response:
        agent = self._agent(request)
        self._ticket(request, agent, request.match_info["t"])
        article = self.articles[int(request.match_info["a"])]
        for file_id, _, content_type, data in article.attachments:
            if str(file_id) == request.match_info["f"]:
                return web.Response(body=data, content_type=content_type)
        raise _error(403, "The file does not belong to the specified article.")


_ERRORS: dict[int, type[web.HTTPException]] = {
    401: web.HTTPUnauthorized,
    403: web.HTTPForbidden,
    404: web.HTTPNotFound,
    422: web.HTTPUnprocessableEntity,
}


def _error(status: int, message: str) -> web.HTTPException:
    """Zammad's error answer: ``{"error": …, "error_human": …}``."""
    body = json.dumps({"error": message, "error_human": message})
    return _ERRORS[status](text=body, content_type="application/json")
