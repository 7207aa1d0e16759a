"""Who may read what of a session, and the transcript files as they are handed out.

A session id grants nothing by itself: every read, kill, attach and download checks the
caller's rights on the session's ticket (``may_view_ticket``: an active account that
serves the ticket's customer). A session the caller may not read answers exactly like one
that does not exist.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Final, Literal

from aiohttp import web

from broker.auth.principal import Principal
from broker.db.models_sessions import RemoteSession
from broker.errors import InputError
from broker.rules import InvalidName, Refused, StaffView, may_view_ticket, parse_session_id
from broker.services import Services
from broker.sessions import store
from broker.sessions.errors import SessionNotFound
from broker.sessions.runtime import ticket_system
from broker.transcript import (
    TranscriptNotFound,
    export_bundle,
    export_text,
    playable_cast,
    transcript_paths,
)

Format = Literal["cast", "txt", "json"]
FORMATS: Final[tuple[Format, ...]] = ("cast", "txt", "json")
CONTENT_TYPES: Final = {
    "cast": "application/x-asciicast",
    "txt": "text/plain; charset=utf-8",
    "json": "application/json",
}


def transcript_format(text: str) -> Format:
    """``cast``, ``txt`` or ``json``; anything else is refused."""
    for fmt in FORMATS:
        if text == fmt:
            return fmt
    raise InputError("the transcript format is cast, txt or json", code="bad_format")


def staff_view(principal: Principal) -> StaffView:
    """The caller as the rules see it (a signed-in principal is an active account)."""
    role = principal.role
    if role is None:
        raise SessionNotFound("sign in first")
    return StaffView(name=principal.name, role=role, disabled=False, customers=principal.customers)


def _missing(session_id: str) -> SessionNotFound:
    shown = session_id if len(session_id) <= 40 else session_id[:40] + "..."
    return SessionNotFound(
        f"there is no session {ascii(shown)[1:-1]}; see `secondline session list`"
    )


async def readable_session(
    app: web.Application,
    services: Services,
    principal: Principal,
    session_id: str,
    *,
    action: str,
    source: str,
) -> RemoteSession:
    """The session row, when the caller may read its ticket; else SessionNotFound (audited)."""
    try:
        parse_session_id(session_id)
    except InvalidName:
        raise _missing(session_id) from None
    async with services.db() as db:
        row = await store.get_session(db, session_id)
    if row is None:
        raise _missing(session_id)
    staff = staff_view(principal)
    tickets = ticket_system(app)
    ticket = await tickets.get(row.ticket_id) if tickets is not None else None
    if ticket is not None:
        allowed = not isinstance(may_view_ticket(staff, ticket.view()), Refused)
    else:
        allowed = staff.serves(row.customer)
    if not allowed:
        await services.audit.record(
            actor=principal.name,
            action=action,
            target=session_id,
            outcome="denied",
            source=source,
            details={"reason": "customer_scope"},
        )
        raise _missing(session_id)
    return row


@dataclass(frozen=True)
class TranscriptFiles:
    """What a transcript read hands out."""

    name: str
    content: bytes
    seal: dict[str, object] | None
    chain: str | None


def read_transcript(
    root: Path, session_id: str, fmt: Format, max_bytes: int, *, playable: bool = False
) -> TranscriptFiles:
    """The transcript in ``fmt`` with its seal and chain file (blocking: run in a thread).
    ``playable``: a ``cast`` as asciicast v2 for players (a format 2 file converted), not
    the stored file that verifies (docs/transcripts.md, "Format versions")."""
    paths = transcript_paths(root, session_id)
    if not paths.cast.is_file():
        raise TranscriptNotFound(f"session {session_id} has no transcript")
    if paths.cast.stat().st_size > max_bytes:
        raise TranscriptNotFound(
            f"the transcript of {session_id} is larger than this broker hands out at once; "
            "export it on the broker host with --data-dir"
        )
    if fmt == "cast" and playable:
        converted = playable_cast(paths.cast, max_bytes)
        if converted is None:
            raise TranscriptNotFound(
                f"the transcript of {session_id} is larger than this broker hands out at once "
                "for playing; export it with `secondline transcript export`"
            )
        content = converted
    elif fmt == "cast":
        content = paths.cast.read_bytes()
    else:
        fd, tmp = tempfile.mkstemp(prefix="secondline-export-")
        os.close(fd)
        try:
            if fmt == "txt":
                export_text(paths.cast, Path(tmp))
            else:
                export_bundle(paths.cast, Path(tmp), paths.seal)
            content = Path(tmp).read_bytes()
        finally:
            os.unlink(tmp)
    seal: dict[str, object] | None = None
    try:
        raw = json.loads(paths.seal.read_bytes())
        if isinstance(raw, dict) and raw.get("pending") is not True:
            seal = raw
    except (OSError, ValueError):
        seal = None
    try:
        chain: str | None = paths.chain.read_text("ascii")
    except (OSError, UnicodeDecodeError):
        chain = None
    return TranscriptFiles(f"{session_id}.{fmt}", content, seal, chain)


async def transcript(
    services: Services, session_id: str, fmt: Format, *, playable: bool = False
) -> TranscriptFiles:
    # From the shared store when the session was recorded on another node.
    async with services.transcripts.opened(session_id) as root:
        return await asyncio.to_thread(
            partial(read_transcript, playable=playable),
            root,
            session_id,
            fmt,
            TRANSCRIPT_READ_MAX,
        )


# Reads go through memory; bigger transcripts are exported on the broker host.
TRANSCRIPT_READ_MAX: Final = 256 << 20
