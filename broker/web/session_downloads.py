"""``GET /files/sessions/{id}/transcript.{format}``: a transcript as a file, for the console's
player and for browsers (the REST API answers JSON only).

Authenticated like the API (bearer token or console session, ``read`` scope) and judged by
the same rule as ``GET /api/v1/sessions/{id}``; every download is audited. The answer is a
download (``Content-Disposition: attachment``, ``nosniff``, a sandboxing CSP), so a
transcript's bytes can never run as a page on the broker's origin.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from broker.audit import audit_target
from broker.errors import ForbiddenError
from broker.services import SERVICES
from broker.sessions.errors import SessionNotFound
from broker.sessions.reads import CONTENT_TYPES, readable_session, transcript, transcript_format
from broker.transcript import TranscriptNotFound
from broker.web.auth import authenticate

DOWNLOAD_PATH: Final = "/files/sessions/{id}/transcript.{format}"


def download_url(session_id: str, fmt: str) -> str:
    """The path a transcript downloads from (session ids are URL-safe by construction)."""
    return f"/files/sessions/{session_id}/transcript.{fmt}"


async def download_transcript(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    principal = await authenticate(request, services, public=False)
    source = request.remote or ""
    if "read" not in principal.scopes:
        await services.audit.record(
            actor=principal.name,
            action="transcript.read",
            target=audit_target(request.match_info["id"]),
            outcome="denied",
            source=source,
            details={"code": "scope_missing", "via": "download"},
        )
        raise ForbiddenError(
            "this needs the 'read' scope; use a token or sign-in that has it",
            code="scope_missing",
        )
    fmt = transcript_format(request.match_info["format"])
    row = await readable_session(
        request.app,
        services,
        principal,
        request.match_info["id"],
        action="transcript.read",
        source=source,
    )
    try:
        files = await transcript(services, row.id, fmt)
    except TranscriptNotFound as exc:
        raise SessionNotFound(exc.message) from None
    await services.audit.record(
        actor=principal.name,
        action="transcript.read",
        target=row.id,
        source=source,
        details={"format": fmt, "via": "download"},
    )
    return web.Response(
        body=files.content,
        headers={
            "Content-Type": CONTENT_TYPES[fmt],
            "Content-Disposition": f'attachment; filename="{files.name}"',
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
        },
    )
