"""Unit tests of the tunnel's send turns: the queue's bound, the order of turns."""

from __future__ import annotations

import pytest

from agent.send_turns import SendTurns


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
    assert turns.bound(3) == 160


def test_settings_are_checked() -> None:
    """A low water mark above the high one, or a quantum of nothing, is refused."""
    with pytest.raises(ValueError, match="low <= high"):
        SendTurns(high=10, low=20)
    with pytest.raises(ValueError, match="positive quantum"):
        SendTurns(quantum=0)
