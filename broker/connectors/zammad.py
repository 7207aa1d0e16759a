"""Zammad through its REST API (``/api/v1/``), with a user access token
(``Authorization: Token token=…``).

- Levels are groups: the level map names one group per level.
- Staff know a ticket by its *number* (``Ticket#31001`` is ``ZM-31001``); the API wants the
  ticket's id. Every ticket read teaches the connector its number and id; a number it has
  not seen yet is looked up with a search for ``number:N``.
- Zammad has no change feed: the search (its search index) is asked for the tickets with
  ``updated_at`` at or after the cursor, oldest first, page by page. The cursor is the newest
  ``updated_at`` read, never later than the server's own ``Date`` less
  :data:`INDEX_LAG`, so a change the search index had not taken in yet is read next round.
  Only Zammad's own timestamps are compared; our clock plays no part.
- A note is an *internal* article of type ``note`` with its files attached (base64). Zammad
  has no idempotency keys: the article's subject carries the note's key, and the ticket's
  article list (``ticket_articles/by_ticket``) tells whether an earlier try arrived. That
  list holds each article's text and its attachments' names, never their content: no
  attachment is ever downloaded.
- Zammad has no "resolved": ours is ``closed`` there.
- A merge (``Ticket#merge_to`` in Zammad's ``app/models/ticket.rb``) gives the merged ticket
  the state ``merged`` and one link, of type ``parent``, from the ticket it was merged into
  (the merged ticket's other links move to that ticket). So for a ticket in state
  ``merged`` the connector reads its links (``GET /links``: a handful of rows, whatever the
  ticket's size) and takes the parent ticket's number from the answer's assets: the mirror
  is closed and its notes go there. A parent the token's user cannot see is left out by
  Zammad; then the ticket is only closed.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Final
from urllib.parse import quote

from broker.connectors.errors import ExternalDown, ExternalRefused, ExternalRejected
from broker.connectors.http import Answer, JsonHttp, short, text_of
from broker.connectors.remote import Changes, Health, RemoteTicket
from broker.connectors.settings import LevelMap
from broker.ports import NoteAttachment

PAGE: Final = 100
# Pages of the change feed read per round; the rest come in the next round.
PAGES_PER_ROUND: Final = 5
# How far behind the server's clock the cursor stays: the search index takes in a change
# a moment after it was made.
INDEX_LAG: Final = dt.timedelta(seconds=30)
START: Final = "1970-01-01T00:00:00.000Z"
STATUS_MAP: Final = {
    "new": "new",
    "open": "open",
    "pending reminder": "pending",
    "pending close": "pending",
    "closed": "closed",
    "merged": "closed",
    "removed": "closed",
}
ZAMMAD_STATE: Final = {
    "new": "new",
    "open": "open",
    "pending": "pending reminder",
    "resolved": "closed",
    "closed": "closed",
}
ACTIVE_STATES: Final = ("new", "open", "pending reminder", "pending close")
# A pending state needs a reminder time; Secondline sets one a day ahead.
PENDING_FOR: Final = dt.timedelta(days=1)
NOBODY: Final = ("", "-")


def our_status(state: str) -> str:
    return STATUS_MAP.get(state.lower(), "open")


def zammad_time(when: dt.datetime) -> str:
    """Zammad's own timestamp format (UTC, milliseconds), which sorts as text."""
    when = when.astimezone(dt.UTC)
    return f"{when:%Y-%m-%dT%H:%M:%S}.{when.microsecond // 1000:03d}Z"


