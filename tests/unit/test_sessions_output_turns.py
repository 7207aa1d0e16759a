"""The broker's turns for agents' output (broker.sessions.output_turns): small first, bulk
in turn, every line bounded."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from broker.sessions.hub_agent import AGENT_WINDOW_MAX, AGENT_WINDOW_MIN, channel_window
from broker.sessions.output_turns import MAX_CHUNK, OutputTurns


class Loop:
    """Turns run when the test says: each ``step`` is one event-loop iteration."""

    def __init__(self) -> None:
        self.ready: list[Callable[[], None]] = []

    def schedule(self, callback: Callable[[], None]) -> None:
        self.ready.append(callback)

    def step(self) -> int:
        ready, self.ready = self.ready, []
        for callback in ready:
            callback()
        return len(ready)

    def run(self) -> int:
        steps = 0
        while self.step():
            steps += 1
        return steps


class Session:
    """A hub as the turns see it: what it was handed, and whether it is held."""

    def __init__(self, name: str, log: list[tuple[str, bytes]]) -> None:
        self.name = name
        self.log = log
        self.held = False
        self.holds = 0
        self.on_resume: Callable[[], None] | None = None
        self.on_deliver: Callable[[], None] | None = None
        self.breaks_at: bytes | None = None  # handling this chunk raises (a bug)
        self.failures: list[tuple[str, int]] = []

    def deliver(self, data: bytes, stderr: bool) -> None:
        if data == self.breaks_at:
            raise RuntimeError(f"{self.name} broke")
        self.log.append((self.name, data))
        if self.on_deliver is not None:
            self.on_deliver()

    def failed(self, exc: Exception, lost: int) -> None:
        self.failures.append((str(exc), lost))

    def hold(self, held: bool) -> None:
        self.held = held
        self.holds += held
        if not held and self.on_resume is not None:
            self.on_resume()


K = 1024


def make(**kwargs: int) -> tuple[Loop, OutputTurns, list[tuple[str, bytes]]]:
    loop = Loop()
    return loop, OutputTurns(loop.schedule, **kwargs), []


def test_a_small_chunk_is_handled_at_once_and_bulk_waits_for_its_turn() -> None:
    loop, turns, log = make()
    bulk, echo = Session("bulk", log), Session("echo", log)
    turns.offer(bulk, b"y" * (32 * K), False)
    turns.offer(echo, b"k", False)
    assert log == [("echo", b"k")]  # the echo went ahead of the bulk that came first
    loop.run()
    assert [name for name, _ in log] == ["echo", "bulk"]
    assert (turns.direct, turns.queued) == (1, 1)


def test_small_chunks_behind_waiting_bulk_keep_their_order() -> None:
    loop, turns, log = make()
    session = Session("s", log)
    turns.offer(session, b"a" * (8 * K), False)
    turns.offer(session, b"b", True)
    assert log == []
    loop.run()
    assert log == [("s", b"a" * (8 * K)), ("s", b"b")]


def test_lines_are_served_in_turn_a_quantum_each_and_a_round_per_loop_turn() -> None:
    loop, turns, log = make(quantum=16 * K, round_bytes=32 * K, high=1 << 20)
    one, two = Session("one", log), Session("two", log)
    for _ in range(4):
        turns.offer(one, b"1" * (8 * K), False)
    for _ in range(2):
        turns.offer(two, b"2" * (8 * K), False)
    loop.step()
    # one quantum (two chunks) of each line, then the turn's bytes are spent
    assert [name for name, _ in log] == ["one", "one", "two", "two"]
    loop.step()
    assert [name for name, _ in log][4:] == ["one", "one"]
    assert loop.step() == 0  # nothing left, nothing scheduled


def test_a_long_line_holds_its_channel_within_the_bound_and_lets_go_when_drained() -> None:
    loop, turns, log = make(high=64 * K, low=32 * K)
    session = Session("s", log)
    for _ in range(3):
        turns.offer(session, b"x" * (32 * K), False)
        if session.held:
            break  # asyncssh stops delivering once the channel is paused
    assert session.held
    assert turns.waiting(session) == 64 * K
    loop.step()  # one quantum served: 32 KiB left, at LOW
    assert not session.held
    loop.run()
    assert turns.waiting(session) == 0
    assert turns.high <= turns.peak <= turns.bound(window=0) == 64 * K + MAX_CHUNK
    assert turns.bound(window=128 * K) == 32 * K + 128 * K


def test_what_a_resumed_channel_hands_over_at_once_goes_in_line() -> None:
    """asyncssh delivers all it held (a window) from inside resume_reading: into the
    line, whose hold the hub applies once that returned (LiveSession._hold_agent)."""
    loop, turns, log = make(high=64 * K, low=32 * K)
    session = Session("s", log)
    held_back = [b"h" * (32 * K) for _ in range(4)]

    def resumed() -> None:
        while held_back:
            turns.offer(session, held_back.pop(0), False)

    session.on_resume = resumed
    turns.offer(session, b"x" * (32 * K), False)
    turns.offer(session, b"x" * (32 * K), False)
    loop.run()
    assert not held_back
    assert sum(len(data) for _, data in log) == 6 * 32 * K
    assert turns.peak <= turns.bound(window=4 * 32 * K)
    assert session.holds >= 2


def test_flush_hands_over_everything_now_even_from_inside_a_turn() -> None:
    loop, turns, log = make(quantum=64 * K)
    session = Session("s", log)
    for _ in range(3):
        turns.offer(session, b"z" * (8 * K), False)
    session.on_deliver = lambda: turns.flush(session)  # the first chunk ends the session
    loop.run()
    assert len(log) == 3
    assert turns.waiting(session) == 0
    turns.flush(session)  # nothing left: nothing happens
    assert len(log) == 3


def test_a_lane_that_raises_is_taken_out_and_told_while_the_others_go_on() -> None:
    """A bug in one session's handling must not stall it (its later chunks joining a line
    nobody serves, its channel held for good) nor the others (the exception escaping the
    turn, nothing scheduled to serve them)."""
    loop, turns, log = make(high=64 * K, low=32 * K)
    broken, other = Session("broken", log), Session("other", log)
    bad = b"b" * (32 * K)
    turns.offer(broken, bad, False)
    turns.offer(broken, b"c" * (32 * K), False)  # its line is full: its channel is held
    turns.offer(other, b"o" * (32 * K), False)
    for _ in range(2):
        turns.offer(other, b"o" * (32 * K), False)
        if other.held:
            break  # asyncssh stops delivering once the channel is paused
    assert broken.held
    assert other.held
    broken.breaks_at = bad
    loop.step()  # must not raise out of the event loop's callback
    # The broken lane is out, with all it had: told how much was not handled.
    assert broken.failures == [("broken broke", 64 * K)]
    assert turns.waiting(broken) == 0
    assert turns.failures == 1
    # The other line is still served, turn after turn, with no new chunk to start a turn.
    loop.run()
    assert turns.waiting(other) == 0
    assert not other.held
    assert [name for name, _ in log] == ["other"] * 2
    # A later chunk of the broken session (its hub ended it; a straggler) is not stuck.
    broken.breaks_at = None
    turns.offer(broken, b"d" * (8 * K), False)
    loop.run()
    assert log[-1] == ("broken", b"d" * (8 * K))


def test_a_lane_that_raises_on_a_small_chunk_or_while_flushed_is_told_too() -> None:
    _, turns, log = make()
    session = Session("s", log)
    session.breaks_at = b"k"
    turns.offer(session, b"k", False)  # handled at once, inside asyncssh's data_received
    assert session.failures == [("s broke", 1)]
    session.breaks_at = b"2" * (8 * K)
    for chunk in (b"1", b"2", b"3"):
        turns.offer(session, chunk * (8 * K), False)
    turns.flush(session)  # the session ends: what waits is handled now, and one breaks
    assert session.failures[1:] == [("s broke", 16 * K)]
    assert log == [("s", b"1" * (8 * K))]
    assert turns.waiting(session) == 0


def test_bad_settings_are_refused() -> None:
    loop = Loop()
    with pytest.raises(ValueError, match="output turns need"):
        OutputTurns(loop.schedule, high=1, low=2)
    with pytest.raises(ValueError, match="output turns need"):
        OutputTurns(loop.schedule, quantum=0)


def test_channel_windows_follow_the_bandwidth_delay_product_within_bounds() -> None:
    assert channel_window(None) == AGENT_WINDOW_MIN  # not measured: a LAN's
    assert channel_window(4 * K) == AGENT_WINDOW_MIN
    assert channel_window(600 * K) == 600 * K
    assert channel_window(64 << 20) == AGENT_WINDOW_MAX
