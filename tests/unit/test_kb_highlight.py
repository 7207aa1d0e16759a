"""Highlighted snippets: the best window, marked matches, ellipses (pure)."""

from __future__ import annotations

from broker.kb.analysis import query_terms
from broker.kb.highlight import ELLIPSIS, Segment, count_matches, highlight


def marked(segments: list[Segment]) -> list[str]:
    return [s.text for s in segments if s.match]


def test_short_text_is_whole() -> None:
    """A short text comes back whole, matches marked across word forms and languages."""
    segs = highlight(
        "Der Netzwerkdrucker druckt nicht;\nprinting fails",
        query_terms("Drucker print", expand=False),
    )
    assert "".join(s.text for s in segs) == "Der Netzwerkdrucker druckt nicht; printing fails"
    assert marked(segs) == ["Netzwerkdrucker", "printing"]


def test_long_text_gets_the_best_window() -> None:
    """A long text is cut to the window with most matches, ellipses on cut sides."""
    text = " ".join(["filler"] * 100 + ["cups", "filter", "failed"] + ["tail"] * 100)
    segs = highlight(text, query_terms("cups filter failed"), max_words=10)
    assert segs[0].text.startswith(ELLIPSIS)
    assert segs[-1].text.endswith(ELLIPSIS)
    assert marked(segs) == ["cups", "filter", "failed"]
    assert len("".join(s.text for s in segs).split()) <= 12


def test_window_at_start_has_no_leading_ellipsis() -> None:
    """Matches near the start keep the start; only the end is cut."""
    text = "cups " + " ".join(["x"] * 50)
    segs = highlight(text, query_terms("cups"), max_words=5)
    assert segs[0] == Segment("cups", True)
    assert segs[-1].text.endswith(ELLIPSIS)


def test_window_at_end_has_no_trailing_ellipsis() -> None:
    """Matches at the very end keep the end."""
    text = " ".join(["x"] * 50) + " cups"
    segs = highlight(text, query_terms("cups"), max_words=5)
    assert segs[0].text.startswith(ELLIPSIS)
    assert segs[-1] == Segment("cups", True)


def test_no_match_and_empty() -> None:
    """Without a match the start is shown; empty text gives no segments."""
    segs = highlight(" ".join(["x"] * 50), query_terms("cups"), max_words=5)
    assert marked(segs) == []
    assert segs[-1].text.endswith(ELLIPSIS)
    assert highlight("   ", query_terms("cups")) == []


def test_count_matches() -> None:
    """Counting uses the same keys as marking."""
    assert count_matches("printer printing PRINTS", query_terms("print")) == 3
