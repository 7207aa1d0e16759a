"""Highlighted snippets of search results (pure).

A snippet is a list of segments, each plain text and a flag saying whether it matched, so
nothing in it is markup: the console escapes every segment and wraps matches in ``<mark>``,
the CLI prints them as it likes. Both backends get the same snippets, since the matching is
done here with the same analysis the index uses (``analysis.word_keys``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from broker.kb.analysis import WORD, QueryTerms, word_keys

SNIPPET_WORDS: Final = 24
ELLIPSIS: Final = "…"


@dataclass(frozen=True)
class Segment:
    text: str
    match: bool


def _match_flags(text: str, keys: frozenset[str]) -> list[tuple[int, int, bool]]:
    spans = []
    for m in WORD.finditer(text):
        word = m.group().casefold()
        spans.append((m.start(), m.end(), bool(word_keys(word) & keys)))
    return spans


def _segments(text: str, spans: list[tuple[int, int, bool]], start: int, end: int) -> list[Segment]:
    out: list[Segment] = []
    pos = start
    for s, e, hit in spans:
        if not hit or s < start or e > end:
            continue
        if s > pos:
            out.append(Segment(text[pos:s], False))
        out.append(Segment(text[s:e], True))
        pos = e
    if end > pos:
        out.append(Segment(text[pos:end], False))
    return out


def count_matches(text: str, terms: QueryTerms) -> int:
    """How many words of ``text`` match the query."""
    keys = terms.keys()
    return sum(1 for *_, hit in _match_flags(text, keys) if hit)


def highlight(text: str, terms: QueryTerms, *, max_words: int = SNIPPET_WORDS) -> list[Segment]:
    """The window of ``text`` with the most matching words, matches marked.

    Text longer than the window is cut at word boundaries with an ellipsis on the cut side;
    line breaks become spaces so a snippet is one line.
    """
    text = " ".join(text.split())
    if not text:
        return []
    spans = _match_flags(text, terms.keys())
    if len(spans) <= max_words:
        return _merge(_segments(text, spans, 0, len(text)))
    best, best_hits = 0, -1
    hits = 0
    for i, span in enumerate(spans):
        hits += span[2]
        if i >= max_words:
            hits -= spans[i - max_words][2]
        first = i - max_words + 1
        if first >= 0 and hits > best_hits:
            best, best_hits = first, hits
    # Start a little before the first match so it reads in context.
    first_hit = next((j for j in range(best, best + max_words) if spans[j][2]), best)
    best = max(0, min(first_hit - 3, len(spans) - max_words))
    last = best + max_words - 1
    start = 0 if best == 0 else spans[best][0]
    end = len(text) if last == len(spans) - 1 else spans[last][1]
    segments = _segments(text, spans, start, end)
    if start > 0:
        segments.insert(0, Segment(ELLIPSIS, False))
    if end < len(text):
        segments.append(Segment(ELLIPSIS, False))
    return _merge(segments)


def _merge(segments: list[Segment]) -> list[Segment]:
    """Join neighbouring segments of the same kind, so output stays small."""
    out: list[Segment] = []
    for seg in segments:
        if out and out[-1].match == seg.match:
            out[-1] = Segment(out[-1].text + seg.text, seg.match)
        else:
            out.append(seg)
    return out
