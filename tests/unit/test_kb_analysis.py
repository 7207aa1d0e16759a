"""Search text analysis: words, German forms, compounds, and queries that are always text."""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.kb.analysis import (
    QUERY_MAX_TERMS,
    QueryTerms,
    compound_parts,
    concepts_field,
    fold,
    fts5_match,
    german_forms,
    german_stem,
    glossary,
    pg_query_text,
    query_terms,
    stems_field,
    word_keys,
    words,
)


def test_fold_drops_case_and_diacritics() -> None:
    """Folding matches FTS5's remove_diacritics: ä, É and ß compare as a, e and ss."""
    assert fold("Hängt ÉCRAN Straße") == "hangt ecran strasse"


def test_words_split_like_unicode61() -> None:
    """Punctuation and underscores separate words; over-long tokens are skipped."""
    assert list(words("cups-filters /etc/cups_d.conf Ärger " + "x" * 65)) == [
        "cups",
        "filters",
        "etc",
        "cups",
        "d",
        "conf",
        "ärger",
    ]


def test_german_stems_meet_across_forms() -> None:
    """Inflected German forms share one stem without diacritics."""
    assert german_stem("druckaufträge") == german_stem("druckauftrag") == "druckauftrag"
    assert german_stem("passwörter") == german_stem("passwort")


def test_compound_parts_both_ends() -> None:
    """A compound stem yields the known parts it starts and ends with."""
    assert set(compound_parts("druckauftrag")) == {"druck", "auftrag"}
    assert set(compound_parts("netzwerkdruck")) == {"netzwerk", "druck"}


def test_compound_parts_need_a_remainder() -> None:
    """A word that is a part itself, or a part plus one or two letters, is not split."""
    assert compound_parts("druck") == ()
    assert compound_parts("drucke") == ()
    assert compound_parts("katze") == ()


def test_german_forms_and_stems_field() -> None:
    """The stems field lists every form of every word once, in order."""
    assert german_forms("Netzwerkdrucker".casefold()) == ("netzwerkdruck", "netzwerk", "druck")
    assert stems_field(["Drucker druckt", "Netzwerkdrucker"]) == (
        "druck druckt netzwerkdruck netzwerk"
    )


def test_query_terms_drop_stopwords() -> None:
    """Stopwords of both languages go; repeated words count once."""
    terms = query_terms("The printer der Drucker the printer")
    assert terms.words == ("printer", "drucker")
    assert terms.german == ("print", "druck")


def test_query_of_stopwords_only_is_kept() -> None:
    """A query made only of stopwords still searches for them."""
    assert query_terms("the who").words == ("the", "who")


def test_query_terms_are_capped() -> None:
    """At most QUERY_MAX_TERMS words, from the first few thousand characters only."""
    terms = query_terms(" ".join(f"w{i}" for i in range(5000)))
    assert len(terms.words) == QUERY_MAX_TERMS
    assert query_terms("x " * 3000 + "late").words == ("x",)


def test_empty_and_symbol_queries() -> None:
    """Nothing but symbols and controls is an empty query."""
    assert query_terms('"()*:^ \x00 \u202e').empty
    assert fts5_match(QueryTerms((), ())) == ""


def test_fts5_match_quotes_every_term() -> None:
    """Each word is a quoted string; German forms are limited to the stems column."""
    terms = query_terms('printer" OR NEAR(x', expand=False)
    assert fts5_match(terms) == (
        '"printer" OR "near" OR "x" OR stems : "print" OR stems : "near" OR stems : "x"'
    )


def test_keys_cover_every_form() -> None:
    """Highlight keys hold the folded word, its English and its German stems."""
    keys = query_terms("Printing Drucker").keys()
    assert {"printing", "print", "drucker", "druck"} <= keys
    assert word_keys("Druckaufträge") >= {"druckauftrag", "auftrag", "druck"}


def test_pg_query_text() -> None:
    """PostgreSQL gets the words, the German forms and the concept tokens as three texts."""
    assert pg_query_text(query_terms("Drucker hängt", expand=False)) == (
        "drucker hangt",
        "druck hangt",
        "",
    )
    printer, stuck = (c.token for c in glossary().concepts if c.german[0] in {"drucker", "hängen"})
    assert pg_query_text(query_terms("Drucker hängt foo")) == ("foo", "foo", f"{printer} {stuck}")


def test_concept_words_are_searched_by_their_concepts() -> None:
    """A word of a glossary concept is searched as the concept's token, in the concepts
    column, so a word and its translation weigh the same; other words as typed."""
    terms = query_terms("printer Kyocera")
    (printer,) = (c.token for c in glossary().concepts if c.english[0] == "printer")
    assert terms.concepts == (printer,)
    assert terms.searched == ("kyocera",)
    assert fts5_match(terms) == f'"kyocera" OR stems : "kyocera" OR concepts : "{printer}"'
    assert "drucker" in terms.expansions  # kept for highlighting the German passage


def test_documents_carry_their_concepts_as_often_as_their_words() -> None:
    """The concepts field has a token per concept word of a document, the title's twice, so
    a German article and an English query meet on the same tokens."""
    tokens = {c.english[0]: c.token for c in glossary().concepts}
    field = concepts_field("Drucker", ["Der Druckauftrag hängt, der Drucker auch"]).split()
    assert field.count(tokens["printer"]) == 3
    assert field.count(tokens["job"]) == 1
    assert set(query_terms("printer job stuck").concepts) <= set(field)


@pytest.fixture(scope="module")
def fts() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.execute(
        "CREATE VIRTUAL TABLE t USING fts5(title, stems, concepts, "
        "tokenize='porter unicode61 remove_diacritics 2')"
    )
    conn.execute("INSERT INTO t VALUES ('printer queue', 'druck', '')")
    return conn


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_is_a_valid_fts5_query(fts: sqlite3.Connection, text: str) -> None:
    """Whatever a person types, the MATCH expression built from it is valid FTS5."""
    expression = fts5_match(query_terms(text))
    if expression:
        fts.execute("SELECT count(*) FROM t WHERE t MATCH ?", (expression,)).fetchone()