def _quoted(value: str) -> str:
    """A phrase of the search's query syntax."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ZammadSystem:
    """One Zammad, reached with one access token."""

    def __init__(self, url: str, token: str, levels: LevelMap) -> None:
        self.web = url.rstrip("/")
        self.api = f"{self.web}/api/v1"
        self.levels = levels
        self.http = JsonHttp(f"Zammad at {self.web}", {"Authorization": f"Token token={token}"})
        self._ids: dict[str, str] = {}  # ticket number -> ticket id
        self._server_now: dt.datetime | None = None

    async def close(self) -> None:
        await self.http.close()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: object = None,
        gone: tuple[int, ...] = (),
    ) -> object:
        """One REST call; its JSON answer (None when the status is one of ``gone``)."""
        what = f"{method} {path}"
        answer = await self.http.request(
            method, self.api + path, what=what, params=params, body=body
        )
        if answer.date is not None:
            self._server_now = answer.date
        status = answer.status
        if status in gone:
            return None
        if status == 401:
            raise ExternalRefused(
                f"Zammad refused the token (401) for {what}: check the token and that its "
                "user has the rights listed by `connector test`"
            )
        if status == 403:
            raise ExternalRefused(
                f"Zammad refused {what} (403: {_error(answer)}): the token needs the "
                "permission ticket.agent and its user full access to the level groups"
            )
        if status >= 500:
            raise ExternalDown(f"Zammad answered {status} to {what}")
        if status >= 400:
            raise ExternalRejected(f"Zammad refused {what} ({status}): {_error(answer)}")
        try:
            return answer.json()
        except ValueError:
            raise ExternalRejected(
                f"Zammad sent no JSON for {what}: {short(answer.text)}"
            ) from None

    async def _search(
        self, query: str, *, per_page: int, page: int = 1, order: str = "asc"
    ) -> list[Mapping[str, object]]:
        params = {
            "query": query,
            "page": str(page),
            "per_page": str(per_page),
            "sort_by": "updated_at",
            "order_by": order,
            "expand": "true",
        }
        answer = await self._call("GET", "/tickets/search", params=params)
        if not isinstance(answer, list):
            raise ExternalRejected("Zammad sent a search answer that is not a list of tickets")
        found: list[Mapping[str, object]] = [t for t in answer if isinstance(t, dict)]
        for ticket in found:
            self._learn(ticket)
        return found

    def _learn(self, ticket: Mapping[str, object]) -> str:
        number, ticket_id = text_of(ticket, "number"), text_of(ticket, "id")
        if number and ticket_id:
            self._ids[number] = ticket_id
        return number

    async def _id_of(self, number: str) -> str | None:
        if number not in self._ids:
            await self._search(f"number:{_quoted(number)}", per_page=1)
        return self._ids.get(number)

    def _groups_query(self) -> str:
        names = [self.levels.place_of(level) for level in sorted(self.levels.places)]
        return "(" + " OR ".join(f"group.name:{_quoted(n)}" for n in names) + ")"

    # -- the ExternalSystem interface -------------------------------------------------------

    async def check(self) -> Health:
        checks: list[tuple[str, bool]] = []
        try:
            me = await self._call("GET", "/users/me", params={"expand": "true"})
        except ExternalRefused:
            return Health(
                [("the token is refused: create a new one (Zammad: Avatar → Profile → Token "
                  "Access, permission ticket.agent) and `connector remove` / `add` with it",
                  False)]
            )  # fmt: skip
        login = text_of(me, "login")
        checks.append((f"Zammad answers; the token is {login!r}'s", True))
        groups = me.get("groups") if isinstance(me, dict) else None
        for level in sorted(self.levels.places):
            name = self.levels.place_of(level)
            access = groups.get(name) if isinstance(groups, dict) else None
            rights = set(access) if isinstance(access, list) else set()
            seen = "full" in rights or {"read", "create", "change"} <= rights
            checks.append(
                (
                    f"level {level} is group {name!r}"
                    if seen
                    else f"group {name!r} for level {level} is missing or {login!r} lacks "
                    "access to it: create it, or grant full access (Admin → Users → "
                    f"{login} → Group permissions)",
                    seen,
                )
            )
        try:
            await self._search(self._groups_query(), per_page=1)
            checks.append(("tickets of the level groups can be searched (ticket.agent)", True))
        except (ExternalRefused, ExternalRejected) as exc:
            checks.append((f"tickets cannot be searched: {exc.message}", False))
        return Health(checks)

    async def start_cursor(self) -> str:
        await self._call("GET", "/users/me")
        if self._server_now is None:
            return START
        return zammad_time(self._server_now - INDEX_LAG)

    async def active_tickets(self) -> Sequence[str]:
        states = " OR ".join(_quoted(s) for s in ACTIVE_STATES)
        query = f"{self._groups_query()} AND state.name:({states})"
        found: list[str] = []
        for page in range(1, 1000):
            items = await self._search(query, per_page=PAGE, page=page)
            found += [n for n in (self._learn(t) for t in items) if n]
            if len(items) < PAGE:
                break
        return list(dict.fromkeys(found))

    async def changes(self, cursor: str) -> Changes:
        start = cursor or START
        newest = start
        changed: dict[str, None] = {}
        query = f"updated_at:[{_quoted(start)} TO *]"
        for page in range(1, PAGES_PER_ROUND + 1):
            items = await self._search(query, per_page=PAGE, page=page)
            for ticket in items:
                number = self._learn(ticket)
                if number:
                    changed[number] = None
                newest = max(newest, text_of(ticket, "updated_at"))
            if len(items) < PAGE:
                break
        if self._server_now is not None:
            newest = min(newest, zammad_time(self._server_now - INDEX_LAG))
        return Changes(list(changed), max(newest, start))

    async def ticket(self, external_id: str) -> RemoteTicket | None:
        ticket_id = await self._id_of(external_id)
        if ticket_id is None:
            return None
        # 404: deleted; 403: moved where the token's user cannot see it. Both are gone.
        answer = await self._call(
            "GET", f"/tickets/{quote(ticket_id)}", params={"expand": "true"}, gone=(403, 404)
        )
        if not isinstance(answer, dict):
            return None
        self._learn(answer)
        state = text_of(answer, "state")
        owner = text_of(answer, "owner")
        merged_into = await self._merged_into(ticket_id) if state == "merged" else None
        fields = {k: v for k, v in answer.items() if isinstance(v, str)}
        # A connector of all customers: the organization names ours, unless an attribute
        # named like the customer field does.
        fields.setdefault("Customer", text_of(answer, "organization"))
        return RemoteTicket(
            external_id=external_id,
            title=text_of(answer, "title"),
            place=text_of(answer, "group"),
            status=our_status(state),
            state=state,
            owner=None if owner in NOBODY else owner,
            requester=text_of(answer, "customer"),
            url=f"{self.web}/#ticket/zoom/{quote(ticket_id)}",
            custom_fields=fields,
            merged_into=merged_into,
            changed_by=text_of(answer, "updated_by") or None,
        )

    async def _merged_into(self, ticket_id: str) -> str | None:
        """The number of the ticket this merged one went into: its ``parent`` link."""
        params = {"link_object": "Ticket", "link_object_value": ticket_id}
        answer = await self._call("GET", "/links", params=params)
        links = answer.get("links") if isinstance(answer, dict) else None
        assets = answer.get("assets") if isinstance(answer, dict) else None
        tickets = assets.get("Ticket") if isinstance(assets, dict) else None
        if not isinstance(links, list) or not isinstance(tickets, dict):
            return None
        for link in links:
            if text_of(link, "link_type") != "parent" or text_of(link, "link_object") != "Ticket":
                continue
            parent = tickets.get(text_of(link, "link_object_value"))
            number = self._learn(parent) if isinstance(parent, dict) else ""
            if number.isdigit():
                return number
        return None

    async def _existing_id(self, external_id: str) -> str:
        ticket_id = await self._id_of(external_id)
        if ticket_id is None:
            raise ExternalRejected(f"Zammad has no ticket number {external_id} (any more)")
        return ticket_id

    async def has_note(self, external_id: str, key: str) -> bool:
        ticket_id = await self._existing_id(external_id)
        articles = await self._call("GET", f"/ticket_articles/by_ticket/{quote(ticket_id)}")
        if not isinstance(articles, list):
            raise ExternalRejected("Zammad sent an article list that is not a list")
        return any(key in text_of(article, "subject") for article in articles)

    async def add_note(
        self,
        external_id: str,
        *,
        key: str,
        subject: str,
        text: str,
        attachments: Sequence[NoteAttachment],
    ) -> None:
        ticket_id = await self._existing_id(external_id)
        body = {
            "ticket_id": int(ticket_id) if ticket_id.isdigit() else ticket_id,
            "subject": f"{subject[:180]} [{key}]",
            "body": text,
            "content_type": "text/plain",
            "type": "note",
            "internal": True,
            "attachments": [
                {
                    "filename": item.name,
                    "data": base64.b64encode(item.data).decode("ascii"),
                    "mime-type": item.content_type,
                }
                for item in attachments
            ],
        }
        await self._call("POST", "/ticket_articles", body=body)

    async def _update(self, external_id: str, body: Mapping[str, object]) -> None:
        ticket_id = await self._existing_id(external_id)
        await self._call("PUT", f"/tickets/{quote(ticket_id)}", body=dict(body))

    async def move(self, external_id: str, place: str) -> None:
        await self._update(external_id, {"group": place})

    async def assign(self, external_id: str, owner: str) -> None:
        await self._update(external_id, {"owner": owner})

    def status_for(self, status: str) -> str:
        return ZAMMAD_STATE.get(status, "open")

    async def set_status(self, external_id: str, status: str) -> None:
        body: dict[str, object] = {"state": self.status_for(status)}
        if status == "pending":
            now = self._server_now or dt.datetime.now(dt.UTC)
            body["pending_time"] = zammad_time(now + PENDING_FOR)
        await self._update(external_id, body)


def _error(answer: Answer) -> str:
    """Zammad's error body ``{"error": …, "error_human": …}`` as a short message."""
    try:
        data = answer.json()
    except ValueError:
        return short(answer.text)
    message = text_of(data, "error_human") or text_of(data, "error")
    return short(message) if message else short(answer.text)
