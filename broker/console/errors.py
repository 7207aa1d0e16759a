"""Errors of the web console.

ConsoleError            root, a BrokerError; ``code`` stable snake_case, ``http_status`` the answer
├── SignInRequired      no valid console session (401; pages redirect to the sign-in form)
├── CsrfRefused         a state-changing request without the session's CSRF token (403)
└── OriginRefused       a browser request from another origin (403)

Refusals are audited where they are raised; the message says what to do and never carries
request data back to the browser.
"""

from __future__ import annotations

from broker.errors import BrokerError


class ConsoleError(BrokerError):
    """Root of every error the console raises on purpose."""

    code = "console_error"
    http_status = 400


class SignInRequired(ConsoleError):
    code = "sign_in_required"
    http_status = 401


class CsrfRefused(ConsoleError):
    code = "csrf_failed"
    http_status = 403


class OriginRefused(ConsoleError):
    code = "origin_refused"
    http_status = 403
