"""The bilingual glossary: parsing, and the query words it adds across languages."""

from __future__ import annotations

import pytest

from broker.kb.analysis import fold, glossary, query_terms, words
from broker.kb.glossary import Concept, Glossary, parse
from broker.kb.highlight import highlight


def marked(text: str, query: str) -> list[str]:
    return [s.text for s in highlight(text, query_terms(query)) if s.match]


def test_parse_reads_concepts_and_skips_comments() -> None:
    """One concept a line, German | English; comments and blank lines are skipped."""
    text = "# printing\n\nDrucker drucken | printer print  # trailing note\n"
    assert parse(text, words) == [Concept(("drucker", "drucken"), ("printer", "print"))]


@pytest.mark.parametrize("line", ["drucker printer", "drucker | ", " | printer", "a | b | c"])
def test_parse_refuses_a_line_it_cannot_split(line: str) -> None:
    """A line without exactly two non-empty sides is an error naming the line."""
    with pytest.raises(ValueError, match="glossary line 2: write 'German words \\| English"):
        parse(f"ok | fine\n{line}\n", words)


def test_shipped_glossary_parses() -> None:
    """The glossary the broker ships loads, and is not trivially small."""
    assert len(glossary().concepts) >= 100


def test_english_query_brings_german_words() -> None:
    """The issue's example: "print jobs stuck in queue" also searches the German words."""
    terms = query_terms("print jobs stuck in queue")
    assert {"drucker", "druckauftrag", "warteschlange", "hangt"} <= set(terms.expansions)
    assert {"druck", "warteschlang"} <= set(terms.expansion_forms)


def test_german_query_brings_english_words() -> None:
    """A German ticket searches the English words for the same things."""
    terms = query_terms("Festplatte voll, Kennwort abgelaufen")
    assert {"disk", "full", "password", "expired"} <= set(terms.expansions)


def test_compound_and_typo_match_a_glossary_word() -> None:
    """A compound matches through its known part; one typo still finds the word."""
    assert "phone" in query_terms("Festnetztelefon tot").expansions
    assert "password" in query_terms("pasword").expansions
    assert "printer" in query_terms("Druker").expansions


def test_short_words_are_not_typo_matched() -> None:
    """Words under five letters are too often another real word: no typo match."""
    g = Glossary(
        [Concept(("maus",), ("mouse",))],
        fold=fold,
        german_keys=lambda w: (),
        english_keys=lambda w: (),
    )
    assert g.concepts_of("haus", ()) == set()
    assert g.concepts_of("mouse", ()) == {0}
    assert g.concepts_of("mousse", ()) == {0}


def test_expansion_can_be_turned_off_and_is_capped() -> None:
    """Without expansion only the typed words count; with it, the added words are bounded."""
    plain = query_terms("Drucker hängt", expand=False)
    assert plain.expansions == ()
    assert plain.expansion_forms == ()
    long = query_terms(" ".join(w for c in glossary().concepts for w in c.english[:1]))
    assert len(long.expansions) <= 32
    assert len(long.expansion_forms) <= 32


def test_highlight_marks_the_translation_in_the_article() -> None:
    """An English ticket's words mark the German passage that matched them."""
    text = "Die Druckaufträge bleiben in der Warteschlange hängen."
    assert marked(text, "print jobs stuck in queue") == ["Druckaufträge", "Warteschlange", "hängen"]


def test_two_lines_with_one_concept_token_are_refused() -> None:
    """Each concept is indexed under a token of its first words; two lines sharing it would
    be searched as one, so the glossary says which line to change."""
    text = "drucker | printer\nnetz | network\ndrucker drucken | printer print\n"
    with pytest.raises(ValueError, match=r"glossary line 3: .* those of line 1"):
        parse(text, words)
    (concept,) = parse("hängen | stuck", words)
    assert concept.token == "kbchangenxstuck"
