"""``GET /files/tickets/{id}/attachments/{name}``: an attachment as a download.

Outside ``/api/v1`` because the API's routes answer JSON only; the caller is authenticated
the same way (bearer token or console session, ``read`` scope) and judged by the same rule
as ``GET /api/v1/tickets/{id}``. The answer is always ``application/octet-stream`` with
``Content-Disposition: attachment``, ``nosniff`` and a sandboxing CSP, so a browser saves an
uploaded page or script instead of running it on the broker's origin.
"""

from __future__ import annotations

from aiohttp import web

from broker.audit import audit_target
from broker.errors import ForbiddenError
from broker.services import SERVICES
from broker.tickets.access import Desk
from broker.tickets.errors import TicketInputError
from broker.tickets.keys import TICKET_STORE
from broker.tickets.text import content_disposition
from broker.web.auth import authenticate


async def download(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    principal = await authenticate(request, services, public=False)
    if "read" not in principal.scopes:
        await services.audit.record(
            actor=principal.name,
            action="ticket.download",
            target=audit_target(request.match_info["id"]),
            outcome="denied",
            source=request.remote or "",
            details={"code": "scope_missing"},
        )
        raise ForbiddenError(
            "this needs the 'read' scope; use a token or sign-in that has it",
            code="scope_missing",
        )
    desk = Desk(request.app[TICKET_STORE], services, principal, request.remote or "")
    info = await desk.ticket(request.match_info["id"], "ticket.download")
    name = request.match_info["name"]
    found = await desk.store.attachment(info.id, name)
    if found is None:
        raise TicketInputError(
            f"ticket {info.ref} has no attachment {name[:100]!r}; see `secondline ticket show`",
            code="no_attachment",
            status=404,
        )
    record, data = found
    return web.Response(
        body=data,
        content_type="application/octet-stream",
        headers={
            "Content-Disposition": content_disposition(record.name),
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
            "X-Secondline-Sha256": record.sha256,
        },
    )
