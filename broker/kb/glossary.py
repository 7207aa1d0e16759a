"""The bilingual helpdesk glossary behind cross-language search (pure).

``glossary.txt`` beside this module holds one concept a line, German words and English words
("drucker drucken … | printer print …"). A query word that matches a word of a concept
brings every other word of that concept into the query, so a German ticket finds an English
article and back, and "Platte voll" finds "disk full". A word matches a glossary word
through any of the keys the caller's analysis gives both (folded form, German and English
stems); a German compound typed as one word matches through a glossary word it starts or
ends with ("Festnetztelefon" → telefon); and a word one typo away from a glossary word
("Druker", "pasword") matches that word, as people type tickets in a hurry.

Why a glossary and not a multilingual embedding model: measured on the evaluation set in
``bench/kb_eval`` (see docs/knowledge-base.md), it reaches the recall wanted with no model
download, no GPU and no second index, on SQLite and PostgreSQL alike, and staff can read and
extend it.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

GLOSSARY_FILE: Final = Path(__file__).with_name("glossary.txt")
COMPOUND_PART_MIN: Final = 4  # shorter glossary words are not looked for inside compounds
COMPOUND_REST_MIN: Final = 3
TYPO_MIN_CHARS: Final = 5  # shorter words are too often another real word one edit away

Keys = Callable[[str], Iterable[str]]


CONCEPT_PREFIX: Final = "kbc"  # no German or English word starts like this


@dataclass(frozen=True)
class Concept:
    german: tuple[str, ...]
    english: tuple[str, ...]

    @property
    def words(self) -> tuple[str, ...]:
        return (*self.german, *self.english)

    @property
    def token(self) -> str:
        """The concept as one indexed word ("kbcdruckerxprinter"): a document holds the
        tokens of the concepts its words belong to, and a query searches the tokens of its
        words' concepts, so a query searches a few tokens instead of every word of every
        concept it touches. Letters only, so both engines keep it one word."""
        return CONCEPT_PREFIX + _letters(self.german[0]) + "x" + _letters(self.english[0])


def _letters(word: str) -> str:
    plain = unicodedata.normalize("NFKD", word)  # "hängt" → "hangt", as the engines fold
    return "".join(c for c in plain if c.isascii() and c.isalnum())


def parse(text: str, split: Callable[[str], Iterable[str]]) -> list[Concept]:
    """The concepts of a glossary text; ``split`` turns a side into folded words.

    A line without exactly one ``|`` or with an empty side is an error: a glossary that
    silently lost a line would lose recall nobody notices. So is a line whose concept token
    (``Concept.token``) another line has: the two would be searched as one.
    """
    concepts: list[Concept] = []
    tokens: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        sides = line.split("|")
        german, english = (
            (tuple(dict.fromkeys(split(sides[0]))), tuple(dict.fromkeys(split(sides[1]))))
            if len(sides) == 2
            else ((), ())
        )
        if not german or not english:
            raise ValueError(f"glossary line {number}: write 'German words | English words'")
        concept = Concept(german, english)
        if concept.token in tokens:
            raise ValueError(
                f"glossary line {number}: its first German and first English word are those "
                f"of line {tokens[concept.token]}; put another word first"
            )
        tokens[concept.token] = number
        concepts.append(concept)
    return concepts


def _deletions(word: str) -> set[str]:
    return {word[:i] + word[i + 1 :] for i in range(len(word))}


class Glossary:
    """Concepts indexed by the keys of their words, for expansion of query words."""

    def __init__(
        self,
        concepts: list[Concept],
        *,
        fold: Callable[[str], str],
        german_keys: Keys,
        english_keys: Keys,
    ) -> None:
        """``concepts`` hold case-folded words with their diacritics (for the stemmers);
        ``fold`` is how a typed word is compared (diacritics dropped)."""
        self.concepts = concepts
        self._by_key: dict[str, set[int]] = {}
        self._german_words: dict[str, set[int]] = {}
        self._typos: dict[str, set[str]] = {}
        self._word_concepts: dict[str, set[int]] = {}
        for index, concept in enumerate(concepts):
            for side, keys in ((concept.german, german_keys), (concept.english, english_keys)):
                for word in side:
                    folded = fold(word)
                    self._word_concepts.setdefault(folded, set()).add(index)
                    for key in {folded, *keys(word)}:
                        self._by_key.setdefault(key, set()).add(index)
                    if len(folded) >= TYPO_MIN_CHARS:
                        for variant in {folded, *_deletions(folded)}:
                            self._typos.setdefault(variant, set()).add(folded)
            for word in concept.german:
                if len(fold(word)) >= COMPOUND_PART_MIN:
                    self._german_words.setdefault(fold(word), set()).add(index)

    def concepts_of(self, folded: str, keys: Iterable[str]) -> set[int]:
        """The concepts a typed word (folded, with its analysis keys) belongs to."""
        found: set[int] = set()
        for key in {folded, *keys}:
            found |= self._by_key.get(key, set())
        if found:
            return found
        for cut in range(COMPOUND_PART_MIN, len(folded) - COMPOUND_REST_MIN + 1):
            found |= self._german_words.get(folded[:cut], set())
        for cut in range(COMPOUND_REST_MIN, len(folded) - COMPOUND_PART_MIN + 1):
            found |= self._german_words.get(folded[cut:], set())
        if found or len(folded) < TYPO_MIN_CHARS:
            return found
        near: set[str] = set()
        for variant in {folded, *_deletions(folded)}:
            near |= self._typos.get(variant, set())
        for word in near:
            found |= self._word_concepts[word]
        return found

    def tokens(self, typed: Iterable[tuple[str, Iterable[str]]]) -> list[str]:
        """The concept tokens of words (each folded, with its analysis keys), each once."""
        return [concept.token for concept in self.expand(typed)]

    def expand(self, typed: Iterable[tuple[str, Iterable[str]]]) -> list[Concept]:
        """The concepts of the typed words, each once, in the order typed; ``typed`` holds
        each folded word with its analysis keys."""
        seen: dict[int, None] = {}
        for folded, keys in typed:
            for index in sorted(self.concepts_of(folded, keys)):
                seen.setdefault(index, None)
        return [self.concepts[i] for i in seen]
