"""``GET /console/ws/terminal``: a browser terminal attached to a session hub.

Protocol (docs/sessions.md, "Console terminal"):

1. The upgrade needs an ``Origin`` equal to the public URL's (403, audited, otherwise) and
   a signed-in console principal (cookie or bearer token).
2. The first client message is a text frame ``{"ticket": "tt_..."}``: a one-time terminal
   ticket from ``POST /api/v1/sessions/terminal-tickets``, bound to the same principal.
3. Then binary frames carry terminal bytes both ways; text frames carry JSON control:
   client → ``{"type": "resize", "cols": N, "rows": N}``, ``{"type": "end"}`` (the owner
   ends the session) and ``{"type": "reply", "data": "..."}`` (the terminal's answer-back
   to a query of the session: cursor position, device attributes, DECRQSS...; sent to the
   shell and recorded as a reply, never as typed input; data that is not made of CSI, OSC or
   DCS sequences is taken as typed); server →
   ``{"type": "state", "state": "waiting_consent"|"running"|"ended", "reason", "session"}``;
   ``ended`` also carries ``"code"`` (how it ended: ``exit``, ``ended_by_owner``,
   ``end_user``, ``killed``, ``agent_disconnected``, ``shutdown``, …, or the refusal's code,
   e.g. ``"session_limit"``), ``"refused": true`` for a refusal, ``"by"`` (who ended it,
   when someone did) and ``"detail"`` (a kill's reason), so the console says it in the
   viewer's language;
   ``{"type": "participants", "list": [{"name", "role"}]}`` and
   ``{"type": "notice", "message"}`` (observers are told once that their input is dropped).

The server never queues a frame per write: terminal bytes are appended to one buffer that a
single writer task sends as one binary frame per turn (at most 256 KiB).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections import deque
from typing import Final, cast

from aiohttp import WSMsgType, web

from broker.config import own_urls
from broker.errors import ForbiddenError
from broker.log_context import context_logger
from broker.origin import origin_allowed
from broker.rules import SshTarget
from broker.services import SERVICES
from broker.sessions.admission import OpenRequest
from broker.sessions.cross_node import attach_anywhere, open_anywhere
from broker.sessions.errors import SessionError
from broker.sessions.facts import Outcome
from broker.sessions.hub_core import Member
from broker.sessions.input_ledger import InputKind
from broker.sessions.routing import SessionHandle
from broker.sessions.runtime import SESSIONS
from broker.web.auth import authenticate
from broker.web.terminal_tickets import TerminalGrant
from broker.web.terminals import TERMINALS

log = logging.getLogger(__name__)

PATH: Final = "/console/ws/terminal"
FIRST_MESSAGE_TIMEOUT: Final = 10.0
MAX_MESSAGE: Final = 64 << 10
MAX_CONTROL: Final = 1024
FRAME_MAX: Final = 256 << 10
CLOSE_REFUSED: Final = 4403
CLOSE_BAD_TICKET: Final = 4401
CLOSE_PROTOCOL: Final = 4400
CLOSE_INTERNAL: Final = 1011
TERM: Final = "xterm-256color"
EARLY_INPUT_MAX: Final = 64 << 10
MAX_REPLY: Final = 512
# What a terminal answers with: CSI (DSR, DA, DECRQM, window reports), OSC (colour
# reports) and DCS (DECRQSS, XTVERSION) sequences, one or more, nothing else.
_REPLY: Final = re.compile(
    r"(?:\x1b\[[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]"
    r"|\x1b\][\x20-\x7e]*(?:\x07|\x1b\\)"
    r"|\x1bP[\x20-\x7e]*\x1b\\)+"
)


class WebTerminal:
    """A browser terminal as the hub sees it (:class:`~broker.sessions.hub.Terminal`)."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self._ws = ws
        self._items: deque[bytearray | str] = deque()
        self._bytes = 0
        self._wake = asyncio.Event()
        self._closing: tuple[int, str] | None = None
        self.closed = asyncio.Event()
        self.live: SessionHandle | None = None
        self.pid = 0
        # Typed (or answered) before the session ran; sent when it does.
        self.early: list[tuple[InputKind, bytes]] = []
        self.early_size = 0
        self.may_read = asyncio.Event()  # cleared while the agent is behind (pause_input)
        self.may_read.set()
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    def pause_input(self, paused: bool) -> None:
        if paused:
            self.may_read.clear()
        else:
            self.may_read.set()

    def bind(self, live: SessionHandle, member: Member) -> None:
        self.live, self.pid = live, member.pid
        for kind, data in self.early:
            if kind == "typed":
                live.input(member.pid, data)
            else:
                live.answer_back(member.pid, data)
        self.early.clear()

    def send_input(self, kind: InputKind, data: bytes) -> None:
        """What the browser sent: to the session, or kept until it runs."""
        if self.live is not None:
            if kind == "typed":
                self.live.input(self.pid, data)
            else:
                self.live.answer_back(self.pid, data)
        elif self.early_size + len(data) <= EARLY_INPUT_MAX:
            self.early.append((kind, data))
            self.early_size += len(data)

    # -- Terminal ----------------------------------------------------------------------------

    def write_output(self, data: bytes, stderr: bool) -> None:
        if self._closing is not None:
            return
        last = self._items[-1] if self._items else None
        if isinstance(last, bytearray) and len(last) + len(data) <= FRAME_MAX:
            last += data
        else:
            self._items.append(bytearray(data))
        self._bytes += len(data)
        self._wake.set()

    def buffered(self) -> int:
        return self._bytes

    def _send_json(self, message: dict[str, object]) -> None:
        if self._closing is None:
            self._items.append(json.dumps(message))
            self._wake.set()

    def show_state(
        self,
        state: str,
        reason: str,
        session_id: str,
        code: str = "",
        *,
        refused: bool = False,
        by: str | None = None,
        detail: str = "",
    ) -> None:
        message: dict[str, object] = {
            "type": "state",
            "state": state,
            "reason": reason,
            "session": session_id,
        }
        if code:
            message["code"] = code  # how it ended, or the API's stable refusal code
        if refused:
            message["refused"] = True
        if by:
            message["by"] = by
        if detail:
            message["detail"] = detail  # words of the person who ended it (kill --reason)
        self._send_json(message)

    def show_participants(self, people: list[dict[str, str]]) -> None:
        self._send_json({"type": "participants", "list": people})

    def show_notice(self, message: str) -> None:
        self._send_json({"type": "notice", "message": message})

    def drop(self, message: str) -> None:
        # Cut off for being slow: what waits is thrown away, the reason still goes out.
        self._items.clear()
        self._bytes = 0
        self.end(message, "", CLOSE_REFUSED)

    def finish(self, outcome: Outcome) -> None:
        session = self.live.session_id if self.live is not None else ""
        detail = ""
        if outcome.code == "killed" and outcome.ended_by:
            # The hub says "the session was ended by NAME: REASON"; the page says the rest.
            said = f"the session was ended by {outcome.ended_by}: "
            detail = outcome.message.removeprefix(said) if outcome.message.startswith(said) else ""
        self.end(
            outcome.message, session, 1000, ended=outcome.code, by=outcome.ended_by, detail=detail
        )

    def end(
        self,
        reason: str,
        session: str,
        code: int,
        *,
        error: str = "",
        ended: str = "",
        by: str | None = None,
        detail: str = "",
    ) -> None:
        """Say ``ended`` (with the refusal's ``error`` code, or how it ``ended``) and close
        once everything queued is sent."""
        self.show_state(
            "ended", reason, session, error or ended, refused=bool(error), by=by, detail=detail
        )
        if self._closing is None:
            self._closing = (code, reason[:120])
            self._wake.set()

    # -- sending -----------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        ws = self._ws
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._items:
                    item = self._items.popleft()
                    if isinstance(item, bytearray):
                        self._bytes -= len(item)
                        # aiohttp takes any bytes-like object; a copy would cost per frame.
                        await ws.send_bytes(cast(bytes, item))
                        if self.live is not None:
                            self.live.drained(self.pid)
                    else:
                        await ws.send_str(item)
                if self._closing is not None:
                    code, reason = self._closing
                    await ws.close(code=code, message=reason.encode("utf-8", "replace")[:120])
                    return
        except (ConnectionError, RuntimeError) as exc:
            log.info("a console terminal went away while sending: %s", type(exc).__name__)
        finally:
            self._items.clear()
            self._bytes = 0
            self.closed.set()

    async def stop(self) -> None:
        self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer


