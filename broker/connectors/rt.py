"""Request Tracker 5 through its REST 2 API (``/REST/2.0/``), with an RT auth token.

- Levels are queues: the level map names one queue per level.
- The change feed is RT's transaction table: transactions on tickets with an id above the
  cursor, oldest first, a page at a time. Transaction ids only grow, so nothing depends on
  the RT server's time zone or clock.
- A note is an RT *comment* (internal: requestors are not mailed) with its files attached.
  RT has no idempotency keys, but a comment transaction keeps its subject in ``Data``: the
  subject carries the note's key, and a search for it on the ticket tells whether an earlier
  try arrived (see :meth:`RtSystem.has_note`). Only that one search is made; no history,
  content or attachment is ever downloaded.
- RT answers a read of a merged ticket with the ticket it was merged into, which is how a
  merge is seen.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Final
from urllib.parse import quote

import aiohttp

from broker.connectors.errors import ExternalDown, ExternalRefused, ExternalRejected
from broker.connectors.remote import Changes, Health, RemoteTicket
from broker.connectors.settings import LevelMap
from broker.ports import NoteAttachment

log = logging.getLogger(__name__)

PAGE: Final = 100
# Tickets read per round of the change feed; the rest come in the next round.
PAGES_PER_ROUND: Final = 5
TIMEOUT: Final = 30.0
# RT's statuses (the default lifecycle) as ours; a status of a custom lifecycle is "open".
STATUS_MAP: Final = {
    "new": "new",
    "open": "open",
    "stalled": "pending",
    "resolved": "resolved",
    "rejected": "closed",
    "deleted": "closed",
}
# Ours as RT's: RT's default lifecycle has no "closed" after "resolved".
RT_STATUS: Final = {
    "new": "new",
    "open": "open",
    "pending": "stalled",
    "resolved": "resolved",
    "closed": "resolved",
}
NOBODY: Final = "Nobody"
TX_FIELDS: Final = "ObjectId,Type"


def our_status(rt_status: str) -> str:
    return STATUS_MAP.get(rt_status.lower(), "open")


class RtSystem:
    """One RT server, reached with one token; the aiohttp session is made on first use."""

    def __init__(self, url: str, token: str, levels: LevelMap, *, timeout: float = TIMEOUT) -> None:
        self.web = url.rstrip("/")
        self.api = f"{self.web}/REST/2.0"
        self.levels = levels
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._http: aiohttp.ClientSession | None = None
        self._queue_names: dict[str, str] = {}

    # -- plumbing ---------------------------------------------------------------------------

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                timeout=self._timeout,
                headers={"Authorization": f"token {self._token}", "Accept": "application/json"},
            )
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: object = None,
        missing_ok: bool = False,
    ) -> object:
        """One REST call; its JSON answer (None for a 404 when ``missing_ok``)."""
        data = None if body is None else json.dumps(body).encode()
        headers = {} if body is None else {"Content-Type": "application/json"}
        try:
            async with self._session().request(
                method, self.api + path, params=params, data=data, headers=headers
            ) as resp:
                text = await resp.text(errors="replace")
                status = resp.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ExternalDown(
                f"Request Tracker at {self.web} cannot be reached: {type(exc).__name__}"
            ) from None
        if status in (401, 403):
            raise ExternalRefused(
                f"Request Tracker refused the token ({status}) for {method} {path.split('?')[0]}"
                ": check the token and that its user has the rights listed by `connector test`"
            )
        if status == 404 and missing_ok:
            return None
        if status >= 500:
            raise ExternalDown(f"Request Tracker answered {status} to {method} {path}")
        if status >= 400:
            raise ExternalRejected(
                f"Request Tracker refused {method} {path} ({status}): {_short(text)}"
            )
        try:
            return json.loads(text) if text.strip() else None
        except ValueError:
            raise ExternalRejected(
                f"Request Tracker sent no JSON for {method} {path}: {_short(text)}"
            ) from None

    async def _search_transactions(
        self, conditions: list[dict[str, str]], *, per_page: int, order: str = "ASC"
    ) -> list[Mapping[str, object]]:
        params = {
            "per_page": str(per_page),
            "orderby": "id",
            "order": order,
            "fields": TX_FIELDS,
        }
        answer = await self._call("POST", "/transactions", params=params, body=conditions)
        return _items(answer)

    async def _queue_name(self, queue_id: str) -> str:
        if queue_id not in self._queue_names:
            answer = await self._call("GET", f"/queue/{quote(queue_id)}", missing_ok=True)
            name = _text(answer, "Name") if isinstance(answer, dict) else ""
            self._queue_names[queue_id] = name or f"#{queue_id}"
        return self._queue_names[queue_id]

    # -- the ExternalSystem interface -------------------------------------------------------

    async def check(self) -> Health:
        checks: list[tuple[str, bool]] = []
        try:
            answer = await self._call("GET", "/rt")
            version = _text(answer, "Version") if isinstance(answer, dict) else ""
            checks.append((f"Request Tracker {version or '(version unknown)'} answers", True))
        except ExternalRefused:
            return Health(
                [("the token is refused: create a new one (RT: Logged in as → Settings → "
                  "Auth Tokens) and `connector remove` / `add` with it", False)]
            )  # fmt: skip
        for level in sorted(self.levels.places):
            name = self.levels.place_of(level)
            queue = await self._call("GET", f"/queue/{quote(name, safe='')}", missing_ok=True)
            seen = isinstance(queue, dict) and _text(queue, "Name") == name
            checks.append(
                (
                    f"level {level} is queue {name!r}"
                    if seen
                    else f"queue {name!r} for level {level} is missing or the token's user "
                    "lacks SeeQueue on it: create it or grant SeeQueue, ShowTicket, "
                    "ModifyTicket and CommentOnTicket",
                    seen,
                )
            )
        try:
            await self._search_tickets(self._queue_query(), per_page=1)
            checks.append(("tickets of the level queues can be read (ShowTicket)", True))
        except (ExternalRefused, ExternalRejected) as exc:
            checks.append((f"tickets cannot be read: {exc.message}", False))
        try:
            await self._search_transactions(
                [{"field": "ObjectType", "value": "RT::Ticket"}], per_page=1, order="DESC"
            )
            checks.append(("the ticket history can be read (the change feed)", True))
        except (ExternalRefused, ExternalRejected) as exc:
            checks.append((f"the ticket history cannot be read: {exc.message}", False))
        return Health(checks)

    def _queue_query(self) -> str:
        names = [self.levels.place_of(level) for level in sorted(self.levels.places)]
        return "(" + " OR ".join(f"Queue = '{_sql(n)}'" for n in names) + ")"

    async def _search_tickets(self, query: str, *, per_page: int, page: int = 1) -> object:
        params = {"query": query, "per_page": str(per_page), "page": str(page), "fields": "id"}
        return await self._call("GET", "/tickets", params=params)

    async def start_cursor(self) -> str:
        newest = await self._search_transactions(
            [{"field": "ObjectType", "value": "RT::Ticket"}], per_page=1, order="DESC"
        )
        return str(newest[0].get("id", "0")) if newest else "0"

    async def active_tickets(self) -> Sequence[str]:
        found: list[str] = []
        query = f"{self._queue_query()} AND Status = '__Active__'"
        for page in range(1, 1000):
            answer = await self._search_tickets(query, per_page=PAGE, page=page)
            items = _items(answer)
            found += [str(item.get("id")) for item in items if item.get("id") is not None]
            if len(items) < PAGE:
                break
        return found

    async def changes(self, cursor: str) -> Changes:
        last = int(cursor or "0")
        changed: dict[str, None] = {}
        for _ in range(PAGES_PER_ROUND):
            batch = await self._search_transactions(
                [
                    {"field": "ObjectType", "value": "RT::Ticket"},
                    {"field": "id", "operator": ">", "value": str(last)},
                ],
                per_page=PAGE,
            )
            for tx in batch:
                last = max(last, int(str(tx.get("id", last))))
                object_id = str(tx.get("ObjectId", ""))
                if object_id.isdigit():
                    changed[object_id] = None
            if len(batch) < PAGE:
                break
        return Changes(list(changed), str(last))

    async def ticket(self, external_id: str) -> RemoteTicket | None:
        answer = await self._call("GET", f"/ticket/{quote(external_id)}", missing_ok=True)
        if not isinstance(answer, dict):
            return None
        shown_id = str(answer.get("id", external_id))
        queue = answer.get("Queue")
        queue_id = _text(queue, "id") if isinstance(queue, dict) else ""
        owner = _text(answer.get("Owner"), "id")
        requesters = answer.get("Requestor")
        requester = ""
        if isinstance(requesters, list) and requesters:
            requester = _text(requesters[0], "id")
        fields: dict[str, str] = {}
        custom = answer.get("CustomFields")
        if isinstance(custom, list):
            for cf in custom:
                if isinstance(cf, dict) and isinstance(cf.get("values"), list):
                    fields[str(cf.get("name", ""))] = ", ".join(str(v) for v in cf["values"])
        return RemoteTicket(
            external_id=external_id,
            title=_text(answer, "Subject"),
            place=await self._queue_name(queue_id) if queue_id else "",
            status=our_status(_text(answer, "Status")),
            state=_text(answer, "Status"),
            owner=None if owner in ("", NOBODY) else owner,
            requester=requester,
            url=f"{self.web}/Ticket/Display.html?id={quote(shown_id)}",
            custom_fields=fields,
            merged_into=shown_id if shown_id != external_id else None,
            changed_by=_text(answer.get("LastUpdatedBy"), "id") or None,
        )

    async def has_note(self, external_id: str, key: str) -> bool:
        found = await self._search_transactions(
            [
                {"field": "ObjectType", "value": "RT::Ticket"},
                {"field": "ObjectId", "value": external_id},
                {"field": "Type", "value": "Comment"},
                {"field": "Data", "operator": "LIKE", "value": key},
            ],
            per_page=1,
        )
        return bool(found)

    async def add_note(
        self,
        external_id: str,
        *,
        key: str,
        subject: str,
        text: str,
        attachments: Sequence[NoteAttachment],
    ) -> None:
        body = {
            # RT keeps a comment's subject in the transaction's Data (255 characters).
            "Subject": f"{subject[:180]} [{key}]",
            "Content": text,
            "ContentType": "text/plain",
            "Attachments": [
                {
                    "FileName": item.name,
                    "FileType": item.content_type,
                    "FileContent": base64.b64encode(item.data).decode("ascii"),
                }
                for item in attachments
            ],
        }
        await self._call("POST", f"/ticket/{quote(external_id)}/comment", body=body)

    async def move(self, external_id: str, place: str) -> None:
        await self._call("PUT", f"/ticket/{quote(external_id)}", body={"Queue": place})

    async def assign(self, external_id: str, owner: str) -> None:
        await self._call("PUT", f"/ticket/{quote(external_id)}", body={"Owner": owner})

    def status_for(self, status: str) -> str:
        return RT_STATUS.get(status, "open")

    async def set_status(self, external_id: str, status: str) -> None:
        body = {"Status": self.status_for(status)}
        await self._call("PUT", f"/ticket/{quote(external_id)}", body=body)


def _items(answer: object) -> list[Mapping[str, object]]:
    if not isinstance(answer, dict) or not isinstance(answer.get("items"), list):
        raise ExternalRejected("Request Tracker sent a search answer without items")
    return [item for item in answer["items"] if isinstance(item, dict)]


def _text(obj: object, key: str) -> str:
    if not isinstance(obj, dict):
        return ""
    value = obj.get(key)
    return value if isinstance(value, str) else "" if value is None else str(value)


def _sql(value: str) -> str:
    """A value inside single quotes of TicketSQL."""
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _short(text: str) -> str:
    return ascii(text.strip()[:200])
