"""Fair admission of agent tunnel handshakes (pure)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.agents.handshake_limiter import (
    BUSY_RETRY_S,
    EARLY_TOLERANCE_S,
    SLOT_GRACE_S,
    HandshakeLimiter,
)


def test_burst_is_admitted_then_slots_are_handed_out() -> None:
    """A burst goes through at once; the next ones get slots one interval apart."""
    limiter = HandshakeLimiter(rate=10, burst=3)
    assert [limiter.admit(f"a{i}", 100.0) for i in range(3)] == [0.0, 0.0, 0.0]
    waits = [limiter.admit(f"b{i}", 100.0) for i in range(3)]
    assert waits == pytest.approx([0.1, 0.2, 0.3])
    assert limiter.reservations == 3


def test_an_agent_keeps_its_slot_and_gets_in_at_it() -> None:
    """Coming back early repeats the remaining wait; at its slot it is admitted first."""
    limiter = HandshakeLimiter(rate=1, burst=1)
    assert limiter.admit("first", 0.0) == 0.0
    wait = limiter.admit("late", 0.0)
    assert wait == pytest.approx(1.0)
    assert limiter.admit("late", 0.5) == pytest.approx(0.5)
    # Meanwhile newcomers queue behind the slot already handed out.
    assert limiter.admit("newcomer", 0.9) == pytest.approx(1.1)
    assert limiter.admit("late", 1.0 - EARLY_TOLERANCE_S / 2) == 0.0
    assert limiter.reservations == 1


def test_too_many_in_flight_means_busy_without_losing_the_slot() -> None:
    """At the in-flight cap everyone waits a second; a held slot survives it."""
    limiter = HandshakeLimiter(rate=1, burst=1, max_in_flight=2)
    limiter.admit("x", 0.0)
    assert limiter.admit("held", 0.0) == pytest.approx(1.0)
    assert limiter.admit("held", 1.0, in_flight=2) == BUSY_RETRY_S
    assert limiter.admit("fresh", 1.0, in_flight=2) == BUSY_RETRY_S
    assert limiter.admit("held", 1.5, in_flight=1) == 0.0


def test_unclaimed_slots_expire() -> None:
    """A slot nobody claims within the grace time is forgotten."""
    limiter = HandshakeLimiter(rate=1, burst=1)
    limiter.admit("x", 0.0)
    limiter.admit("gone", 0.0)
    assert limiter.reservations == 1
    limiter.admit("later", 1.0 + SLOT_GRACE_S + 1)
    assert limiter.reservations == 0


def test_reservations_are_bounded() -> None:
    """Past max_reservations an agent is told to wait but holds no slot."""
    limiter = HandshakeLimiter(rate=1, burst=1, max_reservations=1)
    limiter.admit("x", 0.0)
    assert limiter.admit("a", 0.0) == pytest.approx(1.0)
    assert limiter.admit("b", 0.0) == pytest.approx(2.0)
    assert limiter.reservations == 1


def test_rate_zero_turns_the_limit_off() -> None:
    """tunnel_handshakes_per_second = 0 admits everything."""
    limiter = HandshakeLimiter(rate=0, burst=1)
    assert all(limiter.admit(f"a{i}", 0.0) == 0.0 for i in range(1000))


@pytest.mark.parametrize(("rate", "burst", "in_flight"), [(-1.0, 1, 1), (1.0, 0, 1), (1.0, 1, 0)])
def test_nonsense_settings_are_refused(rate: float, burst: int, in_flight: int) -> None:
    """A negative rate, an empty burst or no handshake in flight is a ValueError."""
    with pytest.raises(ValueError, match="rate must be"):
        HandshakeLimiter(rate=rate, burst=burst, max_in_flight=in_flight)


@settings(max_examples=50, deadline=None)
@given(
    agents=st.integers(min_value=1, max_value=300),
    rate=st.integers(min_value=1, max_value=50),
    burst=st.integers(min_value=1, max_value=20),
)
def test_a_herd_that_honours_retry_after_is_admitted_in_time(
    agents: int, rate: int, burst: int
) -> None:
    """Every agent of a herd arriving at once gets in, by (herd - burst) / rate + 1 s."""
    limiter = HandshakeLimiter(rate=rate, burst=burst)
    admitted_at: dict[str, float] = {}
    pending = {f"ag{i}": 0.0 for i in range(agents)}
    while pending:
        name, when = min(pending.items(), key=lambda item: item[1])
        del pending[name]
        wait = limiter.admit(name, when)
        if wait == 0.0:
            admitted_at[name] = when
        else:
            # Agents wait the whole seconds of Retry-After.
            pending[name] = when + max(1, math.ceil(wait))
    assert len(admitted_at) == agents
    assert max(admitted_at.values()) <= max(0, agents - burst) / rate + 1.0 + 1e-9


def test_held_back_judges_only_slots_not_due_and_a_busy_broker() -> None:
    """What the endpoint asks before it looks an agent up: a slot not due yet, or too many
    handshakes under way. It changes nothing, and gives no place in line."""
    limiter = HandshakeLimiter(rate=1, burst=1, max_in_flight=2)
    assert limiter.admit("a", 100.0) == 0.0
    assert limiter.admit("b", 100.0) == pytest.approx(1.0)
    assert limiter.held_back("b", 100.2) == pytest.approx(0.8)
    assert limiter.held_back("b", 101.0 - EARLY_TOLERANCE_S) == 0.0
    assert limiter.held_back("new", 100.2) == 0.0  # no slot: not judged here
    assert limiter.held_back("new", 100.2, in_flight=2) == BUSY_RETRY_S
    assert limiter.reservations == 1
    # Nothing was taken from the bucket: the next newcomer's slot is the next one.
    assert limiter.admit("c", 100.2) == pytest.approx(1.8)
    assert HandshakeLimiter(rate=0, burst=1).held_back("x", 0.0, in_flight=10**6) == 0.0
