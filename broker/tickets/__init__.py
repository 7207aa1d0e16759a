"""The built-in ticket store: tickets of customers, worked by three support levels.

What other parts use::

    store: TicketSystem = app[TICKETS]            # set up by broker.tickets.feature.setup
    info = await store.get(1042)                  # TicketInfo | None; info.view() for the rules
    await store.assign(1042, "bob", actor="bob")  # take an unassigned ticket (sessions)
    await store.change_status(1042, "open", actor="bob")
    await store.add_note(1042, author="secondline", text=..., internal=True,
                         attachments=[NoteAttachment("s-….cast", "application/x-asciicast", b)],
                         idempotency_key="session:s-…")

``app[TICKET_STORE]`` is the same :class:`TicketStore` with everything the REST API needs
(create, list, detail, escalate and hand back, assign with a guard, link, attach).
``app[TICKET_SESSIONS]`` (see ``sessions_hook``) is where the sessions part lists a ticket's
sessions for ``ticket show``.

Modules: ``text`` (what text and attachment names are accepted; pure), ``records`` (the
values handed out), ``queries`` (reads), ``guard`` (conditional updates), ``store`` (the
store), ``notes`` (notes and attachments, ``store.notes``), ``files`` (attachment files),
``access`` (callers, agents and refusals as the rules see them), ``schemas`` (REST models),
``outbox`` (each ended session's note, enqueued and carried to its ticket once; the
attachment downloads are served by ``broker.web.ticket_downloads``), ``help_request``
(``POST /agent/v1/help``), ``sessions_hook``, ``keys`` (app keys), ``feature`` (``setup``).
docs/tickets.md describes the behaviour.

Errors (``errors``): the root is :class:`TicketError`, a :class:`broker.errors.BrokerError`:

TicketError             root
├── TicketInputError    malformed or oversize input (400, 413, 422; 429 for help requests)
├── TicketNotFound      no such ticket, or one the caller may not know of (404)
├── TicketRefused       a permission rule refused; its code and reason (403)
└── TicketConflict      wrong state for the change, or changed meanwhile (409)
"""

from broker.tickets.errors import (
    TicketConflict,
    TicketError,
    TicketInputError,
    TicketNotFound,
    TicketRefused,
)
from broker.tickets.keys import TICKET_STORE, TICKETS
from broker.tickets.records import (
    AttachmentRecord,
    LevelChangeRecord,
    LinkedAgent,
    NewTicket,
    NoteRecord,
    TicketDetail,
    TicketFilter,
    TicketSummary,
)
from broker.tickets.sessions_hook import TICKET_SESSIONS, SessionsOfTicket
from broker.tickets.store import FIRST_TICKET, TicketStore

__all__ = [
    "FIRST_TICKET",
    "TICKETS",
    "TICKET_SESSIONS",
    "TICKET_STORE",
    "AttachmentRecord",
    "LevelChangeRecord",
    "LinkedAgent",
    "NewTicket",
    "NoteRecord",
    "SessionsOfTicket",
    "TicketConflict",
    "TicketDetail",
    "TicketError",
    "TicketFilter",
    "TicketInputError",
    "TicketNotFound",
    "TicketRefused",
    "TicketStore",
    "TicketSummary",
]
