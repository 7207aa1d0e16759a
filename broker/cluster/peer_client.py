"""The dialling side of sessions across nodes: :class:`PeerRouter` is the session
manager's :class:`~broker.sessions.routing.SessionRouter` in a cluster, and
:class:`RemoteSession` the :class:`~broker.sessions.routing.SessionHandle` an edge (the SSH
gateway, the browser terminal) holds for a hub on another node.

Backpressure end to end: output from the hub's node goes straight into the local
terminal; while that terminal holds more than :data:`PEER_HIGH` unsent bytes the stream
is not read, so TCP pushes back to the hub's node, whose hub then paces the agent (the
owner) or cuts the participant off (a follower), as for a local terminal. Input goes the
other way through one bounded queue.

When this node stops, its streams close with a WebSocket close frame saying so (1001,
going away) after its participants were told why: the hub's node records that they left
because this node shut down, not that their connection was cut (:meth:`PeerRouter.going_away`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Final, Literal, cast

import aiohttp

from broker.cluster.node import ClusterNode
from broker.cluster.peering import (
    PATH,
    PEER_HEADER,
    AttachAsk,
    BadPeerMessage,
    OpenAsk,
    control,
    credential,
    parse_event,
    parse_output,
    reply_control,
    serialize_ask,
)
from broker.sessions.admission import JoinRequest, OpenRequest
from broker.sessions.errors import SessionNotFound, SessionRefused
from broker.sessions.facts import Outcome, Terminal
from broker.sessions.hub_core import Member
from broker.sessions.routing import BUS_UNAVAILABLE, NODE_UNREACHABLE, RouteFailed
from broker.supervision import Supervisor

log = logging.getLogger(__name__)

#: A local terminal holding more than this stops the stream being read (the SSH gateway's
#: channel pauses itself at the same level and says when it drained).
PEER_HIGH: Final = 1 << 20
#: Input waiting to go to the hub's node: past this the participant is cut off (input
#: from one staff member's keyboard or a pasted file; a local hub writes it on too).
INPUT_MAX: Final = 4 << 20
#: Reaching the other node: a node that does not answer within this is unreachable.
DIAL_WAIT_S: Final = 5.0
MAX_MESSAGE: Final = 512 << 10
#: At shutdown, how long the streams' closes may wait for the other nodes' answers.
GOING_AWAY_WAIT_S: Final = 2.0


class RemoteSession:
    """A hub on another node, as the edge attached to it sees it."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, terminal: Terminal, node: str):
        self._ws = ws
        self._terminal = terminal
        self.node = node
        self._out: deque[bytes | str] = deque()
        self._out_bytes = 0
        self._wake = asyncio.Event()
        self._readable = asyncio.Event()
        self._readable.set()
        self._over = False  # the session ended, or this side left: nothing more to relay
        self.started: asyncio.Future[Member] = asyncio.get_running_loop().create_future()
        self._session = ""
        self._size = (80, 24)
        # How the writer closes the stream once the relay is over (1001 when this node stops).
        self._close_code: int = aiohttp.WSCloseCode.OK
        self._close_message = b""
        #: Set once the relay has ended and the stream is closed.
        self.ended = asyncio.Event()

    # -- SessionHandle ---------------------------------------------------------------------

    @property
    def session_id(self) -> str:
        return self._session

    @property
    def size(self) -> tuple[int, int]:
        return self._size

    def input(self, pid: int, data: bytes) -> None:
        if data:
            self._queue(bytes(data))

    def answer_back(self, pid: int, data: bytes) -> None:
        self._queue(reply_control(data[:512]))

    def input_eof(self, pid: int) -> None:
        self._queue(control("eof"))

    def resize(self, pid: int, cols: int, rows: int) -> None:
        cols, rows = max(1, min(cols, 1000)), max(1, min(rows, 1000))
        self._queue(control("resize", cols=cols, rows=rows))

    def send_signal(self, pid: int, name: str) -> None:
        self._queue(control("signal", name=name[:16]))

    def drained(self, pid: int) -> None:
        if self._terminal.buffered() <= PEER_HIGH:
            self._readable.set()

    def detach(self, pid: int, reason: str) -> None:
        """The staff member left: closing the stream detaches them on the hub's node."""
        self._over = True
        self._readable.set()
        self._wake.set()

    def end_by_owner(self, pid: int) -> None:
        self._queue(control("end"))

    def going_away(self, message: str, why: bytes) -> None:
        """This node stops: tell the participant ``message`` and close the stream as going
        away (``why``), so the hub's node records the reason instead of a cut."""
        if self._over:
            return
        self._close_code, self._close_message = aiohttp.WSCloseCode.GOING_AWAY, why
        self._lost(message)
        self._readable.set()

    def _queue(self, item: bytes | str) -> None:
        if self._over:
            return
        self._out.append(item)
        self._out_bytes += len(item)
        self._wake.set()
        if self._out_bytes > INPUT_MAX:
            self._lost("your input arrived faster than the session could take it; connect again")

    # -- the stream ------------------------------------------------------------------------

    async def run(self) -> None:
        """Relay until the session ends or either side goes; then close the stream."""
        writer = asyncio.ensure_future(self._write())
        try:
            await self._relay()
        except (aiohttp.ClientError, ConnectionError) as exc:
            log.info("the stream to node %s went away: %s", self.node, type(exc).__name__)
        except BadPeerMessage as exc:
            log.warning("node %s sent something out of shape: %s", self.node, exc)
        finally:
            try:
                if not self._over and self._ws.close_code == aiohttp.WSCloseCode.GOING_AWAY:
                    self._lost(
                        f"the broker is shutting down (node {self.node}, which ran this "
                        "session); connect again in a moment"
                    )
                elif not self._over:
                    self._lost(
                        f"the connection to node {self.node}, which runs this session, was "
                        "lost; the session may go on there: connect again to rejoin it"
                    )
                # The writer sends what waits and closes the stream with its code (1001
                # when this node stops); cancelled mid-close, it would cut the stream instead.
                try:
                    async with asyncio.timeout(GOING_AWAY_WAIT_S):
                        await asyncio.shield(writer)
                except TimeoutError:
                    pass
                finally:
                    writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writer
                if not self._ws.closed:
                    await self._ws.close(code=self._close_code, message=self._close_message)
            finally:
                self.ended.set()

    def _lost(self, message: str) -> None:
        self._over = True
        self._wake.set()
        if not self.started.done():
            self.started.set_exception(
                RouteFailed(NODE_UNREACHABLE, f"{message} (before the session started)")
            )
        else:
            self._terminal.drop(message)

    async def _relay(self) -> None:
        terminal = self._terminal
        while not self._over:
            await self._readable.wait()
            if self._over:
                return
            msg = await self._ws.receive()
            if msg.type == aiohttp.WSMsgType.BINARY:
                data, stderr = parse_output(cast(bytes, msg.data))
                terminal.write_output(data, stderr)
                if terminal.buffered() > PEER_HIGH:
                    self._readable.clear()  # until the terminal says it drained
            elif msg.type == aiohttp.WSMsgType.TEXT:
                self._event(*parse_event(cast(str, msg.data)))
            else:
                return

    def _event(self, kind: str, f: dict[str, object]) -> None:
        terminal = self._terminal
        match kind:
            case "state":
                terminal.show_state(str(f["state"]), str(f["reason"]), str(f["session"]))
            case "participants":
                terminal.show_participants(cast(list[dict[str, str]], f["list"]))
            case "notice":
                terminal.show_notice(str(f["message"]))
            case "pause":
                terminal.pause_input(bool(f["paused"]))
            case "drop":
                self._over = True
                terminal.drop(str(f["message"]))
            case "refused":
                self._over = True
                message, code = str(f["message"]), str(f["code"])
                error = (
                    SessionNotFound(message) if f["missing"] else SessionRefused(message, code=code)
                )
                if not self.started.done():
                    self.started.set_exception(error)
            case "started":
                self._session = str(f["session"])
                self._size = (cast(int, f["cols"]), cast(int, f["rows"]))
                role = cast(Literal["owner", "joiner", "observer"], f["role"])
                member = Member(
                    cast(int, f["pid"]), str(f["name"]), role, str(f["via"]), time.monotonic()
                )
                if not self.started.done():
                    self.started.set_result(member)
            case "finish":
                self._over = True
                terminal.finish(_outcome(f))

    async def _write(self) -> None:
        ws = self._ws
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._out and not ws.closed:
                    item = self._out.popleft()
                    self._out_bytes -= len(item)
                    if isinstance(item, bytes):
                        await ws.send_bytes(item)
                    else:
                        await ws.send_str(item)
                if self._over:
                    await ws.close(code=self._close_code, message=self._close_message)
                    return
        except (aiohttp.ClientError, ConnectionError) as exc:
            # The stream went away under a send: the relay sees it too and says so.
            log.info(
                "the stream to node %s went away while sending: %s", self.node, type(exc).__name__
            )