async def _first_ticket(ws: web.WebSocketResponse) -> object:
    """The ticket of the first message, or None when it is not ``{"ticket": "..."}``."""
    try:
        async with asyncio.timeout(FIRST_MESSAGE_TIMEOUT):
            msg = await ws.receive()
    except TimeoutError:
        return None
    if msg.type != WSMsgType.TEXT or len(msg.data) > MAX_CONTROL:
        return None
    try:
        doc = json.loads(msg.data)
    except ValueError:
        return None
    if not isinstance(doc, dict) or set(doc) != {"ticket"}:
        return None
    return doc["ticket"]


def _wants_end(data: str) -> bool:
    if len(data) > MAX_CONTROL:
        return False
    try:
        return bool(json.loads(data) == {"type": "end"})
    except ValueError:
        return False


def _control(data: str) -> tuple[int, int] | tuple[InputKind, bytes] | None:
    """A resize ``(cols, rows)``, a reply ``(kind, bytes)``, or None (not understood)."""
    if len(data) > MAX_CONTROL:
        return None
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    if doc.get("type") == "reply" and set(doc) == {"type", "data"}:
        reply = doc["data"]
        if not isinstance(reply, str) or not 0 < len(reply) <= MAX_REPLY:
            return None
        # Only a terminal's answer counts as one: anything else was typed, and is sent
        # and recorded as such (so a "reply" can never carry typing past the record).
        kind: InputKind = "reply" if _REPLY.fullmatch(reply) else "typed"
        return kind, reply.encode("utf-8", "replace")
    if doc.get("type") != "resize":
        return None
    cols, rows = doc.get("cols"), doc.get("rows")
    if type(cols) is not int or type(rows) is not int:
        return None
    if not (1 <= cols <= 1000 and 1 <= rows <= 1000):
        return None
    return cols, rows


