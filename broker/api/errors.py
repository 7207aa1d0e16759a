"""One middleware maps every error to the stable JSON shape {"error": {"code", "message"}}."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from broker.errors import BrokerError, error_response

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


def _wants_json(request: web.Request) -> bool:
    # /files/ downloads are called by the CLI and scripts as well as by browsers: their
    # refusals carry the same machine-readable shape as the API's.
    return request.path.startswith(("/api/", "/agent/", "/files/"))


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except BrokerError as exc:
        if not _wants_json(request):
            return web.Response(status=exc.http_status, text=exc.message)
        return error_response(exc.http_status, exc.code, exc.message)
    except web.HTTPException as exc:
        if not _wants_json(request) or exc.status < 400:
            raise
        message = exc.text or exc.reason
        if exc.status == 413:
            limit = request.app._client_max_size
            message = (
                f"the request body is larger than the broker takes ({limit} bytes, "
                f"{limit / 1048576:g} MiB); send less (attachments have their own limit)"
            )
        elif exc.status == 404:
            message = f"there is no API route {request.method} {request.path}"
        elif exc.status == 405:
            message = f"{request.method} is not allowed on {request.path}"
        return error_response(exc.status, _HTTP_CODES.get(exc.status, "http_error"), message)
