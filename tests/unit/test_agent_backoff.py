"""Unit tests of the reconnect schedule: exponential backoff with full jitter."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.backoff import Backoff


def test_windows_double_from_one_second_up_to_the_cap() -> None:
    """With rand just below 1, delays follow 1, 2, 4, ... seconds and stop at 60."""
    backoff = Backoff()
    delays = [backoff.failed(0.999999) for _ in range(9)]
    assert [round(delay) for delay in delays] == [1, 2, 4, 8, 16, 32, 60, 60, 60]


def test_full_jitter_scales_the_whole_window() -> None:
    """The delay is rand times the window: 0 is possible, half the window for rand 0.5."""
    backoff = Backoff()
    backoff.attempt = 3
    assert backoff.failed(0.0) == 0.0
    assert backoff.failed(0.5) == 8.0  # attempt 4: window 16 s


def test_a_stable_connection_resets_the_schedule() -> None:
    """A connection that lasted past stable_after starts the schedule over."""
    backoff = Backoff(stable_after=60)
    for _ in range(6):
        backoff.failed(0.5)
    assert backoff.disconnected(lasted=61, rand=0.5) == 0.5
    assert backoff.attempt == 1


def test_a_short_connection_keeps_growing() -> None:
    """A connection that dropped quickly does not reset the schedule."""
    backoff = Backoff(stable_after=60)
    for _ in range(3):
        backoff.failed(0.5)
    assert backoff.disconnected(lasted=5, rand=0.5) == 4.0


def test_refusal_waits_at_the_cap() -> None:
    """A refused agent waits between half the cap and the cap, and stays at the cap."""
    backoff = Backoff()
    assert backoff.refused(0.0) == 30.0
    assert backoff.refused(0.999) == pytest.approx(59.97)
    assert backoff.window() == 60.0
    assert backoff.failed(0.5) == 30.0


@given(st.lists(st.floats(min_value=0, max_value=0.999999), max_size=80))
def test_delays_stay_within_zero_and_the_cap(rands: list[float]) -> None:
    """Whatever the random draws and however many failures, 0 <= delay <= cap."""
    backoff = Backoff()
    for rand in rands:
        assert 0 <= backoff.failed(rand) <= backoff.cap
