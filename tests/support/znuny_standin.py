"""A stand-in for Znuny's GenericInterface REST web service, for the connector tests
(Znuny cannot run on these machines).

It follows Znuny 7.2's documentation of the GenericInterface ticket operations (the POD of
``Kernel/GenericInterface/Operation/Ticket/TicketSearch.pm``, ``TicketGet.pm``,
``TicketUpdate.pm``, ``TicketHistoryGet.pm``, ``Session/SessionCreate.pm``) and the routes
of the sample web service ``development/webservices/GenericTicketConnectorREST.yml``
(``POST /Session``, ``GET /Ticket``, ``GET /Ticket/:TicketID``, ``PATCH /Ticket/:TicketID``,
``GET /TicketHistory/:TicketID``) under ``/otrs/nph-genericinterface.pl/Webservice/
GenericTicketConnectorREST``:

- A failed operation answers HTTP 200 with ``{"Error": {"ErrorCode": "TicketGet.AuthFail",
  "ErrorMessage": "TicketGet: Authorization failing!"}}`` (``Operation::Common::ReturnError``
  returns Success => 1); a route the web service lacks answers 500.
- Authentication: ``SessionID`` from SessionCreate, or ``UserLogin`` and ``Password`` with
  every call. Agents have ``ro`` and ``rw`` per queue: a search shows only tickets of ``ro``
  queues, TicketGet of any other ticket (or of none) is ``TicketGet.AccessDenied``, an
  update needs ``rw``.
- TicketSearch answers ``{"TicketID": [...]}`` or ``{}`` when nothing matches, also for a
  queue name that does not exist (the kernel's search returns nothing for it); it takes
  ``Queues``, ``StateType`` (``Open`` for every open state type), ``TicketNumber``,
  ``TicketLastChangeTimeNewerDate`` (``change_time >=``), ``SortBy`` ``Changed``/``Age``,
  ``OrderBy`` ``Up``/``Down`` and ``Limit`` (default 500).
- TicketUpdate takes ``Ticket`` (Queue, Owner, State, PendingTime) and ``Article`` with
  base64 ``Attachment``s, writes history lines (``Move``, ``OwnerUpdate``, ``StateUpdate``,
  and for the article its ``HistoryType`` with ``HistoryComment`` as the line's name) and
  answers ``{"TicketID": …, "ArticleID": …}``; TicketHistoryGet answers
  ``{"TicketHistory": [{"TicketID": …, "History": [...]}]}``.
- Times are Znuny's ``YYYY-MM-DD HH:MM:SS`` (whole seconds).
- Rate limiting (from a proxy in front of Znuny) and outages come from
  :class:`tests.support.standin_http.StandIn`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from tests.support.standin_http import Handler, StandIn, locked

BASE = "/otrs/nph-genericinterface.pl/Webservice/GenericTicketConnectorREST"
STATE_TYPES = {
    "new": "new",
    "open": "open",
    "pending reminder": "pending reminder",
    "closed successful": "closed",
    "closed unsuccessful": "closed",
    "merged": "merged",
    "removed": "removed",
}
OPEN_TYPES = ("new", "open", "pending reminder", "pending auto")


@dataclass
class Agent:
    id: int
    login: str
    password: str
    ro: set[str]
    rw: set[str]


@dataclass
class Article:
    id: int
    subject: str
    body: str
    visible_for_customer: bool
    attachments: list[tuple[str, str, bytes]] = field(default_factory=list)


@dataclass
class Ticket:
    id: int
    number: str
    title: str
    queue: str
    state: str
    customer_user: str
    customer_id: str
    changed: str
    change_by: int = 1
    owner: str = "root@localhost"
    articles: list[Article] = field(default_factory=list)
    history: list[dict[str, object]] = field(default_factory=list)

    def shown(self) -> dict[str, object]:
        return {
            "TicketID": str(self.id),
            "TicketNumber": self.number,
            "Title": self.title,
            "Queue": self.queue,
            "State": self.state,
            "StateType": STATE_TYPES[self.state],
            "Owner": self.owner,
            "CustomerUserID": self.customer_user,
            "CustomerID": self.customer_id,
            "Changed": self.changed,
            "ChangeBy": str(self.change_by),
            "DynamicField": [{"Name": "Customer", "Value": self.customer_id}],
        }


Operation = Callable[[web.Request, "Agent", dict[str, object]], Awaitable[dict[str, object]]]


class OperationError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(code)
        self.code, self.message = code, message


class ZnunyStandIn(StandIn):
    def __init__(self) -> None:
        super().__init__()
        self.queues = ["Raw", "2nd Level", "3rd Level", "Junk", "Misc"]
        self.agents: dict[str, Agent] = {}
        self.sessions: dict[str, str] = {}
        self.tickets: dict[int, Ticket] = {}
        self._next_article = 1
        self.login, self.password = "secondline", "s3cret:with:colons"
        self.add_agent(self.login, self.password)
        self.add_agent("anna", "anna")
        self.add_agent("bob", "bob")

    @property
    def webservice(self) -> str:
        return self.url + BASE

    # -- the test's side: people working in Znuny -------------------------------------------

    @locked
    def add_agent(self, login: str, password: str, queues: list[str] | None = None) -> Agent:
        names = set(self.queues if queues is None else queues)
        agent = Agent(len(self.agents) + 2, login, password, set(names), set(names))
        self.agents[login] = agent
        return agent

    @staticmethod
    def _now() -> str:
        return f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S}"

    @locked
    def create_ticket(
        self, queue: str, title: str, customer_user: str = "eve@example.com",
        customer_id: str = "acme",
    ) -> str:  # fmt: skip
        ticket_id = len(self.tickets) + 1
        ticket = Ticket(
            id=ticket_id,
            number=f"2026120610{ticket_id:06d}",
            title=title,
            queue=queue,
            state="new",
            customer_user=customer_user,
            customer_id=customer_id,
            changed=self._now(),
        )
        ticket.history.append(self._line("NewTicket", f"%%{ticket.number}%%{queue}", ticket))
        self.tickets[ticket_id] = ticket
        return ticket.number

    @locked
    def by_number(self, number: str) -> Ticket:
        return next(t for t in self.tickets.values() if t.number == number)

    @locked
    def move(self, number: str, queue: str, by: str = "anna") -> None:
        ticket = self.by_number(number)
        old, ticket.queue = ticket.queue, queue
        ticket.changed, ticket.change_by = self._now(), self.agents[by].id
        ticket.history.append(self._line("Move", f"%%{queue}%%%%{old}%%", ticket))

    @locked
    def merge(self, number: str, into: str, by: str = "anna") -> None:
        """Merge the ticket into another, as Znuny's TicketMerge does (state ``merged``, a
        ``Merged`` history line naming both tickets)."""
        ticket, main = self.by_number(number), self.by_number(into)
        ticket.state = "merged"
        ticket.changed, ticket.change_by = self._now(), self.agents[by].id
        name = f"%%{ticket.number}%%{ticket.id}%%{main.number}%%{main.id}"
        ticket.history.append(self._line("Merged", name, ticket))

    @locked
    def add_article(
        self, number: str, subject: str, body: str, files: list[tuple[str, bytes]] | None = None
    ) -> None:
        """An article written in Znuny (a customer's mail)."""
        ticket = self.by_number(number)
        article = Article(self._next_article, subject, body, True)
        article.attachments = [(n, "application/octet-stream", d) for n, d in files or []]
        self._next_article += 1
        ticket.articles.append(article)
        ticket.history.append(self._line("EmailCustomer", "%%", ticket, article.id))

    @locked
    def notes(self, number: str) -> list[Article]:
        """The internal notes on the ticket, oldest first."""
        return [a for a in self.by_number(number).articles if not a.visible_for_customer]

    def _line(self, kind: str, name: str, ticket: Ticket, article_id: int = 0) -> dict[str, object]:
        return {
            "HistoryType": kind,
            "Name": name[:200],
            "CreateTime": self._now(),
            "TicketID": str(ticket.id),
            "ArticleID": str(article_id),
            "Queue": ticket.queue,
        }

    # -- the web service ---------------------------------------------------------------------

    def routes(self, app: web.Application) -> None:
        app.router.add_post(BASE + "/Session", self._session_create)
        app.router.add_get(BASE + "/Ticket", self._op("TicketSearch", self._search))
        app.router.add_get(BASE + "/Ticket/{ids}", self._op("TicketGet", self._get))
        app.router.add_patch(BASE + "/Ticket/{ids}", self._op("TicketUpdate", self._update))
        app.router.add_get(
            BASE + "/TicketHistory/{ids}", self._op("TicketHistoryGet", self._history)
        )

    async def _session_create(self, request: web.Request) -> web.Response:
        data = await request.json()
        agent = self.agents.get(str(data.get("UserLogin")))
        if agent is None or agent.password != data.get("Password"):
            return _error("SessionCreate.AuthFail", "SessionCreate: Authorization failing!")
        session_id = secrets.token_hex(16)
        self.sessions[session_id] = agent.login
        return web.json_response({"SessionID": session_id})

    def _op(self, name: str, run: Operation) -> Handler:
        async def handle(request: web.Request) -> web.Response:
            if request.method == "GET":
                data: dict[str, object] = {
                    k: (request.query.getall(k) if len(request.query.getall(k)) > 1 else v)
                    for k, v in request.query.items()
                }
            else:
                data = await request.json()
            agent = self._auth(data)
            if agent is None:
                return _error(f"{name}.AuthFail", f"{name}: Authorization failing!")
            try:
                result = await run(request, agent, data)
            except OperationError as exc:
                return _error(exc.code, exc.message)
            return web.json_response(result)

        return handle

    def _auth(self, data: dict[str, object]) -> Agent | None:
        if "SessionID" in data:
            login = self.sessions.get(str(data["SessionID"]))
            return None if login is None else self.agents[login]
        agent = self.agents.get(str(data.get("UserLogin")))
        return agent if agent is not None and agent.password == data.get("Password") else None

    def _ticket(self, raw: str, agent: Agent, right: str, op: str) -> Ticket:
        ticket = self.tickets.get(int(raw)) if raw.isdigit() else None
        allowed = agent.rw if right == "rw" else agent.ro
        if ticket is None or ticket.queue not in allowed:
            raise OperationError(
                f"{op}.AccessDenied", f"{op}: User does not have access to the ticket {raw}!"
            )
        return ticket

    async def _search(
        self, request: web.Request, agent: Agent, data: dict[str, object]
    ) -> dict[str, object]:
        found = [t for t in self.tickets.values() if t.queue in agent.ro]
        queues = _list(data.get("Queues"))
        if queues:
            if any(q not in self.queues for q in queues):
                return {}
            found = [t for t in found if t.queue in queues]
        state_types = _list(data.get("StateType"))
        if state_types == ["Open"]:
            state_types = list(OPEN_TYPES)
        if state_types:
            found = [t for t in found if STATE_TYPES[t.state] in state_types]
        numbers = _list(data.get("TicketNumber"))
        if numbers:
            found = [t for t in found if t.number in numbers]
        newer = data.get("TicketLastChangeTimeNewerDate")
        if isinstance(newer, str):
            found = [t for t in found if t.changed >= newer]
        if data.get("SortBy") == "Changed":
            found.sort(key=lambda t: (t.changed, t.id))
        else:
            found.sort(key=lambda t: t.id)
        if data.get("OrderBy", "Down") == "Down":
            found.reverse()
        limit = int(str(data.get("Limit", "500")))
        ids = [str(t.id) for t in found[:limit]]
        return {"TicketID": ids} if ids else {}

    async def _get(
        self, request: web.Request, agent: Agent, data: dict[str, object]
    ) -> dict[str, object]:
        tickets = [
            self._ticket(raw, agent, "ro", "TicketGet")
            for raw in request.match_info["ids"].split(",")
        ]
        shown = []
        for ticket in tickets:
            item = ticket.shown()
            if data.get("DynamicFields") != "1":
                del item["DynamicField"]
            if data.get("AllArticles") == "1":
                item["Article"] = [
                    {"ArticleID": a.id, "Subject": a.subject, "Body": a.body}
                    for a in ticket.articles
                ]
            shown.append(item)
        return {"Ticket": shown}

    async def _history(
        self, request: web.Request, agent: Agent, data: dict[str, object]
    ) -> dict[str, object]:
        ticket = self._ticket(request.match_info["ids"], agent, "ro", "TicketHistoryGet")
        return {"TicketHistory": [{"TicketID": str(ticket.id), "History": ticket.history}]}

    async def _update(
        self, request: web.Request, agent: Agent, data: dict[str, object]
    ) -> dict[str, object]:
        ticket = self._ticket(request.match_info["ids"], agent, "rw", "TicketUpdate")
        changes = data.get("Ticket") or {}
        article = data.get("Article")
        if not isinstance(changes, dict) or not (article is None or isinstance(article, dict)):
            raise OperationError("TicketUpdate.InvalidParameter", "TicketUpdate: bad structure!")
        queue = changes.get("Queue", ticket.queue)
        if queue not in self.queues:
            raise OperationError(
                "TicketUpdate.InvalidParameter", "TicketUpdate: Ticket->Queue is invalid!"
            )
        owner = changes.get("Owner", ticket.owner)
        if owner != ticket.owner and owner not in self.agents:
            raise OperationError(
                "TicketUpdate.InvalidParameter", "TicketUpdate: Ticket->Owner is invalid!"
            )
        state = changes.get("State", ticket.state)
        if state not in STATE_TYPES:
            raise OperationError(
                "TicketUpdate.InvalidParameter", "TicketUpdate: Ticket->State is invalid!"
            )
        if state.startswith("pending") and not changes.get("PendingTime"):
            raise OperationError(
                "TicketUpdate.InvalidParameter", "TicketUpdate: Ticket->PendingTime is needed!"
            )
        new_article = None
        if article is not None:
            for needed in ("Subject", "Body"):
                if not article.get(needed):
                    raise OperationError(
                        "TicketUpdate.MissingParameter",
                        f"TicketUpdate: Article->{needed} parameter is missing!",
                    )
            if not article.get("ContentType") and not article.get("MimeType"):
                raise OperationError(
                    "TicketUpdate.MissingParameter",
                    "TicketUpdate: Article->ContentType or MimeType is missing!",
                )
            new_article = Article(
                self._next_article,
                str(article["Subject"]),
                str(article["Body"]),
                bool(article.get("IsVisibleForCustomer", 0)),
            )
            files = article.get("Attachment") or []
            for item in files if isinstance(files, list) else [files]:
                try:
                    content = base64.b64decode(item["Content"], validate=True)
                except (KeyError, TypeError, binascii.Error):
                    raise OperationError(
                        "TicketUpdate.InvalidParameter",
                        "TicketUpdate: Attachment->Content is invalid!",
                    ) from None
                new_article.attachments.append(
                    (str(item.get("Filename")), str(item.get("ContentType")), content)
                )
        if queue != ticket.queue:
            old, ticket.queue = ticket.queue, queue
            ticket.history.append(self._line("Move", f"%%{queue}%%%%{old}%%", ticket))
        if owner != ticket.owner:
            ticket.owner = owner
            ticket.history.append(self._line("OwnerUpdate", f"%%{owner}%%", ticket))
        if state != ticket.state:
            old, ticket.state = ticket.state, state
            ticket.history.append(self._line("StateUpdate", f"%%{old}%%{state}%%", ticket))
        answer: dict[str, object] = {"TicketID": str(ticket.id)}
        if new_article is not None and article is not None:
            self._next_article += 1
            ticket.articles.append(new_article)
            kind = str(article.get("HistoryType") or "AddNote")
            name = str(article.get("HistoryComment") or "%%")
            ticket.history.append(self._line(kind, name, ticket, new_article.id))
            answer["ArticleID"] = str(new_article.id)
        ticket.changed, ticket.change_by = self._now(), agent.id
        return answer


def _list(value: object) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _error(code: str, message: str) -> web.Response:
    return web.json_response({"Error": {"ErrorCode": code, "ErrorMessage": message}})
