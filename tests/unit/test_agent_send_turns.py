"""Unit tests of the tunnel's bounded queues: the send turns (their bound, their order)
and the sockets' kernel buffers."""

from __future__ import annotations

import socket

import pytest

from agent.send_turns import SendTurns
from agent.tunnel import (
    TUNNEL_BUFFER_MAX,
    TUNNEL_BUFFER_MIN,
    TUNNEL_RATE,
    buffer_for,
    size_tunnel_buffer,
)


class Channel:
    """A channel that records when it was let go."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self._log = log

    def turn_granted(self) -> None:
        self._log.append(self.name)


def test_channels_wait_while_full_and_go_in_the_order_they_came() -> None:
    """Nobody waits below high; once full, waiting channels go first come, first served,
    only when the queue drained to low, and only as many as a quantum each fits."""
    turns = SendTurns(high=100, low=50, quantum=20)
    log: list[str] = []
    a, b, c, d = (Channel(n, log) for n in "abcd")
    turns.level(99)
    assert not turns.full()
    turns.level(100)
    assert turns.full()
    for channel in (a, b, c, d, a):  # a second wait of the same channel keeps its place
        turns.wait(channel)
    assert turns.waiting() == 4
    turns.level(60)  # drained, but not to low: nobody goes yet
    assert log == []
    turns.level(50)  # room for 50 bytes: three quanta of 20 (the last one partly)
    assert log == ["a", "b", "c"]
    turns.level(0)
    assert log == ["a", "b", "c", "d"]
    assert turns.waiting() == 0


def test_a_closed_channel_leaves_the_line_and_the_peak_is_kept() -> None:
    """A channel that closed is never let go; the highest level seen stays for tests."""
    turns = SendTurns(high=100, low=50, quantum=20)
    log: list[str] = []
    a, b = Channel("a", log), Channel("b", log)
    turns.level(130)
    turns.wait(a)
    turns.wait(b)
    turns.forget(a)
    turns.forget(a)  # twice is harmless
    turns.level(10)
    assert log == ["b"]
    assert turns.peak == 130
    assert turns.queued == 10
    assert turns.bound(3) == 100 + 3 * 3 * 20


def test_settings_are_checked() -> None:
    """A low water mark above the high one, or a quantum of nothing, is refused."""
    with pytest.raises(ValueError, match="low <= high"):
        SendTurns(high=10, low=20)
    with pytest.raises(ValueError, match="positive quantum"):
        SendTurns(quantum=0)


def test_tunnel_buffers_are_the_bandwidth_delay_product_within_bounds() -> None:
    """A tunnel socket's kernel buffer holds what the link needs at the target rate: the
    floor on a LAN, the product for a WAN round trip, the cap beyond it."""
    assert buffer_for(30) == TUNNEL_BUFFER_MIN  # loopback: 30 µs
    assert buffer_for(20_000) == TUNNEL_RATE // 50  # 20 ms: 2 MB
    assert buffer_for(900_000) == TUNNEL_BUFFER_MAX


def test_a_tunnel_socket_gets_its_sized_buffer() -> None:
    """The size is set on a real TCP socket from the round trip the kernel measured."""
    with (
        socket.create_server(("127.0.0.1", 0)) as server,
        socket.create_connection(server.getsockname()) as client,
    ):
        peer, _ = server.accept()
        with peer:
            size = size_tunnel_buffer(client, socket.SO_SNDBUF)
            assert size == TUNNEL_BUFFER_MIN
            # Linux doubles the value for its own bookkeeping.
            assert client.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == 2 * size
            assert size_tunnel_buffer(peer, socket.SO_RCVBUF) == TUNNEL_BUFFER_MIN
