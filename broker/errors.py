"""Errors of the broker.

BrokerError                 root; ``code`` is stable snake_case, ``http_status`` the API status
├── ConfigError             a config file or variable is wrong (names the key)
├── SetupError              init/serve cannot prepare the data dir
├── InputError              a caller sent something malformed or out of range (400/413/422)
├── AuthError               no or bad credentials (401)
├── ForbiddenError          credentials fine, action not allowed (403)
├── NotFoundError           the named object does not exist, or the caller may not know it (404)
├── ConflictError           the object exists already or is in the wrong state (409)
└── UnavailableError        a store the action needs is down (503)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiohttp import web


class BrokerError(Exception):
    """Root of every error the broker raises on purpose."""

    code: str = "error"
    http_status: int = 500

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class ConfigError(BrokerError):
    code = "config_invalid"
    http_status = 500


class SetupError(BrokerError):
    code = "setup_failed"
    http_status = 500


class InputError(BrokerError):
    code = "invalid_input"
    http_status = 400

    def __init__(self, message: str, *, code: str | None = None, status: int = 400) -> None:
        super().__init__(message, code=code)
        self.http_status = status


class AuthError(BrokerError):
    code = "unauthenticated"
    http_status = 401


class ForbiddenError(BrokerError):
    code = "forbidden"
    http_status = 403


class NotFoundError(BrokerError):
    code = "not_found"
    http_status = 404


class ConflictError(BrokerError):
    code = "conflict"
    http_status = 409


class UnavailableError(BrokerError):
    code = "unavailable"
    http_status = 503


def error_response(status: int, code: str, message: str) -> web.Response:
    """The one JSON shape of every refusal the broker answers over HTTP, from the API's
    middleware and from the endpoints outside it (agent tunnel, downloads). aiohttp is
    imported here, not at the top: every CLI command imports this module and most never
    answer HTTP."""
    from aiohttp import web

    return web.json_response({"error": {"code": code, "message": message}}, status=status)
