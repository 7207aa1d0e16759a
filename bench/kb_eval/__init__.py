"""Knowledge-base retrieval quality: helpdesk problems, their articles, and user tickets.

Each problem in ``problems.toml`` (tuning part) and ``held_out.toml`` (written after the
glossary, never tuned against) has one article in German or English and tickets written the
way users write, in the article's language and in the other one. :func:`evaluate` publishes
every article into a fresh database the way the broker does, searches with each ticket's
text exactly as suggestions do, and reports recall@3 and MRR per split and per language pair.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.kb import store
from broker.kb.analysis import query_terms
from broker.kb.article import ArticleContent, CommandEntry
from broker.kb.search_docs import SearchFilter, search

HERE: Final = Path(__file__).parent
SPLITS: Final = {"tuning": HERE / "problems.toml", "held_out": HERE / "held_out.toml"}
DEPTH: Final = 10  # reciprocal rank counts within the first 10 results, 0 beyond
Pair = Literal["same", "cross"]


@dataclass(frozen=True)
class Problem:
    id: str
    split: str
    lang: str
    content: ArticleContent
    same: tuple[str, ...]
    other: tuple[str, ...]


def load(splits: Iterable[str] = tuple(SPLITS)) -> list[Problem]:
    """The problems of the named splits, in file order."""
    out: list[Problem] = []
    for split in splits:
        data = tomllib.loads(SPLITS[split].read_text(encoding="utf-8"))
        for raw in data["problem"]:
            content = ArticleContent(
                title=raw["title"],
                problem=raw["problem"],
                environment="",
                cause=raw.get("cause", ""),
                solution=raw["solution"],
                commands=tuple(CommandEntry(c, 0) for c in raw.get("commands", [])),
                tags=tuple(raw.get("tags", [])),
                os=tuple(raw.get("os", [])),
            )
            out.append(
                Problem(
                    id=raw["id"],
                    split=split,
                    lang=raw["lang"],
                    content=content,
                    same=tuple(raw["same"]),
                    other=tuple(raw["other"]),
                )
            )
    return out


@dataclass
class Score:
    """Recall@3 and MRR over a group of queries."""

    queries: int = 0
    in_top3: int = 0
    reciprocal: float = 0.0
    misses: list[str] = field(default_factory=list)

    def add(self, rank: int | None, text: str) -> None:
        self.queries += 1
        if rank is not None and rank <= 3:
            self.in_top3 += 1
        else:
            self.misses.append(text)
        if rank is not None and rank <= DEPTH:
            self.reciprocal += 1 / rank

    @property
    def recall3(self) -> float:
        return self.in_top3 / self.queries if self.queries else 0.0

    @property
    def mrr(self) -> float:
        return self.reciprocal / self.queries if self.queries else 0.0


def merged(scores: dict[tuple[str, Pair], Score], pair: Pair) -> Score:
    """One score over every split for ``pair``."""
    total = Score()
    for (_, p), s in scores.items():
        if p == pair:
            total.queries += s.queries
            total.in_top3 += s.in_top3
            total.reciprocal += s.reciprocal
            total.misses += s.misses
    return total


async def publish_all(
    factory: async_sessionmaker[AsyncSession], problems: Sequence[Problem]
) -> dict[str, int]:
    """Every problem's article, published as the broker does; article id by problem id."""
    now = dt.datetime.now(dt.UTC)
    ids: dict[str, int] = {}
    async with factory() as db, db.begin():
        for problem in problems:
            record = await store.create(db, problem.content, author="eval", now=now)
            await store.change_status(db, record.id, "publish", by="eval", now=now)
            ids[problem.id] = record.id
    return ids


async def evaluate(
    factory: async_sessionmaker[AsyncSession], problems: Sequence[Problem]
) -> dict[tuple[str, Pair], Score]:
    """Scores by (split, same|cross) after publishing every problem's article."""
    ids = await publish_all(factory, problems)
    scores: dict[tuple[str, Pair], Score] = {}
    async with factory() as db:
        for problem in problems:
            want = ids[problem.id]
            pairs: tuple[tuple[Pair, tuple[str, ...]], ...] = (
                ("same", problem.same),
                ("cross", problem.other),
            )
            for pair, texts in pairs:
                score = scores.setdefault((problem.split, pair), Score())
                for text in texts:
                    hits = await search(db, query_terms(text), SearchFilter(limit=DEPTH))
                    ranks = [i for i, h in enumerate(hits, 1) if h.ref_id == want]
                    score.add(ranks[0] if ranks else None, f"{problem.id}: {text}")
    return scores
