"""How "solved it" and "did not help" marks order a ticket's suggestions."""

from __future__ import annotations

from dataclasses import dataclass

from broker.kb.feedback import feedback_order, success_factor, tried_last


@dataclass(frozen=True)
class R:
    id: int
    rank: float
    solved_count: int = 0


def test_success_factor_is_one_without_marks_and_bounded() -> None:
    """No marks keep the rank; many successes approach 2, many failures approach 0."""
    assert success_factor(0, 0) == 1.0
    assert success_factor(1, 1) == 1.0
    assert 1.9 < success_factor(50, 0) < 2.0
    assert 0.0 < success_factor(0, 50) < 0.1
    assert success_factor(-3, -1) == 1.0  # nonsense counts count as none


def test_marks_reorder_close_ranks_but_not_far_ones() -> None:
    """A slightly better match that did not help twice falls behind one that helped; a far
    better match still wins against a little help."""
    a, b = R(1, rank=10.0), R(2, rank=9.0, solved_count=2)
    assert [r.id for r in feedback_order([a, b], {1: 2})] == [2, 1]
    assert [r.id for r in feedback_order([a, b], {})] == [2, 1]  # 10 against 9 times 1.5
    far = R(3, rank=30.0)
    assert [r.id for r in feedback_order([b, far], {})] == [3, 2]


def test_ties_keep_the_text_order() -> None:
    """Equal scores keep the order the search gave."""
    rs = [R(5, 1.0), R(4, 1.0), R(6, 1.0)]
    assert [r.id for r in feedback_order(rs, {})] == [5, 4, 6]


def test_tried_on_this_ticket_goes_last() -> None:
    """What the person working the ticket already marked goes last, in order."""
    rs = [R(1, 3.0), R(2, 2.0), R(3, 1.0)]
    assert [r.id for r in tried_last(rs, {1, 2})] == [3, 1, 2]
