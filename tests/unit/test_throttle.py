"""Failed-attempt throttling per key."""

from __future__ import annotations

from broker.auth.throttle import Throttle


def test_refuses_after_limit_and_recovers() -> None:
    """The limit-th failure blocks the key until the oldest failure leaves the window."""
    t = Throttle(limit=3, window=60)
    for i in range(3):
        assert t.retry_after("k", float(i)) == 0
        t.failed("k", float(i))
    assert t.retry_after("k", 3.0) == 57.0
    assert t.retry_after("other", 3.0) == 0
    assert t.retry_after("k", 60.5) == 0


def test_memory_is_bounded() -> None:
    """A flood of distinct keys never grows beyond max_keys."""
    t = Throttle(limit=1, window=60, max_keys=10)
    for i in range(100):
        t.failed(f"k{i}", 0.0)
    assert len(t._failures) == 10
