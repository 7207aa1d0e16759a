"""Coalesced writes (broker.write_coalescing) over real loopback sockets: one send per loop
iteration, in order, with asyncio's flow control, close, abort and half-close kept."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from broker.write_coalescing import CoalescedTransport, WriteCoalescer

WAIT = 10.0


class Receiver(asyncio.Protocol):
    """The peer: collects what arrives; starts paused when asked to."""

    def __init__(self, paused: bool) -> None:
        self.data = bytearray()
        self.paused = paused
        self.transport: asyncio.Transport | None = None
        self.more = asyncio.Event()
        self.eof = asyncio.Event()
        self.lost = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.paused:
            transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.more.set()

    def eof_received(self) -> bool:
        self.eof.set()
        return True  # keep our side open: a half-close

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof.set()
        self.lost.set()

    async def until(self, size: int) -> bytes:
        async with asyncio.timeout(WAIT):
            while len(self.data) < size:
                self.more.clear()
                await self.more.wait()
        return bytes(self.data)


class Sender(asyncio.Protocol):
    """The side that writes, through a coalesced transport; records flow control."""

    def __init__(self) -> None:
        self.out: CoalescedTransport | None = None
        self.paused = asyncio.Event()
        self.resumed = asyncio.Event()
        self.lost = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.out = CoalescedTransport(transport)

    def pause_writing(self) -> None:
        self.paused.set()

    def resume_writing(self) -> None:
        self.resumed.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()


@dataclass
class Pair:
    sender: Sender
    receiver: Receiver

    @property
    def out(self) -> CoalescedTransport:
        assert self.sender.out is not None
        return self.sender.out


@dataclass
class Pairs:
    """Opens sender/receiver pairs on one loopback server."""

    server: asyncio.Server
    port: int
    paused: list[bool] = field(default_factory=list)
    receivers: asyncio.Queue[Receiver] = field(default_factory=asyncio.Queue)
    opened: list[Pair] = field(default_factory=list)

    async def open(self, *, receiver_paused: bool = False) -> Pair:
        self.paused.append(receiver_paused)
        loop = asyncio.get_running_loop()
        _, sender = await loop.create_connection(Sender, "127.0.0.1", self.port)
        async with asyncio.timeout(WAIT):
            receiver = await self.receivers.get()
        pair = Pair(sender, receiver)
        self.opened.append(pair)
        return pair

    async def close(self) -> None:
        """Close both ends of every pair and wait until they are gone."""
        for pair in self.opened:
            pair.out.abort()
            if pair.receiver.transport is not None:
                pair.receiver.transport.abort()
        async with asyncio.timeout(WAIT):
            for pair in self.opened:
                await pair.sender.lost.wait()
                await pair.receiver.lost.wait()


@pytest.fixture
async def pairs() -> AsyncIterator[Pairs]:
    loop = asyncio.get_running_loop()
    holder: list[Pairs] = []

    def accept() -> Receiver:
        made = holder[0]
        receiver = Receiver(made.paused.pop(0))
        made.receivers.put_nowait(receiver)
        return receiver

    server = await loop.create_server(accept, "127.0.0.1", 0)
    holder.append(Pairs(server, server.sockets[0].getsockname()[1]))
    yield holder[0]
    await holder[0].close()
    server.close()
    await server.wait_closed()


def _chunks(count: int, size: int) -> list[bytes]:
    return [bytes([i % 251]) * (size + i) for i in range(count)]


async def test_writes_of_one_iteration_leave_in_one_send_in_order(pairs: Pairs) -> None:
    """A hundred writes made without yielding reach the real transport as one write at
    the next iteration, counted as buffered until then, and arrive whole and in order."""
    pair = await pairs.open()
    chunks = _chunks(100, 1000)
    for chunk in chunks:
        pair.out.write(chunk)
    expected = b"".join(chunks)
    assert pair.out.sends == 0
    assert pair.out.get_write_buffer_size() == len(expected)
    assert await pair.receiver.until(len(expected)) == expected
    assert (pair.out.writes, pair.out.sends) == (100, 1)
    pair.out.write(b"next")
    assert await pair.receiver.until(len(expected) + 4) == expected + b"next"
    assert pair.out.sends == 2
    pair.out.close()


async def test_flow_control_pauses_and_resumes_the_protocol(pairs: Pairs) -> None:
    """Against a peer that does not read, what waits is counted at once, the protocol is
    paused once the real transport's buffer passes its high-water mark, and resumed when
    the peer reads again; every byte arrives in order."""
    pair = await pairs.open(receiver_paused=True)
    pair.out.set_write_buffer_limits(high=256 * 1024, low=64 * 1024)
    assert pair.out.get_write_buffer_limits() == (64 * 1024, 256 * 1024)
    # More than loopback's socket buffers hold on both sides together.
    chunks = _chunks(512, 64 * 1024)
    for chunk in chunks:
        pair.out.write(chunk)
    expected = b"".join(chunks)
    assert pair.out.get_write_buffer_size() == len(expected)
    async with asyncio.timeout(WAIT):
        await pair.sender.paused.wait()
    assert pair.out.sends == 1
    assert pair.out.get_pending_size() == 0
    assert pair.out.get_write_buffer_size() > 256 * 1024
    assert not pair.sender.resumed.is_set()
    assert pair.receiver.transport is not None
    pair.receiver.transport.resume_reading()
    assert await pair.receiver.until(len(expected)) == expected
    async with asyncio.timeout(WAIT):
        await pair.sender.resumed.wait()
    assert pair.out.get_write_buffer_size() == 0
    pair.out.close()


async def test_close_sends_what_waits_then_closes(pairs: Pairs) -> None:
    """Writes followed by close() in the same iteration all arrive before the end of the
    stream; a write after close is dropped without an error, as asyncio's are."""
    pair = await pairs.open()
    chunks = _chunks(20, 4096)
    for chunk in chunks:
        pair.out.write(chunk)
    pair.out.close()
    assert pair.out.is_closing()
    pair.out.write(b"too late")
    async with asyncio.timeout(WAIT):
        await pair.receiver.eof.wait()
        await pair.sender.lost.wait()
    assert bytes(pair.receiver.data) == b"".join(chunks)


