"""``GET /files/sessions/{id}/transcript.{format}``: a transcript as a file, for the console's
player and for browsers (the REST API answers JSON only); ``GET
/files/sessions/{id}/files/{n}``: the content of file ``n`` an SFTP session kept with its
transcript (``kept=n`` in its marker; docs/transcripts.md), which `transcript export` fetches.

Authenticated like the API (bearer token or console session, ``read`` scope) and judged by
the same rule as ``GET /api/v1/sessions/{id}``; every download is audited. The answer is a
download (``Content-Disposition: attachment``, ``nosniff``, a sandboxing CSP), so a
transcript's bytes can never run as a page on the broker's origin.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import Final

from aiohttp import web

from broker.audit import audit_target
from broker.errors import ForbiddenError, InputError, NotFoundError
from broker.services import SERVICES
from broker.sessions.errors import SessionNotFound
from broker.sessions.reads import CONTENT_TYPES, readable_session, transcript, transcript_format
from broker.transcript import TranscriptNotFound
from broker.transcript.kept_files import kept_dir
from broker.web.auth import authenticate

DOWNLOAD_PATH: Final = "/files/sessions/{id}/transcript.{format}"
KEPT_PATH: Final = "/files/sessions/{id}/files/{number}"
_NUMBER: Final = re.compile(r"[1-9][0-9]{0,8}")


def download_url(session_id: str, fmt: str) -> str:
    """The path a transcript downloads from (session ids are URL-safe by construction)."""
    return f"/files/sessions/{session_id}/transcript.{fmt}"


async def _readable(request: web.Request, details: dict[str, object]) -> tuple[str, str]:
    """The session id the caller may read (``read`` scope, the session rule; a refusal
    audited), and the caller's name."""
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
            details={"code": "scope_missing", **details},
        )
        raise ForbiddenError(
            "this needs the 'read' scope; use a token or sign-in that has it",
            code="scope_missing",
        )
    row = await readable_session(
        request.app,
        services,
        principal,
        request.match_info["id"],
        action="transcript.read",
        source=source,
    )
    return row.id, principal.name


def _attachment(body: bytes, content_type: str, name: str) -> web.Response:
    return web.Response(
        body=body,
        headers={
            "Content-Type": content_type,
            "Content-Disposition": f'attachment; filename="{name}"',
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
        },
    )


async def download_transcript(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    fmt = transcript_format(request.match_info["format"])
    session_id, actor = await _readable(request, {"via": "download"})
    try:
        # The player and browsers get asciicast v2; `transcript export` gets the stored
        # file, which verifies.
        files = await transcript(services, session_id, fmt, playable=True)
    except TranscriptNotFound as exc:
        raise SessionNotFound(exc.message) from None
    await services.audit.record(
        actor=actor,
        action="transcript.read",
        target=session_id,
        source=request.remote or "",
        details={"format": fmt, "via": "download"},
    )
    return _attachment(files.content, CONTENT_TYPES[fmt], files.name)


async def download_kept_file(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    number = request.match_info["number"]
    if _NUMBER.fullmatch(number) is None:
        raise InputError(
            "a kept file is named by its number (kept=N in the transcript's file marker)",
            code="bad_file_number",
        )
    session_id, actor = await _readable(request, {"via": "download", "kept": number})
    try:
        # From the shared store when another node recorded the session.
        async with services.transcripts.opened(session_id) as root:
            path = kept_dir(root / f"{session_id}.cast") / number
            body = await asyncio.to_thread(_read_regular, path)
    except FileNotFoundError:
        raise NotFoundError(
            f"session {session_id} kept no file {number}: only files up to "
            "sftp_keep_file_bytes are kept, larger ones have their SHA-256 only",
            code="kept_file_not_found",
        ) from None
    await services.audit.record(
        actor=actor,
        action="transcript.read",
        target=session_id,
        source=request.remote or "",
        details={"kept": number, "via": "download"},
    )
    return _attachment(body, "application/octet-stream", f"{session_id}.file-{number}")


def _read_regular(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise FileNotFoundError(str(path)) from exc
    with os.fdopen(fd, "rb") as fh:
        return fh.read()
