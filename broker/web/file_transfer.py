"""``POST /files/sessions/{id}/upload?path=…`` and ``POST /files/sessions/{id}/download?path=…``:
the console terminal page's transfer panel (docs/console.md, "Files").

A transfer is made from the page of a live session ``{id}`` the caller takes part in, and
runs as a **file session of its own** (kind ``sftp``) on the same ticket and machine: a
shell's channel to the agent is a PTY, and a file needs the agent's SFTP subsystem, so the
transfer gets the channel, the admission (level, rights, consent on attended machines,
``max_sessions_per_staff``), the limits, the recording and the note that an ``sftp`` through
the gateway gets, from the same code (:class:`~broker.web.console_sftp.SftpTerminal` is its
owner terminal in the hub).

Both are POST, authenticated like the API: a console sign-in must send the page's
``X-CSRF-Token`` from the broker's own origin (``broker.console.auth``), a bearer token
the ``session`` scope. Every input is checked before anything opens (the path, the declared
size against ``sftp_max_upload_bytes``; a download's size against
``sftp_max_download_bytes`` before its first byte is read), and every refusal is audited
(``console.file_refused``). Nothing holds a whole file: the upload is read from the request
in :data:`~broker.web.console_sftp.CHUNK` pieces as the agent takes them, the download is
written to the response as it arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import posixpath
import unicodedata
from collections import deque
from typing import Final

from aiohttp import web

from broker.errors import InputError
from broker.rules import SshTarget
from broker.services import SERVICES
from broker.sessions import store
from broker.sessions.admission import OpenRequest
from broker.sessions.cross_node import open_anywhere
from broker.sessions.errors import SessionNotFound
from broker.sessions.runtime import SESSIONS
from broker.sessions.store import LIVE_STATES
from broker.web.auth import authenticate
from broker.web.console_sftp import (
    CHUNK,
    FXF_CREAT,
    FXF_READ,
    FXF_TRUNC,
    FXF_WRITE,
    IN_FLIGHT,
    SftpTerminal,
    TransferError,
)

log = logging.getLogger(__name__)

UPLOAD_PATH: Final = "/files/sessions/{id}/upload"
DOWNLOAD_PATH: Final = "/files/sessions/{id}/download"
MAX_PATH_BYTES: Final = 1024
# How long a transfer that has sent its last request waits for the file session to end
# (the agent's sftp-server exits on end of input): a bound, not a pace.
END_WAIT: Final = 30.0
SIZE_HEADER: Final = "X-Secondline-Size"
SESSION_HEADER: Final = "X-Secondline-Session"


def check_path(raw: str) -> str | None:
    """Why a path on the machine is refused, or None: it is not empty, at most
    MAX_PATH_BYTES in UTF-8, and holds no control character (C0, DEL, C1) or character a
    terminal or a log could take for one (line and paragraph separators). ``..`` and
    relative paths are the login account's business, as for ``sftp`` (docs/sessions.md)."""
    if not raw:
        return "give the path of the file on the machine"
    if len(raw.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        return f"the path is longer than {MAX_PATH_BYTES} bytes; use a shorter one"
    for char in raw:
        if unicodedata.category(char) in ("Cc", "Zl", "Zp", "Cs"):
            return (
                f"the path holds the control character U+{ord(char):04X}; "
                "give it without control characters"
            )
    if raw.endswith("/"):
        return "the path names a directory; give the path of a file"
    return None


def _file_name(path: str) -> str:
    """A download's suggested name: the path's last part, in plain ASCII letters."""
    base = posixpath.basename(path) or "download"
    return "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in base)[:100]


async def _refuse(
    request: web.Request, actor: str, code: str, message: str, status: int, path: str
) -> InputError:
    """Audit a refused transfer; the error to raise (its sentence says what to do)."""
    runtime = request.app[SESSIONS]
    await runtime.manager.audit(
        actor,
        "console.file_refused",
        request.match_info["id"][:40],
        outcome="denied",
        source=request.remote or "",
        details={
            "code": code,
            "path": ascii(path)[:200],
            "direction": request.path.rsplit("/", 1)[-1],
        },
    )
    return InputError(message, code=code, status=status)


async def _start(request: web.Request, direction: str) -> tuple[str, str, SftpTerminal]:
    """Authenticate, check the path, open the file session: (caller, path, its terminal)."""
    services = request.app[SERVICES]
    runtime = request.app[SESSIONS]
    principal = await authenticate(request, services, public=False)
    path = request.query.get("path", "")
    if "session" not in principal.scopes:
        raise await _refuse(
            request,
            principal.name,
            "scope_missing",
            "file transfers need the 'session' scope; use a token or sign-in that has it",
            403,
            path,
        )
    why = check_path(path)
    if why is not None:
        raise await _refuse(request, principal.name, "bad_path", why, 400, path)
    target = await _session_target(request, principal.name)
    if target is None:
        # A session the caller is not in answers like one that does not exist.
        await _refuse(request, principal.name, "not_in_session", "", 404, path)
        raise SessionNotFound(
            "there is no live session of yours with that id on this broker; transfers are "
            "made from the page of a running session"
        )
    if direction == "upload":
        size = request.content_length
        most = services.config.sftp_max_upload_bytes
        if size is None:
            raise await _refuse(
                request,
                principal.name,
                "length_required",
                "send the file's size (Content-Length); the console does",
                411,
                path,
            )
        if most and size > most:
            raise await _refuse(
                request,
                principal.name,
                "file_too_large",
                f"the file has {size} bytes, more than the {most} one file may upload "
                "(sftp_max_upload_bytes); compress or split it, or ask an admin to raise "
                "the limit",
                413,
                path,
            )
    terminal = SftpTerminal()
    # On the node holding the agent's tunnel: here, or (in a cluster) relayed to it like
    # a shell from this node's SSH gateway or terminal page.
    opened, member = await open_anywhere(
        runtime.manager,
        OpenRequest(
            staff=principal.name,
            target=target,
            kind="sftp",
            command=None,
            term=None,
            via="web",
            source=request.remote or "",
        ),
        terminal,
    )
    terminal.bind(opened, member)
    return principal.name, path, terminal


async def _session_target(request: web.Request, name: str) -> SshTarget | None:
    """The ticket and machine of live session ``{id}`` when ``name`` takes part in it;
    None otherwise. Its hub is here, or, in a cluster, on the node the database names (the
    page may be served by any node the load balancer picks): then the database's
    participants say who is in it."""
    sid = request.match_info["id"]
    live = request.app[SESSIONS].manager.get(sid)
    if live is not None:
        if name not in {m.name for m in live.core.members}:
            return None
        return SshTarget(ticket=live.facts.ticket_id, agent=live.facts.agent_id)
    services = request.app[SERVICES]
    if not services.config.node:
        return None
    async with services.db() as db:
        row = await store.get_session(db, sid)
        if row is None or row.state not in LIVE_STATES or row.node in ("", services.config.node):
            return None
        present = [p for p in await store.participants(db, sid) if p.left_at is None]
    if name not in {p.name for p in present}:
        return None
    return SshTarget(ticket=row.ticket_id, agent=row.agent_id)


async def _finish(terminal: SftpTerminal) -> None:
    """The last request was answered: end the file session and wait for its end."""
    terminal.end_input()
    try:
        async with asyncio.timeout(END_WAIT):
            await terminal.ended.wait()
    except TimeoutError:
        terminal.leave("the machine's sftp-server did not exit")  # the owner leaving ends it


def _failed(exc: TransferError, terminal: SftpTerminal) -> InputError:
    """What the panel is told when a transfer broke off; the file session's end says why."""
    outcome = terminal.outcome
    if outcome is not None and outcome.code == "sftp_limit":
        return InputError(outcome.message, code="file_too_large", status=413)
    return InputError(str(exc), code="transfer_failed", status=422)


async def _settle(tasks: list[asyncio.Task[None]]) -> list[asyncio.Task[None]]:
    """The writes still waiting for their answer; a refused one raises its error."""
    left: list[asyncio.Task[None]] = []
    for task in tasks:
        if task.done():
            task.result()
        else:
            left.append(task)
    return left


async def _cancel(tasks: list[asyncio.Task[None]] | list[asyncio.Task[bytes]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, TransferError):
            await task


async def upload(request: web.Request) -> web.Response:
    """Write the request's body to ``path`` on the machine, as it arrives."""
    _actor, path, terminal = await _start(request, "upload")
    expected = request.content_length or 0
    digest, total, done = hashlib.sha256(), 0, False
    writes: list[asyncio.Task[None]] = []
    try:
        await terminal.start()
        handle = await terminal.open(path, FXF_WRITE | FXF_CREAT | FXF_TRUNC)
        async for chunk in request.content.iter_chunked(CHUNK):
            if total + len(chunk) > expected:
                raise TransferError(f"the upload sent more than the {expected} bytes it declared")
            writes.append(await terminal.write(handle, total, chunk, path))
            digest.update(chunk)
            total += len(chunk)
            writes = await _settle(writes)
        if total != expected:
            raise TransferError(
                f"the upload stopped after {total} of {expected} bytes; the part that arrived "
                "is recorded as incomplete. Send the file again"
            )
        await asyncio.gather(*writes)
        writes = []
        await terminal.close(handle, path)
        done = True
    except TransferError as exc:
        raise _failed(exc, terminal) from None
    finally:
        await _cancel(writes)
        if done:
            await _finish(terminal)
        else:
            terminal.leave("transfer broke off")
    return web.json_response(
        {"session": terminal.session_id, "path": path, "size": total, "sha256": digest.hexdigest()}
    )


async def download(request: web.Request) -> web.StreamResponse:
    """Stream ``path`` on the machine into the response, as it arrives."""
    actor, path, terminal = await _start(request, "download")
    services = request.app[SERVICES]
    response: web.StreamResponse | None = None
    reads: deque[tuple[int, asyncio.Task[bytes]]] = deque()
    done = False
    try:
        await terminal.start()
        attrs = await terminal.stat(path)
        if attrs.regular is False:
            raise TransferError(f"{path}: not a regular file; give the path of a file")
        most = services.config.sftp_max_download_bytes
        if most and attrs.size is not None and attrs.size > most:
            raise await _refuse(
                request,
                actor,
                "file_too_large",
                f"the file has {attrs.size} bytes, more than the {most} one file may download "
                "(sftp_max_download_bytes); compress or split it on the machine, or ask an "
                "admin to raise the limit",
                413,
                path,
            )
        handle = await terminal.open(path, FXF_READ)
        response = web.StreamResponse(
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Disposition": f'attachment; filename="{_file_name(path)}"',
                "Content-Security-Policy": "default-src 'none'; sandbox",
                "X-Content-Type-Options": "nosniff",
                "Cache-Control": "no-store",
                SESSION_HEADER: terminal.session_id,
            }
        )
        if attrs.size is not None:
            response.headers[SIZE_HEADER] = str(attrs.size)  # the panel's progress
        await response.prepare(request)
        offset = 0
        while True:
            while len(reads) < IN_FLIGHT:
                reads.append((offset, await terminal.read(handle, offset, path)))
                offset += CHUNK
            at, task = reads.popleft()
            data = await task
            if data:
                await response.write(data)
            if len(data) < CHUNK:
                # The end of the file, or a short read: what was asked past it is dropped
                # and asked again from where the data stopped.
                rest = [await later for _, later in reads]
                reads.clear()
                if not data or not any(rest):
                    break
                offset = at + len(data)
        await terminal.close(handle, path)
        done = True
    except TransferError as exc:
        if response is None:
            raise _failed(exc, terminal) from None
        # The answer has begun: breaking the connection is how the panel learns of it (it
        # also compares the bytes it got with X-Secondline-Size).
        log.info("session %s: a console download broke off: %s", terminal.session_id, exc)
        if request.transport is not None:
            request.transport.close()
        return response
    finally:
        await _cancel([task for _, task in reads])
        if done:
            await _finish(terminal)
        else:
            terminal.leave("transfer broke off")
    await response.write_eof()
    return response