async def test_abort_hands_what_waits_to_the_socket_first(pairs: Pairs) -> None:
    """A message written just before abort() (asyncssh's DISCONNECT before it drops the
    connection) still reaches the peer, as it did when every write was sent at once."""
    pair = await pairs.open()
    pair.out.write(b"disconnect: ")
    pair.out.write(b"protocol error")
    pair.out.abort()
    async with asyncio.timeout(WAIT):
        await pair.receiver.eof.wait()
        await pair.sender.lost.wait()
    assert bytes(pair.receiver.data) == b"disconnect: protocol error"


async def test_write_eof_sends_what_waits_then_half_closes(pairs: Pairs) -> None:
    """write_eof() sends what waits before the end of the stream, and the peer can still
    answer on the half-closed connection; a write after it fails as asyncio's does."""
    pair = await pairs.open()
    assert pair.out.can_write_eof()
    pair.out.write(b"last words")
    pair.out.write_eof()
    with pytest.raises(RuntimeError):
        pair.out.write(b"after eof")
    async with asyncio.timeout(WAIT):
        await pair.receiver.eof.wait()
    assert bytes(pair.receiver.data) == b"last words"
    assert not pair.receiver.lost.is_set()
    pair.out.close()


async def test_least_waiting_goes_first(pairs: Pairs) -> None:
    """When several connections have writes waiting, the next iteration sends the one
    with least waiting first (an echo before another connection's bulk)."""
    bulk = await pairs.open()
    echo = await pairs.open()
    bulk.out.write(b"b" * 65536)
    echo.out.write(b"e")
    assert WriteCoalescer.for_loop().order() == [echo.out, bulk.out]
    assert await echo.receiver.until(1) == b"e"
    assert await bulk.receiver.until(65536) == b"b" * 65536
    bulk.out.close()
    echo.out.close()


async def test_a_lost_connection_drops_what_waits(pairs: Pairs) -> None:
    """Once the peer is gone, writes are dropped without an error, as asyncio's are."""
    pair = await pairs.open()
    assert pair.receiver.transport is not None
    pair.receiver.transport.abort()
    async with asyncio.timeout(WAIT):
        await pair.sender.lost.wait()
    pair.out.write(b"to nobody")
    assert pair.out.is_closing()
    WriteCoalescer.for_loop().flush()
    assert (pair.out.get_write_buffer_size(), pair.out.sends) == (0, 0)
    pair.out.close()