async def terminal_socket(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    runtime = request.app[SESSIONS]
    source = request.remote or ""
    if not origin_allowed(request.headers.get("Origin"), *own_urls(services.config)):
        # Refused before anyone is authenticated: counted into the source's summary.
        await services.anonymous.refused(
            source=source,
            action="console.ws_refused",
            target=PATH,
            reason=f"origin {ascii(request.headers.get('Origin', ''))[:60]}",
        )
        raise ForbiddenError(
            "the terminal opens only from the Secondline console's own pages", code="bad_origin"
        )
    principal = await authenticate(request, services, public=False)
    # aiohttp refuses (1009) a message of max_msg_size bytes or more; MAX_MESSAGE itself is
    # allowed, as documented.
    ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE + 1, heartbeat=30.0)
    await ws.prepare(request)
    terminals = request.app[TERMINALS]
    terminals.sockets.add(ws)
    terminal = WebTerminal(ws)
    try:
        token = await _first_ticket(ws)
        grant = terminals.tickets.redeem(token, user_id=principal.user_id, now=time.time())
        if grant is None or grant.staff != principal.name:
            await runtime.manager.audit(
                principal.name,
                "console.terminal_refused",
                PATH,
                outcome="denied",
                source=source,
                details={"reason": "bad_ticket"},
            )
            terminal.end(
                "this terminal ticket is not valid (expired, used, or not yours); "
                "open the terminal again",
                "",
                CLOSE_BAD_TICKET,
            )
        else:
            await _serve(request, ws, terminal, grant, source)
        if not ws.closed:
            await _until_closed(ws, terminal)
    finally:
        await terminal.stop()
        terminals.sockets.discard(ws)
        if not ws.closed:
            await ws.close()
    return ws


