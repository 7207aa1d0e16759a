"""``GET /cluster/v1/peer`` on the node that holds an agent's tunnel: another node's staff
member opens a session here, or joins or watches one, through a peer stream
(:mod:`broker.cluster.peering`).

This node runs the hub and the recorder exactly as for a local terminal: the remote
participant is a :class:`PeerTerminal`, judged by the same admission (refusals audited
here), paced or cut off by the hub by its buffer like any terminal. Its buffer is what
waits to be sent on the stream; when the dialling node stops reading (its staff member's
terminal is slow), TCP stops this node's writes, the buffer grows, and the hub pauses the
agent (the owner) or cuts the participant off (a follower): no buffer grows without bound.

A stream the other node closes as going away (1001: it is shutting down) is recorded as
its participant leaving because that node shut down; one that is cut, as "disconnected".
When this node stops, what its streams still hold after the sessions' drain is closed as
going away too (:func:`close_peer_sockets`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Final, cast

from aiohttp import WSCloseCode, WSMsgType, web

from broker.cluster.peering import (
    PEER_HEADER,
    AttachAsk,
    BadPeerMessage,
    Nonces,
    OpenAsk,
    PeerAuthError,
    check_credential,
    event,
    output_frame,
    parse_ask,
    parse_control,
)
from broker.errors import error_response
from broker.log_context import context_logger
from broker.services import SERVICES
from broker.sessions.admission import OpenRequest
from broker.sessions.errors import SessionError, SessionNotFound
from broker.sessions.facts import Outcome
from broker.sessions.hub import LiveSession
from broker.sessions.hub_core import Member
from broker.sessions.runtime import SESSIONS

log = logging.getLogger(__name__)


@dataclass
class PeerState:
    """What this node's peer endpoint keeps: its name, the key, the nonces seen, and the
    open streams (closed at shutdown)."""

    node: str
    key: bytes
    nonces: Nonces = field(default_factory=Nonces)
    sockets: set[web.WebSocketResponse] = field(default_factory=set)
    #: Set whenever the last open stream has closed.
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def closed(self, ws: web.WebSocketResponse) -> None:
        self.sockets.discard(ws)
        if not self.sockets:
            self.idle.set()


PEER_STATE: Final = web.AppKey("cluster_peer", PeerState)

FIRST_MESSAGE_TIMEOUT: Final = 10.0
MAX_MESSAGE: Final = 64 << 10
FRAME_MAX: Final = 256 << 10
CLOSE_PROTOCOL: Final = 4400


class PeerTerminal:
    """A participant on another node, as this node's hub sees it."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self._ws = ws
        self._items: deque[bytearray | str] = deque()
        self._stderr: list[bool] = []  # per bytearray item, in order
        self._bytes = 0
        self._wake = asyncio.Event()
        self._closing = False
        self.closed = asyncio.Event()
        self.live: LiveSession | None = None
        self.pid = 0
        #: The other node closed the stream as going away (it is shutting down).
        self.peer_going_away = False

    # -- Terminal --------------------------------------------------------------------------

    def write_output(self, data: bytes, stderr: bool) -> None:
        if self._closing or not data:
            return
        last = self._items[-1] if self._items else None
        if (
            isinstance(last, bytearray)
            and self._stderr[-1] == stderr
            and len(last) + len(data) <= FRAME_MAX
        ):
            last += data
        else:
            self._items.append(bytearray(data))
            self._stderr.append(stderr)
        self._bytes += len(data)
        self._wake.set()

    def buffered(self) -> int:
        return self._bytes

    def _send(self, text: str) -> None:
        if not self._closing:
            self._items.append(text)
            self._wake.set()

    def show_state(self, state: str, reason: str, session_id: str) -> None:
        self._send(event("state", state=state, reason=reason[:500], session=session_id))

    def show_participants(self, people: list[dict[str, str]]) -> None:
        self._send(event("participants", list=people[:64]))

    def show_notice(self, message: str) -> None:
        self._send(event("notice", message=message[:1000]))

    def pause_input(self, paused: bool) -> None:
        # The agent is behind: the other node stops reading its participant, as a local
        # terminal would stop reading its socket.
        self._send(event("pause", paused=paused))

    def drop(self, message: str) -> None:
        # Cut off for being slow: what waits is thrown away, the reason still goes out.
        self._items.clear()
        self._stderr.clear()
        self._bytes = 0
        self._send(event("drop", message=message[:1000]))
        self._closing = True

    def finish(self, outcome: Outcome) -> None:
        self._send(
            event(
                "finish",
                reason=outcome.reason[:500],
                code=outcome.code[:64],
                message=outcome.message[:1000],
                exit_status=outcome.exit_status,
                exit_signal=outcome.exit_signal,
                ended_by=outcome.ended_by,
                started_at=outcome.started_at,
            )
        )
        self._closing = True

    def refused(self, exc: SessionError) -> None:
        missing = isinstance(exc, SessionNotFound)
        self._send(event("refused", code=exc.code, message=exc.message[:1000], missing=missing))
        self._closing = True

    def started(self, live: LiveSession, member: Member) -> None:
        cols, rows = live.size
        self._send(
            event(
                "started",
                pid=member.pid,
                name=member.name,
                role=member.role,
                via=member.via,
                session=live.session_id,
                cols=cols,
                rows=rows,
            )
        )

    # -- sending ---------------------------------------------------------------------------

    async def write_loop(self) -> None:
        """Send what waits, one frame at a time; each send waits for TCP (backpressure)."""
        ws = self._ws
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._items:
                    item = self._items.popleft()
                    if isinstance(item, bytearray):
                        stderr = self._stderr.pop(0)
                        await ws.send_bytes(output_frame(bytes(item), stderr))
                        self._bytes -= len(item)
                        if self.live is not None:
                            self.live.drained(self.pid)
                    else:
                        await ws.send_str(item)
                if self._closing:
                    await ws.close()
                    return
        except (ConnectionError, RuntimeError) as exc:
            log.info("a peer stream went away while sending: %s", type(exc).__name__)
        finally:
            self._items.clear()
            self._stderr.clear()
            self._bytes = 0
            self.closed.set()


