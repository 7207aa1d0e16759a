"""The signed webhook connector, for every ticket system without a connector of its own.

Outbound, Secondline POSTs events (``webhook_events``) to the connector's URL, each signed
with the shared secret (``webhook_signing``). Inbound, the system POSTs ticket changes to
``/webhooks/<connector>`` (``webhook_inbound``), signed the same way. There is no change
feed to read and nothing to read back: the mirror follows what the system sends, and a
change made in Secondline is an event for the system to apply.

A receiver answers 2xx when it took the event, or 409 when it had that event id already
(both count as delivered); 401/403 refuse the signature (the connector turns unhealthy and
the event is tried again later); 5xx or no answer is "down" (tried again later); any other
4xx refuses the event itself (it is marked refused and audited, never retried).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Final

import aiohttp

from broker.connectors.errors import ExternalDown, ExternalRefused, ExternalRejected
from broker.connectors.remote import Changes, Health, RemoteTicket
from broker.connectors.settings import LevelMap
from broker.connectors.webhook_signing import HEADER, sign
from broker.ports import NoteAttachment

TIMEOUT: Final = 30.0
PING: Final = "ping"
EVENT_ID_HEADER: Final = "Secondline-Event-Id"
EVENT_TYPE_HEADER: Final = "Secondline-Event-Type"
USER_AGENT: Final = "Secondline-Webhook/1"


class WebhookSystem:
    """One receiver URL and its shared secret; the aiohttp session is made on first use."""

    def __init__(
        self,
        url: str,
        secret: str,
        levels: LevelMap,
        *,
        timeout: float = TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        # The receiver maps its own structure: the levels are only what inbound events name.
        self.levels = levels
        self._secret = secret
        self._clock = clock
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._http: aiohttp.ClientSession | None = None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                timeout=self._timeout, headers={"User-Agent": USER_AGENT}
            )
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def send_event(self, event_id: str, body: str) -> None:
        """POST one event, signed afresh for this try; raises as the module says."""
        data = body.encode()
        event_type = str(json.loads(body).get("type", ""))
        headers = {
            "Content-Type": "application/json",
            HEADER: sign(self._secret, int(self._clock()), data),
            EVENT_ID_HEADER: event_id,
            EVENT_TYPE_HEADER: event_type,
        }
        try:
            async with self._session().post(self.url, data=data, headers=headers) as resp:
                status = resp.status
                text = await resp.text(errors="replace")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ExternalDown(
                f"the webhook receiver at {self.url} cannot be reached: {type(exc).__name__}"
            ) from None
        if 200 <= status < 300 or status == 409:
            return
        if status in (401, 403):
            raise ExternalRefused(
                f"the webhook receiver refused the signature of {event_type} ({status}): "
                "check that it holds the same secret as the connector's credential file"
            )
        if status >= 500 or status == 429:
            raise ExternalDown(f"the webhook receiver answered {status} to {event_type}")
        raise ExternalRejected(
            f"the webhook receiver refused {event_type} {event_id} ({status}): "
            f"{text.strip()[:200]!a}"
        )

    # -- the ExternalSystem interface -------------------------------------------------------

    async def check(self) -> Health:
        """A signed ``ping`` event: the receiver must verify it and answer 2xx."""
        event_id = f"{PING}-{secrets.token_hex(8)}"
        body = json.dumps(
            {"id": event_id, "type": PING, "data": {}},
            separators=(",", ":"),
        )
        try:
            await self.send_event(event_id, body)
        except ExternalRefused as exc:
            return Health([(exc.message, False)])
        except ExternalRejected as exc:
            return Health([(f"the receiver does not take a signed ping: {exc.message}", False)])
        return Health([(f"the receiver at {self.url} verified a signed ping", True)])

    async def start_cursor(self) -> str:
        return "0"

    async def active_tickets(self) -> Sequence[str]:
        return ()  # the system sends its tickets (webhook_inbound); there is nothing to read

    async def changes(self, cursor: str) -> Changes:
        return Changes((), cursor)

    async def ticket(self, external_id: str) -> RemoteTicket | None:
        raise ExternalRejected("a webhook receiver cannot be read; it sends its tickets")

    async def has_note(self, external_id: str, key: str) -> bool:
        return False  # notes go as session.ended events, deduplicated by their id

    async def add_note(
        self,
        external_id: str,
        *,
        key: str,
        subject: str,
        text: str,
        attachments: Sequence[NoteAttachment],
    ) -> None:
        raise ExternalRejected("a webhook connector gets notes as session.ended events")

    async def move(self, external_id: str, place: str) -> None:
        raise ExternalRejected("a webhook connector gets moves as ticket.escalated events")

    async def assign(self, external_id: str, owner: str) -> None:
        raise ExternalRejected("a webhook connector gets assignments as ticket.assigned events")

    def status_for(self, status: str) -> str:
        return status

    async def set_status(self, external_id: str, status: str) -> None:
        raise ExternalRejected("a webhook connector gets status changes as events")
