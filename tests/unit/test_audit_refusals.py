"""Refusals counted into summaries without an event of their own (pure): the mode the
summaries of anonymous refusals use (broker.audit.anonymous)."""

from __future__ import annotations

import datetime as dt

from broker.audit.refusals import MAX_LABELS, RefusalDigest, Summary

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
SOURCE = ("203.0.113.9",)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def test_every_refusal_is_counted_and_the_summary_names_the_kinds() -> None:
    """Without first_alone even the first refusal is only counted; the summary carries
    the count and how many of each label, most counted first."""
    digest = RefusalDigest(window=60.0, first_alone=False)
    labels = ["auth.refused: no credentials"] * 3 + ["auth.refused: invalid token"]
    assert [digest.refused(SOURCE, t, at(t), label) for t, label in enumerate(labels)] == [
        False
    ] * 4
    assert digest.take_due(59.9) == []
    assert digest.take_due(60.0) == [
        Summary(
            SOURCE,
            4,
            at(0),
            at(3),
            (("auth.refused: no credentials", 3), ("auth.refused: invalid token", 1)),
        )
    ]


def test_a_source_gets_one_summary_per_window() -> None:
    """A refusal after the window ended opens the next one; each window is one summary."""
    digest = RefusalDigest(window=60.0, first_alone=False)
    for t in (0.0, 30.0, 61.0, 62.0, 130.0):
        assert digest.refused(SOURCE, t, at(t), "x") is False
    assert [s.repeats for s in digest.take_due(200.0)] == [2, 2, 1]


def test_labels_beyond_the_cap_count_as_other() -> None:
    """Labels come from outside (an origin, a reason): past MAX_LABELS distinct ones the
    rest count as "other", so a summary stays small; the count is never lost."""
    digest = RefusalDigest(window=60.0, first_alone=False)
    for i in range(MAX_LABELS + 10):
        digest.refused(SOURCE, 0.0, at(0), f"kind {i}")
    digest.refused(SOURCE, 0.0, at(0), "kind 0")
    (summary,) = digest.take_all()
    assert summary.repeats == MAX_LABELS + 11
    labels = dict(summary.labels)
    assert len(labels) == MAX_LABELS + 1
    assert labels["other"] == 10
    assert labels["kind 0"] == 2


def test_past_the_window_limit_a_refusal_is_written_on_its_own() -> None:
    """When max_windows sources are counted already, a new source's refusal is to be
    audited by itself (True), never dropped."""
    digest = RefusalDigest(window=60.0, max_windows=1, first_alone=False)
    assert digest.refused(SOURCE, 0.0, at(0), "x") is False
    assert digest.refused(("198.51.100.1",), 0.0, at(0), "x") is True
    assert [s.kind for s in digest.take_all()] == [SOURCE]