async def _until_closed(ws: web.WebSocketResponse, terminal: WebTerminal) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(5.0):
            await terminal.closed.wait()


async def _serve(
    request: web.Request,
    ws: web.WebSocketResponse,
    terminal: WebTerminal,
    grant: TerminalGrant,
    source: str,
) -> None:
    manager = request.app[SESSIONS].manager
    size = [grant.cols, grant.rows]
    if grant.mode == "open":
        start = open_anywhere(
            manager,
            OpenRequest(
                staff=grant.staff,
                target=SshTarget(ticket=grant.ticket_id, agent=grant.agent),
                kind="shell",
                command=None,
                term=TERM,
                cols=grant.cols,
                rows=grant.rows,
                via="web",
                source=source,
            ),
            terminal,
        )
    else:
        assert grant.session is not None
        start = attach_anywhere(
            manager,
            staff_name=grant.staff,
            session_id=grant.session,
            ticket_id=grant.ticket_id,
            role="joiner" if grant.mode == "join" else "observer",
            terminal=terminal,
            source=source,
        )
    opener = asyncio.get_running_loop().create_task(start)
    reader = asyncio.get_running_loop().create_task(_read(ws, terminal, size))
    try:
        await asyncio.wait({opener, reader}, return_when=asyncio.FIRST_COMPLETED)
        if not opener.done():
            return  # the browser left while the session was starting: opener is cancelled
        try:
            live, member = opener.result()
        except SessionError as exc:
            # The browser gets what the API would answer: the sentence and the stable code
            # (session_limit, consent_denied, ...); the close code stays "refused".
            terminal.end(exc.message, "", CLOSE_REFUSED, error=exc.code)
            return
        except Exception:  # a connection boundary: the browser gets a sentence, the log the rest
            context_logger(
                __name__, session=grant.session or "", staff=grant.staff, peer=source
            ).exception("opening a console terminal failed")
            terminal.end(
                "the session could not be started (internal error); tell an admin",
                "",
                CLOSE_INTERNAL,
            )
            return
        terminal.bind(live, member)
        if list(live.size) != size:
            live.resize(member.pid, size[0], size[1])
        await reader
    finally:
        for task in (opener, reader):
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, SessionError):
                    await task
        if terminal.live is not None:
            terminal.live.detach(terminal.pid, "disconnected")


async def _read(ws: web.WebSocketResponse, terminal: WebTerminal, size: list[int]) -> None:
    async for msg in ws:
        # Not read on while the agent is behind: the browser's frames wait in the socket.
        await terminal.may_read.wait()
        live = terminal.live
        if msg.type == WSMsgType.BINARY:
            terminal.send_input("typed", msg.data)
        elif msg.type == WSMsgType.TEXT:
            if _wants_end(msg.data):
                _end_by_owner(terminal)
                continue
            control = _control(msg.data)
            if control is None:
                terminal.end("that control message is not understood", "", CLOSE_PROTOCOL)
                return
            if isinstance(control[1], bytes):
                kind, data = control
                terminal.send_input(kind, data)
                continue
            cols, rows = control
            size[:] = [cols, rows]
            if live is not None:
                live.resize(terminal.pid, cols, rows)
        else:
            return


def _end_by_owner(terminal: WebTerminal) -> None:
    """ "End session" from whoever holds control (the hub ignores anyone else)."""
    if terminal.live is not None:
        terminal.live.end_by_owner(terminal.pid)
