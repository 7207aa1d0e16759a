"""Component tests of the WebSocket tunnel adapter: coalescing, limits, backpressure, closing."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import asyncssh
import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from agent.errors import TunnelProtocolError
from agent.protocol import MAX_TUNNEL_MESSAGE
from agent.tunnel import TunnelTransport, WebsocketsStream, WebSocketTunnel
from tests.component.test_agent_harness import WAIT


class MemoryStream:
    """A MessageStream at the I/O edge: records what is sent, delivers what the test feeds."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.incoming: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.send_gate = asyncio.Event()
        self.send_gate.set()
        self.sent_event = asyncio.Event()
        self.closed = False

    async def send(self, data: bytes) -> None:
        await self.send_gate.wait()
        self.sent.append(data)
        self.sent_event.set()

    async def recv(self) -> bytes | None:
        return await self.incoming.get()

    async def close(self) -> None:
        self.closed = True


class RecordingProtocol(asyncio.Protocol):
    """A protocol that records every callback."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.events: list[str] = []
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
        self.data_event = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.events.append("made")

    def data_received(self, data: bytes) -> None:
        self.received.append(data)
        self.data_event.set()

    def pause_writing(self) -> None:
        self.events.append("pause")

    def resume_writing(self) -> None:
        self.events.append("resume")

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append("lost")
        self.lost.set_result(exc)


async def _open(stream: MemoryStream) -> tuple[asyncio.Transport, RecordingProtocol]:
    tunnel = WebSocketTunnel(stream)
    transport, protocol = await tunnel.create_connection(RecordingProtocol, "peer", 22)
    assert isinstance(protocol, RecordingProtocol)
    return transport, protocol


async def _until(event: asyncio.Event) -> None:
    async with asyncio.timeout(WAIT):
        await event.wait()
    event.clear()


async def test_writes_of_one_loop_turn_leave_as_one_message() -> None:
    """Many small writes made in one loop turn are sent as a single message."""
    stream = MemoryStream()
    transport, _ = await _open(stream)
    for index in range(100):
        transport.write(b"%03d" % index)
    await _until(stream.sent_event)
    assert stream.sent == [b"".join(b"%03d" % index for index in range(100))]
    transport.close()


async def test_a_lone_write_is_sent_without_a_copy() -> None:
    """A single write reaches the stream as the very same bytes object."""
    stream = MemoryStream()
    transport, _ = await _open(stream)
    data = b"keystroke"
    transport.write(data)
    await _until(stream.sent_event)
    assert stream.sent[0] is data
    transport.close()


async def test_messages_never_exceed_the_limit() -> None:
    """Buffered bytes beyond the limit are split into messages of at most 256 KiB."""
    stream = MemoryStream()
    transport, _ = await _open(stream)
    payload = bytes(range(256)) * (3 * MAX_TUNNEL_MESSAGE // 256 + 7)
    transport.write(payload[:1000])
    transport.write(payload[1000:])
    async with asyncio.timeout(WAIT):
        while sum(map(len, stream.sent)) < len(payload):
            await stream.sent_event.wait()
            stream.sent_event.clear()
    assert all(len(message) <= MAX_TUNNEL_MESSAGE for message in stream.sent)
    assert b"".join(stream.sent) == payload
    transport.close()


async def test_slow_stream_pauses_and_resumes_the_writer() -> None:
    """While the stream does not take messages, the protocol is paused above the high mark."""
    stream = MemoryStream()
    stream.send_gate.clear()
    transport, protocol = await _open(stream)
    high, low = 4096, 1024
    transport.set_write_buffer_limits(high=high, low=low)
    transport.write(b"x" * 100)
    assert protocol.events == ["made"]
    transport.write(b"y" * high)
    assert protocol.events == ["made", "pause"]
    assert transport.get_write_buffer_size() == high + 100
    stream.send_gate.set()
    async with asyncio.timeout(WAIT):
        while "resume" not in protocol.events:
            await stream.sent_event.wait()
            stream.sent_event.clear()
    assert protocol.events == ["made", "pause", "resume"]
    transport.close()


async def test_received_messages_reach_the_protocol_and_pause_reading_holds_them() -> None:
    """Incoming messages are delivered in order; pause_reading stops delivery until resumed."""
    stream = MemoryStream()
    transport, protocol = await _open(stream)
    assert isinstance(transport, asyncio.ReadTransport)
    await stream.incoming.put(b"one")
    await _until(protocol.data_event)
    transport.pause_reading()
    assert not transport.is_reading()
    await stream.incoming.put(b"two")
    await stream.incoming.put(b"three")
    for _ in range(5):
        await asyncio.sleep(0)  # yield turns (no time passes): nothing may arrive while paused
    assert protocol.received == [b"one"]
    transport.resume_reading()
    async with asyncio.timeout(WAIT):
        while len(protocol.received) < 3:
            await protocol.data_event.wait()
            protocol.data_event.clear()
    assert protocol.received == [b"one", b"two", b"three"]
    transport.close()


async def test_peer_close_reports_connection_lost_once() -> None:
    """When the stream ends, the protocol hears connection_lost exactly once."""
    stream = MemoryStream()
    transport, protocol = await _open(stream)
    await stream.incoming.put(None)
    async with asyncio.timeout(WAIT):
        assert await protocol.lost is None
    transport.close()
    transport.abort()
    assert protocol.events.count("lost") == 1
    assert stream.closed
    assert transport.is_closing()


async def test_close_flushes_buffered_bytes_before_closing() -> None:
    """close() sends what is buffered, then closes the stream and reports connection_lost."""
    stream = MemoryStream()
    transport, protocol = await _open(stream)
    transport.write(b"last words")
    transport.close()
    transport.write(b"ignored after close")
    async with asyncio.timeout(WAIT):
        await protocol.lost
    assert stream.sent == [b"last words"]
    assert stream.closed


async def test_abort_drops_buffered_bytes() -> None:
    """abort() closes at once without sending what is buffered."""
    stream = MemoryStream()
    stream.send_gate.clear()
    transport, protocol = await _open(stream)
    transport.write(b"never sent")
    transport.abort()
    async with asyncio.timeout(WAIT):
        await protocol.lost
    assert stream.sent == []
    assert transport.get_write_buffer_size() == 0


async def test_a_tunnel_carries_one_connection() -> None:
    """A second create_connection on the same tunnel is refused."""
    tunnel = WebSocketTunnel(MemoryStream())
    await tunnel.create_connection(RecordingProtocol, "peer", 22)
    with pytest.raises(RuntimeError):
        await tunnel.create_connection(RecordingProtocol, "peer", 22)
    tunnel.close()
    await tunnel.wait_closed()


@pytest.fixture
async def websocket_pair() -> AsyncIterator[tuple[WebsocketsStream, WebsocketsStream]]:
    accepted: asyncio.Queue[ServerConnection] = asyncio.Queue()
    done = asyncio.Event()

    async def handler(websocket: ServerConnection) -> None:
        await accepted.put(websocket)
        await done.wait()

    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}", compression=None) as client:
            async with asyncio.timeout(WAIT):
                server_side = await accepted.get()
            yield WebsocketsStream(client), WebsocketsStream(server_side)
            done.set()


async def test_websockets_stream_sets_nodelay_and_rejects_text(
    websocket_pair: tuple[WebsocketsStream, WebsocketsStream],
) -> None:
    """The websockets adapter turns Nagle off and refuses text messages on the tunnel."""
    client, server = websocket_pair
    sock = client._ws.transport.get_extra_info("socket")
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    await server._ws.send("text")
    with pytest.raises(TunnelProtocolError):
        await client.recv()
    await server.close()
    assert await client.recv() is None


async def test_ssh_runs_both_ways_over_a_real_websocket(
    websocket_pair: tuple[WebsocketsStream, WebsocketsStream],
) -> None:
    """asyncssh.connect and connect_reverse talk over the adapter on a real WebSocket."""
    client_side, server_side = websocket_pair
    server_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")

    async def handle(process: asyncssh.SSHServerProcess[bytes]) -> None:
        data = await process.stdin.read()
        process.stdout.write(data[::-1])
        process.exit(7)

    reverse = asyncio.ensure_future(
        asyncssh.connect_reverse(
            tunnel=WebSocketTunnel(client_side),
            server_host_keys=[server_key],
            authorized_client_keys=asyncssh.import_authorized_keys(
                client_key.export_public_key().decode()
            ),
            process_factory=handle,
            encoding=None,
            config=None,
            gss_host=None,
        )
    )
    async with asyncio.timeout(WAIT):
        conn = await asyncssh.connect(
            "agent.test",
            tunnel=WebSocketTunnel(server_side),
            known_hosts=([server_key.convert_to_public()], [], []),
            client_keys=[client_key],
            username="secondline",
            config=None,
            gss_host=None,
            agent_path=None,
        )
        server_conn = await reverse
        result = await conn.run("reverse", input=b"abc", encoding=None)
    assert (result.stdout, result.exit_status) == (b"cba", 7)
    conn.close()
    async with asyncio.timeout(WAIT):
        await server_conn.wait_closed()


def _waiting(transport: TunnelTransport) -> tuple[list[object], list[object]]:
    """What the transport holds that waits: pending futures and Events, and its tasks."""
    state = [getattr(transport, name) for name in TunnelTransport.__slots__]
    futures: list[object] = [
        v
        for v in state
        if isinstance(v, asyncio.Event)
        or (isinstance(v, asyncio.Future) and not isinstance(v, asyncio.Task) and not v.done())
    ]
    tasks: list[object] = [v for v in state if isinstance(v, asyncio.Task) and not v.done()]
    return futures, tasks


async def _turns(count: int = 5) -> None:
    for _ in range(count):
        await asyncio.sleep(0)  # yield turns (no time passes): let the tasks park or end


async def test_an_idle_tunnel_holds_no_event_no_waiter_and_no_writer() -> None:
    """Idle (connected, nothing moving), the transport holds no asyncio Event, no pending
    future and one task, its reader (waiting on the stream): a writer task lives only
    while bytes wait. The next write and message still move at once, and the writer is
    gone again once they left."""
    stream = MemoryStream()
    transport, protocol = await _open(stream)
    assert isinstance(transport, TunnelTransport)
    await _turns()
    futures, tasks = _waiting(transport)
    assert (futures, len(tasks)) == ([], 1)
    for round_ in range(3):
        transport.write(b"after idle %d" % round_)
        assert len(_waiting(transport)[1]) == 2  # the writer, until the bytes left
        await _until(stream.sent_event)
        await _turns()
        futures, tasks = _waiting(transport)
        assert (futures, len(tasks)) == ([], 1)
    await stream.incoming.put(b"reply")
    await _until(protocol.data_event)
    assert stream.sent == [b"after idle %d" % n for n in range(3)]
    assert protocol.received == [b"reply"]
    transport.close()
    async with asyncio.timeout(WAIT):
        assert await protocol.lost is None
    assert stream.closed


async def test_a_cancelled_wait_for_close_leaves_the_others_waiting() -> None:
    """Several wait_closed() callers share one waiter: cancelling one does not end the
    others' wait, and they return once the protocol heard connection_lost."""
    stream = MemoryStream()
    transport, protocol = await _open(stream)
    assert isinstance(transport, TunnelTransport)
    first = asyncio.ensure_future(transport.wait_closed())
    second = asyncio.ensure_future(transport.wait_closed())
    await asyncio.sleep(0)  # yield a turn (no time passes): both are waiting
    first.cancel()
    await asyncio.sleep(0)
    assert not second.done()
    await stream.incoming.put(None)
    async with asyncio.timeout(WAIT):
        await second
        await transport.wait_closed()  # after the close: at once
    assert protocol.events.count("lost") == 1
    assert first.cancelled()
