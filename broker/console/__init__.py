"""The web console: server-rendered pages for helpdesk staff, in German and English.

Modules (pure decisions first, then the aiohttp layer):

- ``web_session``: cookie secrets, session validity, CSRF token comparison, redirects (pure);
- ``language``: the page language from the account and Accept-Language (pure);
- ``i18n``, ``render``: gettext catalogues compiled from .po at start-up, Jinja2 rendering,
  the Content-Security-Policy and other page headers;
- ``session_store``: console sessions in the database (``console_sessions``);
- ``auth``: the cookie, CSRF and same-origin checks; the REST API's ``WEB_AUTH`` hook;
- ``live``: open event streams and terminals per session, closed when the session ends;
- ``api_calls``: pages read and write through the REST API's own handlers, which
  ``create_app`` hands to ``setup`` (the console never imports ``broker.api``);
- ``kb_view``: the knowledge-base pages' buttons, edit form and search form (pure);
- ``pages``, ``login``, ``pages_tickets``, ``pages_sessions``, ``pages_admin``, ``pages_kb``,
  ``pages_kb_edit``, ``events``;
- ``feature``: ``setup(app, api=...)``, the broker feature.

One-time codes (TOTP) are ``broker.auth.totp``: the SSH gateway checks them too.

Errors (``errors``):

ConsoleError            root, a BrokerError
├── SignInRequired      no valid console session (401)
├── CsrfRefused         a state change without the session's CSRF token (403)
└── OriginRefused       a browser request from another origin (403)

For other features (the terminal WebSocket): ``console_user(request)`` gives the signed-in
person or None, and ``request.app[CONSOLE].live.hold(user, close=...)`` closes a connection
within seconds of the session ending (see ``live``).
"""

from broker.console.auth import console_user, same_origin
from broker.console.errors import ConsoleError, CsrfRefused, OriginRefused, SignInRequired
from broker.console.live import LiveConnections
from broker.console.session_store import ConsoleUser
from broker.console.state import CONSOLE, ConsoleState

__all__ = [
    "CONSOLE",
    "ConsoleError",
    "ConsoleState",
    "ConsoleUser",
    "CsrfRefused",
    "LiveConnections",
    "OriginRefused",
    "SignInRequired",
    "console_user",
    "same_origin",
]
