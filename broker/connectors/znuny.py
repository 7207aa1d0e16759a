"""Znuny (and OTRS 6) through its GenericInterface REST web service, as the sample
``GenericTicketConnectorREST`` configures it: ``POST /Session`` (SessionCreate),
``GET /Ticket`` (TicketSearch), ``GET /Ticket/:TicketID`` (TicketGet),
``PATCH /Ticket/:TicketID`` (TicketUpdate) and ``GET /TicketHistory/:TicketID``
(TicketHistoryGet). The connector's URL is the web service's base
(``…/nph-genericinterface.pl/Webservice/GenericTicketConnectorREST``).

- The credential is an agent's ``LOGIN:PASSWORD``; the connector logs in once with
  SessionCreate and sends the session id with every call, logging in again when Znuny no
  longer knows it.
- Znuny answers an operation's failure with HTTP 200 and ``{"Error": {"ErrorCode": …,
  "ErrorMessage": …}}``: ``….AuthFail`` is a refused login, ``….AccessDenied`` a missing
  right (for a ticket read: the ticket is gone or out of sight), anything else a rejected
  request.
- Levels are queues. Staff know a ticket by its number (``ZN-2026120610000017``); calls
  want its TicketID, learnt from every ticket read or looked up by TicketSearch.
- The change feed is TicketSearch for tickets whose last change is at or after the cursor,
  oldest first; the cursor is the newest ``Changed`` read, Znuny's own timestamp, so our
  clock and Znuny's time zone play no part.
- A note is an internal note (TicketUpdate with an Article not visible to the customer)
  with its files attached; its history comment carries the note's key, and the ticket's
  history (TicketHistoryGet, one line per change, no article text) tells whether an
  earlier try arrived. No article or attachment is ever read.
- A merged ticket names the ticket it was merged into in its ``Merged`` history line: the
  mirror is closed and its notes go there.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Final
from urllib.parse import quote

from broker.connectors.errors import ExternalDown, ExternalRefused, ExternalRejected
from broker.connectors.http import JsonHttp, short, text_of
from broker.connectors.remote import Changes, Health, RemoteTicket
from broker.connectors.settings import LevelMap
from broker.ports import NoteAttachment

PAGE: Final = 100
# The open tickets of the level queues read at the first import, at most.
ACTIVE_LIMIT: Final = 10_000
START: Final = "1970-01-01 00:00:00"
STATUS_MAP: Final = {
    "new": "new",
    "open": "open",
    "pending reminder": "pending",
    "pending auto": "pending",
    "closed": "closed",
    "removed": "closed",
    "merged": "closed",
}
# Ours as Znuny's default states.
ZNUNY_STATE: Final = {
    "new": "new",
    "open": "open",
    "pending": "pending reminder",
    "resolved": "closed successful",
    "closed": "closed successful",
}
PENDING_MINUTES: Final = 24 * 60
NOBODY: Final = ("", "root@localhost")
HISTORY_MAX: Final = 200  # Znuny keeps a history line's name in 200 characters


def our_status(state_type: str) -> str:
    return STATUS_MAP.get(state_type.lower(), "open")


class ZnunyAccessDenied(ExternalRefused):
    """An operation's ``….AccessDenied``: the agent lacks a right on that ticket."""


class ZnunyNoTicket(ExternalRejected):
    """An operation's ``….NotValidTicketID``: there is no such ticket."""