def _outcome(f: dict[str, object]) -> Outcome:
    status, signal, by = f.get("exit_status"), f.get("exit_signal"), f.get("ended_by")
    return Outcome(
        reason=str(f["reason"]),
        code=str(f["code"]),
        message=str(f["message"]),
        exit_status=status if isinstance(status, int) else None,
        exit_signal=signal if isinstance(signal, str) else None,
        ended_by=by if isinstance(by, str) else None,
        started_at=float(cast(float, f["started_at"])),
        ended_at=time.time(),
        seal=None,  # sealed and written by the node that recorded it
        commands=(),
    )


class PeerRouter:
    """Reaches hubs on other nodes for this node's session manager."""

    def __init__(self, node: ClusterNode, key: bytes, tls_sha256: bytes) -> None:
        self._node = node
        self._key = key
        self._tls = aiohttp.Fingerprint(tls_sha256)
        self._http: aiohttp.ClientSession | None = None
        #: One relay per remote participant; stopped (cancelled) with the node.
        self.tasks = Supervisor("cluster peers")
        #: The streams relaying now (each leaves the set when its relay ends).
        self.streams: set[RemoteSession] = set()

    async def start(self) -> None:
        await self.tasks.open()
        self._http = aiohttp.ClientSession()

    async def going_away(self, *, wait: float = GOING_AWAY_WAIT_S) -> None:
        """This node stops (after its own sessions were drained): every participant it
        relays is told so, and every stream is closed as going away, waiting up to
        ``wait`` seconds for the other nodes to answer the close."""
        me = self._node.name
        why = f"node {me} is shutting down".encode()
        streams = list(self.streams)
        for remote in streams:
            remote.going_away(
                f"the broker is shutting down (node {me}, which relayed this session from "
                f"node {remote.node}); connect again in a moment",
                why,
            )
        if streams:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await asyncio.gather(*(remote.ended.wait() for remote in streams))

    async def stop(self) -> None:
        await self.tasks.stop()
        if self._http is not None:
            await self._http.close()

    async def _relay(self, remote: RemoteSession) -> None:
        self.streams.add(remote)
        try:
            await remote.run()
        finally:
            self.streams.discard(remote)

    def holder(self, agent_id: str) -> str | None:
        return self._node.view.holder_of_agent(agent_id)

    async def open(
        self, node: str, req: OpenRequest, owner: Terminal
    ) -> tuple[RemoteSession, Member]:
        ask = OpenAsk(
            staff=req.staff,
            target=req.target,
            kind=req.kind,
            command=req.command,
            term=req.term,
            cols=req.cols,
            rows=req.rows,
            via=req.via,
            source=req.source,
        )
        return await self._dial(node, ask, owner, f"the agent's tunnel is on node {node}")

    async def attach(
        self, node: str, req: JoinRequest, terminal: Terminal
    ) -> tuple[RemoteSession, Member]:
        ask = AttachAsk(
            staff=req.staff,
            session=req.session_id,
            ticket=req.ticket_id,
            role="joiner" if req.role == "joiner" else "observer",
            source=req.source,
        )
        return await self._dial(
            node, ask, terminal, f"session {req.session_id} runs on node {node}"
        )

    async def _dial(
        self, node: str, ask: OpenAsk | AttachAsk, terminal: Terminal, where: str
    ) -> tuple[RemoteSession, Member]:
        if not self._node.bus.connected:
            raise RouteFailed(
                BUS_UNAVAILABLE,
                f"{where}, and this node has lost the cluster bus (NATS), so it cannot tell "
                "whether that node still runs; try again shortly",
            )
        peer = self._node.view.peer_of(node)
        if peer is None or self._http is None:
            raise RouteFailed(
                NODE_UNREACHABLE,
                f"{where}, which does not announce an address for sessions (it is gone, or "
                "of an older version); try again shortly",
            )
        header = credential(self._key, self._node.name, node, time.time())
        try:
            async with asyncio.timeout(DIAL_WAIT_S):
                ws = await self._http.ws_connect(
                    peer + PATH,
                    headers={PEER_HEADER: header},
                    ssl=self._tls,
                    heartbeat=15.0,
                    max_msg_size=MAX_MESSAGE,
                    autoping=True,
                )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            why = "no answer in time" if isinstance(exc, TimeoutError) else type(exc).__name__
            raise RouteFailed(
                NODE_UNREACHABLE,
                f"{where} ({peer}), which this node cannot reach ({why}); try again shortly, "
                "and tell an admin if it lasts (docs/cluster.md, nodes that cannot reach "
                "each other)",
            ) from None
        remote = RemoteSession(ws, terminal, node)
        # Cancelled at stop: a relay means nothing once this node stops serving its staff.
        relay = self.tasks.spawn(
            f"relaying a session of node {node}", self._relay(remote), cancel_at_stop=True
        )
        if relay is None:
            await ws.close()
            raise RouteFailed(NODE_UNREACHABLE, "this node is shutting down; try again")
        try:
            await ws.send_str(serialize_ask(ask))
            member = await remote.started
        except BaseException:
            remote.detach(0, "disconnected")
            raise
        log.info(
            "session %s: relaying it from node %s for %s (%s)",
            remote.session_id,
            node,
            member.name,
            member.role,
        )
        return remote, member
