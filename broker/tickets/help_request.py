"""``POST /agent/v1/help``: an end user asks for help through their agent.

The request is signed by the agent (docs/protocol.md, "Agent request to the broker outside
the tunnel"); ``broker.agents.verify_agent_request`` checks the signature and the agent
(enrolled, not revoked) and audits its refusals. The answer is a new level-1 ticket
of the agent's customer, linked to that agent, with the machine's facts in its description.
Each agent may open :data:`HELP_LIMIT` tickets per :data:`HELP_WINDOW`; more are refused
with 429, counted from the tickets themselves, so the limit holds across restarts and nodes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Final

from aiohttp import web

from agent.errors import MessageError
from agent.signing import HelpAnswer, HelpRequest
from broker.agents.signed_requests import verify_agent_request
from broker.rules import sanitize_display_text
from broker.services import SERVICES
from broker.tickets import text
from broker.tickets.errors import TicketInputError
from broker.tickets.records import NewTicket
from broker.tickets.store import TicketStore

HELP_PATH: Final = "/agent/v1/help"
HELP_LIMIT: Final = 5
HELP_WINDOW: Final = dt.timedelta(hours=1)
_FACT_KEYS: Final = ("hostname", "os", "os_version", "kernel", "arch")
_FACT_MAX: Final = 256
_USERS_MAX: Final = 64


def facts_text(facts: Mapping[str, object]) -> str:
    """The machine's facts as lines of text, each value cleaned and capped."""
    lines = []
    for key in _FACT_KEYS:
        value = facts.get(key)
        if isinstance(value, str | int) and str(value).strip():
            lines.append(f"{key}: {sanitize_display_text(str(value), _FACT_MAX)}")
    users = facts.get("users")
    if isinstance(users, list):
        shown = [sanitize_display_text(str(u), 32) for u in users[:_USERS_MAX]]
        named = [u for u in shown if u.strip()]
        if named:  # a fact nobody filled in tells level 1 nothing: leave the line out
            lines.append("users: " + ", ".join(named))
    return "\n".join(lines)


def help_ticket(agent_name: str, request_text: str, facts: Mapping[str, object]) -> tuple[str, str]:
    """The title and description of the ticket for a help request."""
    said = text.clean_text(request_text, "help text", text.DESCRIPTION_MAX, required=True)
    first_line = said.splitlines()[0]
    title = sanitize_display_text(f"Help request from {agent_name}: {first_line}", text.TITLE_MAX)
    machine = facts_text(facts)
    description = f"{said}\n\n--- machine {agent_name} ---\n{machine}".rstrip()
    return title, description


async def handle_help(request: web.Request, store: TicketStore) -> web.Response:
    services = request.app[SERVICES]
    agent = await verify_agent_request(request, services)
    try:
        asked = HelpRequest.parse(await request.read())
    except MessageError as exc:
        raise TicketInputError(str(exc), code="bad_help_request") from None
    now = services.clock()
    if await store.help_requests_since(agent.id, now - HELP_WINDOW) >= HELP_LIMIT:
        await services.audit.record(
            actor=agent.id,
            action="ticket.help_request",
            target=agent.name,
            outcome="denied",
            source=request.remote or "",
            details={"code": "rate_limited", "limit": HELP_LIMIT},
        )
        raise TicketInputError(
            f"this machine asked for help {HELP_LIMIT} times in the last hour; your helpdesk "
            "has those requests. Wait a while, or call your helpdesk",
            code="rate_limited",
            status=429,
        )
    title, description = help_ticket(agent.name, asked.text, agent.facts)
    info = await store.create(
        NewTicket(
            title=title,
            customer=agent.customer,
            description=description,
            requester=f"end user on {agent.name}",
            level=1,
            agents=(agent.view(),),
            created_by=None,
            origin_agent_id=agent.id,
        ),
        actor=agent.id,
        source=request.remote or "",
    )
    return web.Response(
        body=HelpAnswer(info.ref).serialize(), status=200, content_type="application/json"
    )
