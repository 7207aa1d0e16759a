"""The web edge: HTTP and WebSocket endpoints outside the REST API (``broker.api``) and the
console's pages (``broker.console``), each a thin adapter over a domain package.

A package of its own rather than a part of ``broker.console``: the downloads serve the CLI
and scripts as well as browsers, and the terminal WebSocket is the browser's way into a
session hub, so they depend on the sessions and tickets packages, which the console's pages
reach only through the API's handlers. Keeping them here leaves the console free of them.

Modules: ``terminal_ws`` (``GET /console/ws/terminal``), ``terminal_tickets`` (the one-time
tickets, pure), ``terminals`` (app state), ``session_downloads``
(``/files/sessions/{id}/transcript.{format}``), ``ticket_downloads``
(``/files/tickets/{id}/attachments/{name}``), ``feature`` (``setup``).
"""
