"""How "this solved it" and "did not help" marks weigh in a ticket's suggestions (pure).

Each article's text rank is scaled by its success ratio with a Laplace prior, doubled so an
article nobody marked keeps its rank: ``2 * (solved + 1) / (solved + not_helped + 2)``, so
between 0 and 2. Words still decide among articles with few marks; an article that helped
often climbs past one that matches a little better, and one that kept not helping sinks.
An article marked "did not help" on the ticket itself goes last on that ticket, whatever
its marks elsewhere: the person working it has tried it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Protocol, TypeVar


class Ranked(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def rank(self) -> float: ...

    @property
    def solved_count(self) -> int: ...


R = TypeVar("R", bound=Ranked)


def success_factor(solved: int, not_helped: int) -> float:
    """The factor on an article's rank: 1 without marks, towards 2 or 0 with them."""
    return 2 * (max(solved, 0) + 1) / (max(solved, 0) + max(not_helped, 0) + 2)


def feedback_order(results: Sequence[R], not_helped: Mapping[int, int]) -> list[R]:
    """``results`` by rank times success factor, best first (stable on ties)."""
    return sorted(
        results,
        key=lambda r: -r.rank * success_factor(r.solved_count, not_helped.get(r.id, 0)),
    )


def tried_last(results: Sequence[R], tried_here: Collection[int]) -> list[R]:
    """``results`` with the articles already tried on this ticket moved last, in order."""
    return [r for r in results if r.id not in tried_here] + [
        r for r in results if r.id in tried_here
    ]
