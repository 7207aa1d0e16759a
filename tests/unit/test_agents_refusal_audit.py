"""Which tunnel refusals are audited on their own and which are counted (pure)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.agents.refusal_audit import RefusalDigest, Summary

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
BAD_KEY = ("ag-0123456789abcdef", "10.0.0.1", "the SSH host key is not the one")


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def test_the_first_of_a_kind_is_audited_and_the_rest_summarised() -> None:
    """One event at once, the repeats counted, one summary when the window ends."""
    digest = RefusalDigest(window=60.0)
    assert digest.next_end() is None
    assert digest.refused(BAD_KEY, 0.0, at(0)) is True
    assert digest.next_end() == 60.0
    assert [digest.refused(BAD_KEY, t, at(t)) for t in (1.0, 3.0, 59.0)] == [False] * 3
    assert digest.take_due(59.9) == []
    assert digest.take_due(60.0) == [Summary(BAD_KEY, 3, at(1), at(59))]
    assert digest.take_due(61.0) == []
    assert len(digest) == 0
    assert digest.next_end() is None


def test_kinds_are_claimed_id_source_and_reason() -> None:
    """Another agent id, another source or another reason is a kind of its own."""
    digest = RefusalDigest(window=60.0)
    agent, source, reason = BAD_KEY
    kinds = [BAD_KEY, ("ag-fedcba9876543210", source, reason), (agent, "10.0.0.2", reason)]
    kinds.append((agent, source, "revoked agent"))
    assert [digest.refused(kind, 0.0, at(0)) for kind in kinds] == [True] * 4
    assert [digest.refused(kind, 1.0, at(1)) for kind in kinds] == [False] * 4
    assert len(digest) == 4


def test_a_kind_back_after_its_window_is_audited_again_and_its_summary_is_due() -> None:
    """The window closed with the kind's return: the summary is due at once, and the
    return opens a new window with an event of its own."""
    digest = RefusalDigest(window=10.0)
    assert digest.refused(BAD_KEY, 0.0, at(0))
    assert not digest.refused(BAD_KEY, 5.0, at(5))
    assert digest.refused(BAD_KEY, 12.0, at(12))
    assert digest.next_end() == float("-inf")
    assert digest.take_due(12.0) == [Summary(BAD_KEY, 1, at(5), at(5))]
    assert digest.next_end() == 22.0


def test_a_window_without_repeats_leaves_no_summary() -> None:
    """A single refusal is its own event and nothing more."""
    digest = RefusalDigest(window=10.0)
    assert digest.refused(BAD_KEY, 0.0, at(0))
    assert digest.take_due(100.0) == []


def test_shutdown_writes_every_open_count() -> None:
    """take_all closes every window, counted or not, and returns what was counted."""
    digest = RefusalDigest(window=600.0)
    other = ("", "10.0.0.9", "unknown agent")
    digest.refused(BAD_KEY, 0.0, at(0))
    digest.refused(BAD_KEY, 1.0, at(1))
    digest.refused(other, 2.0, at(2))
    assert digest.take_all() == [Summary(BAD_KEY, 1, at(1), at(1))]
    assert len(digest) == 0


def test_without_room_every_refusal_is_audited_on_its_own() -> None:
    """Beyond max_windows kinds nothing is counted: nothing can be lost."""
    digest = RefusalDigest(window=60.0, max_windows=1)
    other = ("", "10.0.0.9", "unknown agent")
    assert digest.refused(BAD_KEY, 0.0, at(0))
    assert [digest.refused(other, t, at(t)) for t in (1.0, 2.0)] == [True, True]
    assert not digest.refused(BAD_KEY, 3.0, at(3))


@pytest.mark.parametrize(("window", "max_windows"), [(0.0, 10), (-1.0, 10), (1.0, -1)])
def test_nonsense_settings_are_refused(window: float, max_windows: int) -> None:
    """A window must last and room cannot be negative."""
    with pytest.raises(ValueError, match="window"):
        RefusalDigest(window=window, max_windows=max_windows)


@given(
    refusals=st.lists(
        st.tuples(st.integers(0, 3), st.floats(0.0, 30.0, allow_nan=False)), max_size=200
    ),
    window=st.floats(0.5, 20.0, allow_nan=False),
    room=st.integers(0, 4),
)
def test_every_refusal_is_accounted_for_exactly_once(
    refusals: list[tuple[int, float]], window: float, room: int
) -> None:
    """Events of their own plus the repeats in summaries equal the refusals, whatever the
    kinds, the times, the window and the room."""
    digest = RefusalDigest(window=window, max_windows=room)
    now = 0.0
    audited = 0
    summaries: list[Summary] = []
    for kind, step in refusals:
        now += step
        summaries += digest.take_due(now)
        audited += digest.refused((f"k{kind}", "src", "why"), now, at(now))
    summaries += digest.take_all()
    assert audited + sum(s.repeats for s in summaries) == len(refusals)
    assert all(s.repeats > 0 and s.first_at <= s.last_at for s in summaries)
