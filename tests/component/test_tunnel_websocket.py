"""The tunnel's own WebSocket (broker/agents/tunnel_websocket.py) on a real asyncio
transport over a socket pair, the agent's end a raw socket that writes frames byte by
byte as a client would (or as a broken or hostile one would), and reads the broker's
frames with the ``websockets`` library's client-side parser."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import Protocol, Side, State

from broker.agents.tunnel_websocket import TunnelWebSocket

MAX = 64 * 1024
WAIT = 10.0


@dataclass
class Ends:
    """The broker's WebSocket and the agent's raw socket end."""

    ws: TunnelWebSocket
    transport: asyncio.Transport
    agent: socket.socket
    parser: Protocol

    async def write(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.agent, data)

    async def frames(self) -> list[Frame]:
        """What the broker sent until it closed the connection."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(WAIT):
            while True:
                data = await loop.sock_recv(self.agent, 65536)
                if not data:
                    self.parser.receive_eof()
                    break
                self.parser.receive_data(data)
        return [e for e in self.parser.events_received() if isinstance(e, Frame)]

    async def next_frame(self) -> Frame:
        """The broker's next frame."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(WAIT):
            while True:
                events = self.parser.events_received()
                if events:
                    frame = events[0]
                    assert isinstance(frame, Frame)
                    return frame
                data = await loop.sock_recv(self.agent, 65536)
                assert data, "the broker closed the connection"
                self.parser.receive_data(data)


def masked(opcode: Opcode, payload: bytes, *, fin: bool = True) -> bytes:
    """One frame as a well-behaved client sends it."""
    return Frame(opcode, payload, fin=fin).serialize(mask=True, extensions=[])


def raw_header(first: int, length: int, *, mask: bool = True) -> bytes:
    """A frame header with any bits (lengths up to 125 only)."""
    return struct.pack("!BB", first, (0x80 if mask else 0) | length) + (b"\0" * 4 if mask else b"")


@pytest.fixture
async def ends() -> AsyncIterator[Ends]:
    loop = asyncio.get_running_loop()
    broker_sock, agent_sock = socket.socketpair()
    agent_sock.setblocking(False)
    ws = TunnelWebSocket(max_size=MAX, close_reply_s=WAIT)
    transport, _ = await loop.connect_accepted_socket(lambda: ws, broker_sock)
    assert isinstance(transport, asyncio.Transport)
    parser = Protocol(Side.CLIENT, state=State.OPEN, max_size=None)
    yield Ends(ws, transport, agent_sock, parser)
    transport.abort()
    agent_sock.close()


async def test_binary_messages_travel_both_ways_and_pings_are_answered(ends: Ends) -> None:
    """A binary message arrives whole (also in fragments with a ping between them, which
    is answered), and what the broker sends is one unmasked binary frame."""
    await ends.write(masked(Opcode.BINARY, b"hello"))
    assert await ends.ws.recv() == b"hello"
    await ends.write(
        masked(Opcode.BINARY, b"a" * 100, fin=False)
        + masked(Opcode.PING, b"are you there")
        + masked(Opcode.CONT, b"b" * 60_000, fin=False)
        + masked(Opcode.CONT, b"c", fin=True)
    )
    assert await ends.ws.recv() == b"a" * 100 + b"b" * 60_000 + b"c"
    pong = await ends.next_frame()
    assert (pong.opcode, pong.data) == (Opcode.PONG, b"are you there")
    for size in (3, 300, 70_000):
        await ends.ws.send(b"x" * size)
        frame = await ends.next_frame()
        assert (frame.opcode, frame.fin, len(frame.data)) == (Opcode.BINARY, True, size)


async def test_reading_pauses_while_a_message_waits(ends: Ends) -> None:
    """While a received message waits for the tunnel to take it, the socket is not read
    (backpressure); once the last one is taken it is read again."""
    await ends.write(masked(Opcode.BINARY, b"one") + masked(Opcode.BINARY, b"two"))
    assert await ends.ws.recv() == b"one"
    assert not ends.transport.is_reading()
    assert ends.ws._inbox == [b"two"]
    assert await ends.ws.recv() == b"two"
    assert ends.transport.is_reading()
    await ends.write(masked(Opcode.BINARY, b"three"))
    assert await ends.ws.recv() == b"three"


@pytest.mark.parametrize(
    ("data", "code", "problem"),
    [
        (Frame(Opcode.BINARY, b"x").serialize(mask=False, extensions=[]), 1002, "masking"),
        (raw_header(0x80 | 0x40 | 0x2, 1) + b"x", 1002, "reserved bits"),
        (raw_header(0x80 | 0x3, 1) + b"x", 1002, "opcode"),
        (struct.pack("!BBH", 0x89, 0x80 | 126, 126) + b"\0" * 130, 1002, "control"),
        (raw_header(0x09, 1) + b"x", 1002, "fragmented control"),
        (masked(Opcode.CONT, b"x"), 1002, "continuation"),
        (masked(Opcode.BINARY, b"x", fin=False) + masked(Opcode.BINARY, b"y"), 1002, "expected"),
        (masked(Opcode.CLOSE, struct.pack("!H", 999)), 1002, "status code"),
        (masked(Opcode.CLOSE, b"\x03"), 1002, "close frame too short"),
        (masked(Opcode.CLOSE, struct.pack("!H", 1000) + b"\xff\xfe"), 1007, "invalid"),
        # Only the header of an oversized message: it is refused before its payload.
        (
            struct.pack("!BBQ", 0x82, 0x80 | 127, MAX + 1) + b"\x01\x02\x03\x04",
            1009,
            "larger than the limit",
        ),
        (
            masked(Opcode.BINARY, b"x" * 40_000, fin=False) + masked(Opcode.CONT, b"y" * 30_000),
            1009,
            "larger than the limit",
        ),
    ],
    ids=[
        "unmasked",
        "reserved-bit",
        "unknown-opcode",
        "long-control",
        "fragmented-control",
        "lone-continuation",
        "data-inside-fragments",
        "bad-close-code",
        "short-close",
        "close-reason-not-utf8",
        "oversized-header",
        "oversized-fragments",
    ],
)
async def test_a_bad_frame_fails_the_websocket_with_the_rfcs_code(
    ends: Ends, data: bytes, code: int, problem: str
) -> None:
    """Every frame RFC 6455 forbids a client ends the WebSocket: a close frame with the
    RFC's code, no message handed on, the problem recorded, and the connection closed
    once the endpoint finishes the WebSocket."""
    await ends.write(data)
    assert await ends.ws.recv() is None
    await ends.ws.finish()
    frames = await ends.frames()
    assert [f.opcode for f in frames] == [Opcode.CLOSE]
    assert Close.parse(frames[0].data).code == code
    assert problem in ends.ws.problem


async def test_a_text_message_is_refused_with_1003(ends: Ends) -> None:
    """Only binary messages carry the tunnel: text ends it, and nothing after it is read."""
    await ends.write(masked(Opcode.TEXT, b"hello") + masked(Opcode.BINARY, b"after"))
    with pytest.raises(Exception, match="text message"):
        await ends.ws.recv()
    assert ends.ws.close_code == 1003
    finishing = asyncio.ensure_future(ends.ws.finish())
    frame = await ends.next_frame()
    assert (frame.opcode, Close.parse(frame.data).code) == (Opcode.CLOSE, 1003)
    await ends.write(masked(Opcode.CLOSE, Close(1003, "").serialize()))
    async with asyncio.timeout(WAIT):
        await finishing
    assert await ends.frames() == []


async def test_finish_closes_with_the_code_and_waits_for_the_agents_answer(ends: Ends) -> None:
    """finish() sends a close frame with its code; once the agent answers with its own,
    the broker closes the connection."""
    ends.ws.close_code = 1008
    finishing = asyncio.ensure_future(ends.ws.finish())
    frame = await ends.next_frame()
    assert (frame.opcode, Close.parse(frame.data).code) == (Opcode.CLOSE, 1008)
    assert not finishing.done()
    await ends.write(masked(Opcode.CLOSE, Close(1008, "").serialize()))
    async with asyncio.timeout(WAIT):
        await finishing
    assert await ends.frames() == []
    with pytest.raises(ConnectionResetError):
        await ends.ws.send(b"late")


async def test_the_agents_close_is_answered_and_ends_the_stream(ends: Ends) -> None:
    """A close frame from the agent is echoed and the stream ends (recv returns None); the
    broker closes the connection when the endpoint finishes the WebSocket (after its
    record of why); nothing is recorded as a problem."""
    await ends.write(masked(Opcode.CLOSE, Close(1000, "bye").serialize()))
    assert await ends.ws.recv() is None
    frame = await ends.next_frame()
    assert (frame.opcode, Close.parse(frame.data).code) == (Opcode.CLOSE, 1000)
    assert not ends.transport.is_closing()
    await ends.ws.finish()
    assert await ends.frames() == []
    assert ends.ws.problem == ""


async def test_an_agent_gone_without_a_close_frame_is_no_protocol_breach(ends: Ends) -> None:
    """The agent's end of the connection closing without a close frame (a crash, a lost
    link) ends the stream without recording a problem: it is not audited as a breach."""
    await ends.write(masked(Opcode.BINARY, b"last"))
    ends.agent.shutdown(socket.SHUT_WR)
    assert await ends.ws.recv() == b"last"
    assert await ends.ws.recv() is None
    assert ends.ws.problem == ""
