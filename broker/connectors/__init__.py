"""Ticket-system connectors: an external helpdesk system as the source of truth, mirrored
into the built-in store so the session rules work on its tickets unchanged.

Modules: ``settings`` (what an admin configures; pure), ``errors``, ``remote`` (the
interface each kind implements, and its values), one module per kind: ``rt`` (Request
Tracker 5, REST 2), ``zammad`` (Zammad's REST API), ``znuny`` (Znuny's GenericInterface
REST web service), with ``http`` (the HTTP plumbing those two share: errors, 429 and
Retry-After); ``store`` (connectors in the database), ``mirror`` (external tickets into
ours), ``sync`` (the change-feed task), ``tickets`` (the ``TicketSystem`` that writes back),
``refs`` (``RT-1234`` as an SSH user name), ``feature`` (``setup``), ``keys`` (app keys).
docs/connectors.md describes the behaviour.
"""
