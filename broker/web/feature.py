"""The web edge's routes: the console terminal WebSocket, the file downloads (session
transcripts, ticket attachments), the terminal page's file
transfers, and the closing of open terminals on shutdown."""

from __future__ import annotations

import contextlib

from aiohttp import WSCloseCode, web

from broker.tickets.files import DOWNLOAD_PATH as ATTACHMENT_PATH
from broker.web import file_transfer, session_downloads, terminal_ws, ticket_downloads
from broker.web.terminals import TERMINALS, Terminals


def setup(app: web.Application) -> None:
    """Add the terminal WebSocket and download routes; close the terminals on shutdown."""
    app[TERMINALS] = Terminals()
    app.router.add_get(terminal_ws.PATH, terminal_ws.terminal_socket)
    app.router.add_get(session_downloads.DOWNLOAD_PATH, session_downloads.download_transcript)
    app.router.add_get(session_downloads.KEPT_PATH, session_downloads.download_kept_file)
    app.router.add_get(ATTACHMENT_PATH, ticket_downloads.download)
    app.router.add_post(file_transfer.UPLOAD_PATH, file_transfer.upload)
    app.router.add_post(file_transfer.DOWNLOAD_PATH, file_transfer.download)
    # Appended: the sessions' drain (first of all shutdown handlers) has told every terminal
    # why its session ended before its socket closes.
    app.on_shutdown.append(_close_terminals)


async def _close_terminals(app: web.Application) -> None:
    for ws in list(app[TERMINALS].sockets):
        # aiohttp's close() keeps the transport's own errors to itself (the socket ends up
        # closed either way); it raises only for a socket never prepared, or when sending
        # the close frame times out. Neither may stop the other terminals from closing.
        with contextlib.suppress(RuntimeError, TimeoutError):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"the broker is shutting down")