def _request(ask: OpenAsk | AttachAsk, origin: str) -> tuple[str, str]:
    """Who asks and from where, for the log."""
    return ask.staff, f"{ask.source} via node {origin}"


async def peer_socket(request: web.Request) -> web.StreamResponse:
    """Serve one peer stream; refusals of the credential are audited (anonymous refusals,
    summarised per source like any unauthenticated request)."""
    services = request.app[SERVICES]
    state = request.app.get(PEER_STATE)
    if state is None:
        message = "this broker is a single node: it takes no node-to-node requests"
        return error_response(404, "not_found", message)
    try:
        origin = check_credential(
            state.key, request.headers.get(PEER_HEADER), state.node, time.time(), state.nonces
        )
    except PeerAuthError as exc:
        await services.anonymous.refused(
            source=request.remote or "",
            action="cluster.peer_refused",
            target=request.path,
            reason=str(exc),
        )
        message = f"node-to-node requests need a valid {PEER_HEADER} credential: {exc}"
        return error_response(403, "peer_refused", message)
    ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE + 1, heartbeat=15.0)
    await ws.prepare(request)
    terminal = PeerTerminal(ws)
    writer = asyncio.get_running_loop().create_task(terminal.write_loop())
    state.sockets.add(ws)
    state.idle.clear()
    try:
        ask = await _first(ws)
        if ask is None:
            await ws.close(code=CLOSE_PROTOCOL, message=b"the first message is not a request")
            return ws
        await _serve(request, ws, terminal, ask, origin)
        # What the hub said last (the session's end) goes out before the stream closes;
        # a stream the other node closed has nothing more to carry.
        if not ws.closed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await terminal.closed.wait()
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        try:
            if not ws.closed:
                await ws.close()
        finally:
            state.closed(ws)
    return ws


async def _first(ws: web.WebSocketResponse) -> OpenAsk | AttachAsk | None:
    try:
        async with asyncio.timeout(FIRST_MESSAGE_TIMEOUT):
            msg = await ws.receive()
    except TimeoutError:
        return None
    if msg.type != WSMsgType.TEXT:
        return None
    try:
        return parse_ask(msg.data)
    except BadPeerMessage as exc:
        log.warning("a peer request was refused: %s", exc)
        return None