class ZnunySystem:
    """One Znuny web service, reached as one agent."""

    def __init__(self, url: str, credential: str, levels: LevelMap) -> None:
        self.base = url.rstrip("/")
        head, sep, _ = self.base.partition("/nph-genericinterface.pl")
        self.web = head if sep else self.base
        self.levels = levels
        login, _, password = credential.partition(":")
        self._login = login
        self._password = password
        self.http = JsonHttp(f"Znuny at {self.web}", {})
        self._session_id: str | None = None
        self._ids: dict[str, str] = {}  # ticket number -> TicketID

    async def close(self) -> None:
        await self.http.close()

    # -- plumbing ---------------------------------------------------------------------------

    async def _send(
        self, method: str, path: str, operation: str, data: Mapping[str, object]
    ) -> Mapping[str, object]:
        """One operation; its answer's data, or a raised connector error."""
        params: list[tuple[str, str]] | None = None
        body: object = None
        if method == "GET":
            params = []
            for key, value in data.items():
                values = value if isinstance(value, list | tuple) else [value]
                params += [(key, str(v)) for v in values]
        else:
            body = dict(data)
        answer = await self.http.request(
            method, self.base + path, what=operation, params=params, body=body
        )
        if answer.status in (401, 403):
            raise ExternalRefused(f"Znuny's web server refused {operation} ({answer.status})")
        if answer.status >= 500:
            # The REST transport answers 500 also for a route the web service lacks.
            raise ExternalDown(
                f"Znuny answered {answer.status} to {operation}: {short(answer.text)}"
            )
        if answer.status >= 400:
            raise ExternalRejected(
                f"Znuny refused {operation} ({answer.status}): {short(answer.text)}"
            )
        try:
            result = answer.json()
        except ValueError:
            raise ExternalRejected(
                f"Znuny sent no JSON for {operation}: {short(answer.text)}"
            ) from None
        if not isinstance(result, dict):
            raise ExternalRejected(f"Znuny sent an answer to {operation} that is no object")
        error = result.get("Error")
        if isinstance(error, dict):
            code = text_of(error, "ErrorCode")
            message = f"{short(code)}: {short(text_of(error, 'ErrorMessage'))}"
            if code.endswith(".AuthFail"):
                raise ExternalRefused(f"Znuny refused the login for {operation} ({message})")
            if code.endswith(".AccessDenied"):
                raise ZnunyAccessDenied(f"Znuny denied {operation} ({message})")
            if code.endswith(".NotValidTicketID"):
                raise ZnunyNoTicket(f"Znuny has no such ticket ({message})")
            raise ExternalRejected(f"Znuny refused {operation} ({message})")
        return result

    async def _login_session(self) -> str:
        try:
            answer = await self._send(
                "POST",
                "/Session",
                "SessionCreate",
                {"UserLogin": self._login, "Password": self._password},
            )
        except ExternalRefused:
            raise ExternalRefused(
                f"Znuny refused the login of agent {self._login[:64]!r}: check the "
                "credential file (LOGIN:PASSWORD) and that the agent is valid"
            ) from None
        session_id = text_of(answer, "SessionID")
        if not session_id:
            raise ExternalRejected("Znuny's SessionCreate answered without a SessionID")
        self._session_id = session_id
        return session_id

    async def _op(
        self, method: str, path: str, operation: str, data: Mapping[str, object]
    ) -> Mapping[str, object]:
        """An operation with the session; a session Znuny forgot is made again, once."""
        fresh = self._session_id is None
        session_id = self._session_id or await self._login_session()
        try:
            return await self._send(method, path, operation, {"SessionID": session_id, **data})
        except ZnunyAccessDenied:
            raise
        except ExternalRefused:
            if fresh:
                raise
        self._session_id = None
        session_id = await self._login_session()
        return await self._send(method, path, operation, {"SessionID": session_id, **data})

    async def _search(self, **criteria: object) -> list[str]:
        answer = await self._op("GET", "/Ticket", "TicketSearch", criteria)
        ids = answer.get("TicketID", [])
        if isinstance(ids, str | int):
            ids = [ids]
        if not isinstance(ids, list):
            raise ExternalRejected("Znuny sent a TicketSearch answer without a TicketID list")
        return [str(i) for i in ids]

    async def _get(self, ticket_ids: Sequence[str]) -> list[Mapping[str, object]]:
        """TicketGet of several tickets at once, with their dynamic fields and no article."""
        path = "/Ticket/" + quote(",".join(ticket_ids), safe=",")
        answer = await self._op("GET", path, "TicketGet", {"DynamicFields": "1"})
        tickets = answer.get("Ticket", [])
        if isinstance(tickets, dict):
            tickets = [tickets]
        if not isinstance(tickets, list):
            raise ExternalRejected("Znuny sent a TicketGet answer without tickets")
        found: list[Mapping[str, object]] = [t for t in tickets if isinstance(t, dict)]
        for ticket in found:
            self._learn(ticket)
        return found

    def _learn(self, ticket: Mapping[str, object]) -> str:
        number, ticket_id = text_of(ticket, "TicketNumber"), text_of(ticket, "TicketID")
        if number and ticket_id:
            self._ids[number] = ticket_id
        return number

    async def _id_of(self, number: str) -> str | None:
        if number not in self._ids:
            for ticket_id in await self._search(TicketNumber=number, Limit="1"):
                self._ids[number] = ticket_id
        return self._ids.get(number)

    async def _existing_id(self, external_id: str) -> str:
        ticket_id = await self._id_of(external_id)
        if ticket_id is None:
            raise ExternalRejected(f"Znuny has no ticket number {external_id} (any more)")
        return ticket_id

    def _queues(self) -> list[str]:
        return [self.levels.place_of(level) for level in sorted(self.levels.places)]

    # -- the ExternalSystem interface -------------------------------------------------------

    async def check(self) -> Health:
        checks: list[tuple[str, bool]] = []
        try:
            self._session_id = None
            await self._login_session()
        except ExternalRefused as exc:
            return Health([(exc.message, False)])
        checks.append((f"Znuny answers; agent {self._login[:64]!r} logs in", True))
        sample: str | None = None
        for level in sorted(self.levels.places):
            name = self.levels.place_of(level)
            found = await self._search(Queues=[name], Limit="1")
            sample = sample or (found[0] if found else None)
            # Znuny answers a search of a queue that does not exist as one of an empty
            # queue: only a ticket found proves the name.
            checks.append(
                (
                    f"level {level} is queue {name!r}"
                    if found
                    else f"level {level} is queue {name!r} (no ticket there yet that agent "
                    f"{self._login[:64]!r} may read; Znuny cannot tell an empty queue from "
                    "a missing one: check the name and the agent's ro and rw rights on it)",
                    True,
                )
            )
        if sample is None:
            checks.append(("no ticket in the level queues yet: reading one is checked then", True))
            return Health(checks)
        try:
            tickets = await self._get([sample])
            checks.append((f"ticket {text_of(tickets[0], 'TicketNumber')} can be read", True))
        except ExternalRefused as exc:
            checks.append((f"tickets cannot be read: {exc.message}", False))
        try:
            await self._op("GET", f"/TicketHistory/{quote(sample)}", "TicketHistoryGet", {})
            checks.append(("the ticket history can be read (TicketHistoryGet)", True))
        except (ExternalDown, ExternalRejected, ExternalRefused) as exc:
            checks.append(
                (
                    f"the ticket history cannot be read ({exc.message}): the web service "
                    "needs the operation TicketHistoryGet at GET /TicketHistory/:TicketID",
                    False,
                )
            )
        return Health(checks)

    async def start_cursor(self) -> str:
        newest = await self._search(SortBy="Changed", OrderBy="Down", Limit="1")
        if not newest:
            return START
        tickets = await self._get(newest[:1])
        return text_of(tickets[0], "Changed") if tickets else START

    async def active_tickets(self) -> Sequence[str]:
        ids = await self._search(
            Queues=self._queues(), StateType="Open", SortBy="Age", OrderBy="Up",
            Limit=str(ACTIVE_LIMIT),
        )  # fmt: skip
        numbers: list[str] = []
        for start in range(0, len(ids), PAGE):
            numbers += [self._learn(t) for t in await self._get(ids[start : start + PAGE])]
        return [n for n in numbers if n]

    async def changes(self, cursor: str) -> Changes:
        start = cursor or START
        ids = await self._search(
            TicketLastChangeTimeNewerDate=start, SortBy="Changed", OrderBy="Up",
            Limit=str(PAGE),
        )  # fmt: skip
        if not ids:
            return Changes([], start)
        newest = start
        numbers: list[str] = []
        for ticket in await self._get(ids):
            number = self._learn(ticket)
            if number:
                numbers.append(number)
            newest = max(newest, text_of(ticket, "Changed"))
        return Changes(numbers, newest)

    async def ticket(self, external_id: str) -> RemoteTicket | None:
        ticket_id = await self._id_of(external_id)
        if ticket_id is None:
            return None
        try:
            tickets = await self._get([ticket_id])
        except (ZnunyAccessDenied, ZnunyNoTicket):
            return None  # deleted, or where the agent may no longer read it
        if not tickets:
            return None
        answer = tickets[0]
        fields: dict[str, str] = {}
        dynamic = answer.get("DynamicField")
        if isinstance(dynamic, list):
            for item in dynamic:
                if isinstance(item, dict) and isinstance(item.get("Value"), str | int):
                    fields[text_of(item, "Name")] = text_of(item, "Value")
        fields.setdefault("Customer", text_of(answer, "CustomerID"))
        merged_into = None
        if text_of(answer, "StateType") == "merged":
            merged_into = await self._merged_into(ticket_id)
        owner = text_of(answer, "Owner")
        changed_by = text_of(answer, "ChangeBy")
        return RemoteTicket(
            external_id=external_id,
            title=text_of(answer, "Title"),
            place=text_of(answer, "Queue"),
            status=our_status(text_of(answer, "StateType")),
            state=text_of(answer, "State"),
            owner=None if owner in NOBODY else owner,
            requester=text_of(answer, "CustomerUserID"),
            url=f"{self.web}/index.pl?Action=AgentTicketZoom;TicketID={quote(ticket_id)}",
            custom_fields=fields,
            merged_into=merged_into,
            # TicketGet names the last changer by user id only.
            changed_by=f"agent #{changed_by}" if changed_by else None,
        )

    async def _history(self, ticket_id: str) -> list[Mapping[str, object]]:
        """The ticket's history lines, oldest first (TicketHistoryGet)."""
        answer = await self._op("GET", f"/TicketHistory/{quote(ticket_id)}", "TicketHistoryGet", {})
        histories = answer.get("TicketHistory")
        if not isinstance(histories, list):
            raise ExternalRejected("Znuny sent a TicketHistoryGet answer without a history")
        lines: list[Mapping[str, object]] = []
        for entry in histories:
            found = entry.get("History") if isinstance(entry, dict) else None
            if isinstance(found, list):
                lines += [line for line in found if isinstance(line, dict)]
        return lines

    async def _merged_into(self, ticket_id: str) -> str | None:
        """The number of the ticket this one was merged into, from its ``Merged`` history
        line (``%%MergedNumber%%MergedID%%MainNumber%%MainID``, Znuny 6 and later)."""
        for line in reversed(await self._history(ticket_id)):
            if text_of(line, "HistoryType") != "Merged":
                continue
            parts = text_of(line, "Name").split("%%")
            if len(parts) >= 5 and parts[3].isdigit() and parts[4].isdigit():
                self._ids[parts[3]] = parts[4]
                return parts[3]
        return None

    async def has_note(self, external_id: str, key: str) -> bool:
        ticket_id = await self._existing_id(external_id)
        return any(key in text_of(line, "Name") for line in await self._history(ticket_id))

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
        article = {
            "CommunicationChannel": "Internal",
            "IsVisibleForCustomer": 0,
            "SenderType": "agent",
            "Subject": f"{subject[:180]} [{key}]",
            "Body": text,
            "ContentType": "text/plain; charset=utf8",
            "HistoryType": "AddNote",
            # The key in the history line is what has_note finds.
            "HistoryComment": f"[{key}]"[:HISTORY_MAX],
            "NoAgentNotify": 1,
            "Attachment": [
                {
                    "Content": base64.b64encode(item.data).decode("ascii"),
                    "ContentType": item.content_type,
                    "Filename": item.name,
                }
                for item in attachments
            ],
        }
        await self._update(ticket_id, {"Article": article})

    async def _update(self, ticket_id: str, data: Mapping[str, object]) -> None:
        answer = await self._op("PATCH", f"/Ticket/{quote(ticket_id)}", "TicketUpdate", data)
        if not text_of(answer, "TicketID"):
            raise ExternalRejected("Znuny's TicketUpdate answered without the TicketID")

    async def move(self, external_id: str, place: str) -> None:
        await self._update(await self._existing_id(external_id), {"Ticket": {"Queue": place}})

    async def assign(self, external_id: str, owner: str) -> None:
        await self._update(await self._existing_id(external_id), {"Ticket": {"Owner": owner}})

    def status_for(self, status: str) -> str:
        return ZNUNY_STATE.get(status, "open")

    async def set_status(self, external_id: str, status: str) -> None:
        ticket: dict[str, object] = {"State": self.status_for(status)}
        if status == "pending":
            ticket["PendingTime"] = {"Diff": PENDING_MINUTES}
        await self._update(await self._existing_id(external_id), {"Ticket": ticket})