async def _serve(
    request: web.Request,
    ws: web.WebSocketResponse,
    terminal: PeerTerminal,
    ask: OpenAsk | AttachAsk,
    origin: str,
) -> None:
    manager = request.app[SESSIONS].manager
    if isinstance(ask, OpenAsk):
        start = manager.open(
            OpenRequest(
                staff=ask.staff,
                target=ask.target,
                kind=ask.kind,
                command=ask.command,
                term=ask.term,
                cols=ask.cols,
                rows=ask.rows,
                via=ask.via,
                source=ask.source,
            ),
            terminal,
        )
    else:
        start = manager.attach(
            staff_name=ask.staff,
            session_id=ask.session,
            ticket_id=ask.ticket,
            role=ask.role,
            terminal=terminal,
            source=ask.source,
        )
    early: list[bytes | str] = []
    opener = asyncio.get_running_loop().create_task(start)
    reader = asyncio.get_running_loop().create_task(_read(ws, terminal, early))
    try:
        await asyncio.wait({opener, reader}, return_when=asyncio.FIRST_COMPLETED)
        if not opener.done():
            return  # the other node left while the session was starting
        try:
            live, member = opener.result()
        except SessionError as exc:
            terminal.refused(exc)
            return
        except Exception:  # a connection boundary: the other node gets a sentence
            staff, where = _request(ask, origin)
            context_logger(__name__, staff=staff, peer=where).exception(
                "a session for another node failed"
            )
            terminal.refused(
                SessionError("the session could not be started (internal error); tell an admin")
            )
            return
        terminal.live, terminal.pid = live, member.pid
        terminal.started(live, member)
        log.info(
            "session %s: %s (%s) is in it from node %s",
            live.session_id,
            member.name,
            member.role,
            origin,
        )
        for item in early:
            _perform(live, member.pid, item)
        early.clear()
        await reader
    finally:
        for task in (opener, reader):
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, SessionError):
                    await task
        if terminal.live is not None:
            why = f"node {origin} shut down" if terminal.peer_going_away else "disconnected"
            terminal.live.detach(terminal.pid, why)


def _perform(live: LiveSession, pid: int, item: bytes | str) -> None:
    """One input frame or control from the other node, for the hub."""
    if isinstance(item, bytes):
        live.input(pid, item)
        return
    ask = parse_control(item)
    match ask:
        case ("resize", cols, rows):
            live.resize(pid, cols, rows)
        case ("reply", data):
            live.answer_back(pid, data)
        case ("signal", name):
            live.send_signal(pid, name)
        case ("eof",):
            live.input_eof(pid)
        case ("end",):
            live.end_by_owner(pid)


async def _read(
    ws: web.WebSocketResponse, terminal: PeerTerminal, early: list[bytes | str]
) -> None:
    # Input before the session runs is held (bounded by the other node's own early-input
    # limit, which stops reading its staff member past 64 KiB).
    held = 0
    while True:
        msg = await ws.receive()
        if msg.type == WSMsgType.BINARY:
            item: bytes | str = cast(bytes, msg.data)
        elif msg.type == WSMsgType.TEXT:
            item = cast(str, msg.data)
        else:
            if msg.type == WSMsgType.CLOSE and msg.data == WSCloseCode.GOING_AWAY:
                terminal.peer_going_away = True
            return
        live = terminal.live
        try:
            if live is None:
                held += len(item)
                if held > MAX_MESSAGE:
                    raise BadPeerMessage("more than 64 KiB sent before the session ran")
                if isinstance(item, str):
                    parse_control(item)
                early.append(item)
            else:
                _perform(live, terminal.pid, item)
        except BadPeerMessage as exc:
            log.warning("a peer stream sent something out of shape: %s", exc)
            await ws.close(code=CLOSE_PROTOCOL, message=b"message out of shape")
            return


async def close_peer_sockets(app: web.Application, *, wait: float = 2.0) -> None:
    """At shutdown, after the sessions' drain: the streams whose sessions ended get up to
    ``wait`` seconds to send the end and close by themselves; those still open then (a
    request not yet made, a session still ending) are closed as going away, so the other
    nodes see this node stop, not a cut."""
    state = app.get(PEER_STATE)
    if state is None or not state.sockets:
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(wait):
            await state.idle.wait()
    why = f"node {state.node} is shutting down".encode()
    for ws in list(state.sockets):
        # As for the console's terminals (broker.web.feature): close() raises only for a
        # socket never prepared or a close frame that timed out, and neither may stop the
        # other streams from closing.
        with contextlib.suppress(RuntimeError, TimeoutError):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=why)
