"""Text analysis for knowledge-base search, shared by the index and the query side (pure).

Both database backends index the raw text with their own English (Porter) stemming and, on
PostgreSQL, German stemming too. SQLite's FTS5 has no German stemmer, so every document also
carries a ``stems`` field computed here: the German Snowball stem of each of its words, plus
the known parts of German compounds ("Druckaufträge" → "druckauftrag", "druck", "auftrag"), all
case-folded and without diacritics. The query side runs the same functions over what a person
typed, so "Drucker druckt nicht" finds "Druckaufträge hängen im Netzwerkdrucker".

The bilingual glossary (``broker.kb.glossary``) joins the languages at write time: the
``concepts`` field holds the concept token of every glossary concept a document's words
belong to ("Druckaufträge hängen" → ``kbcdruckerxprinter``-like tokens for print job, queue,
stuck), and a query searches the tokens of its own words' concepts, so "print jobs stuck"
finds the German article through a few tokens rather than through every German word of
those concepts. The concepts' words are still kept on the query (``expansions``), for
highlighting: a German passage shows which of its words an English ticket matched.

Whatever a person types is only ever split into words: operators, quotes, parentheses, NUL
and other controls cannot reach the search engine's query language, because each word is
emitted as a quoted string of letters and digits. Long input is cut, never refused.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Final, Protocol, cast

import snowballstemmer  # no stubs published: ignore_missing_imports in pyproject

from broker.kb.glossary import GLOSSARY_FILE, Concept, Glossary, parse

# Words are runs of letters and digits, as SQLite's unicode61 tokenizer splits them
# (underscore and punctuation separate words there too).
WORD: Final = re.compile(r"[^\W_]+")

QUERY_MAX_CHARS: Final = 4000  # a pasted log beyond this adds nothing but cost
QUERY_MAX_TERMS: Final = 32
WORD_MAX_CHARS: Final = 64  # longer "words" are hashes or base64, never symptoms
EXPANSION_PER_LANGUAGE: Final = 5  # glossary words per concept and language, first listed first
EXPANSIONS_MAX: Final = 32  # more adds cost and dilutes the words actually typed

_STOPWORD_TEXT: Final = (
    # English
    "a about after again all also am an and any are as at be been before being but by can "
    "could did do does doing for from had has have having he her here him his how i if in "
    "into is it its just me my no nor not now of off on once only or other our out over own "
    "same she should so some such than that the their them then there these they this those "
    "through to too under until up very was we were what when where which while who why will "
    "with would you your "
    # German
    "aber alle als also am an auch auf aus bei bin bis bitte da dann das dass dem den der des "
    "die dies diese dieser doch du ein eine einem einen einer eines er es etwas für hat hatte "
    "ich ihr im in ist ja jetzt kann kein keine man mehr mein mich mir mit muss nach nicht "
    "noch nur ob oder schon sehr sein seit sich sie sind so um und uns von vor war waren was "
    "weil wenn werden wie wieder wir wird zu zum zur"
)
STOPWORDS: Final = frozenset(_STOPWORD_TEXT.split())

# Parts of German IT compounds; a compound whose stem starts or ends with one of these is
# also indexed under the part, so "Druckauftrag" and "Auftrag" meet. Kept short on purpose:
# a wrong split only adds a weak match, a missing one loses nothing that stemming had.
_PARTS_TEXT: Final = (
    "adresse anmeldung anwendung auftrag benutzer berechtigung bildschirm datei dienst "
    "domäne drucker druck einstellung fehler festplatte freigabe gerät gruppe kabel kalender "
    "kennwort konto laufwerk lizenz meldung netzwerk neustart ordner paket passwort patrone "
    "platte postfach programm protokoll rechner regel richtlinie schlange schlüssel sicherung "
    "sitzung speicher sperre start tastatur toner treiber update verbindung verzeichnis warte "
    "zertifikat zugriff"
)
_COMPOUND_PARTS: Final = tuple(_PARTS_TEXT.split())


class _Stemmer(Protocol):
    def stemWord(self, word: str) -> str: ...


@lru_cache(maxsize=1)
def _german() -> _Stemmer:
    return cast(_Stemmer, snowballstemmer.stemmer("german"))


@lru_cache(maxsize=1)
def _english() -> _Stemmer:
    return cast(_Stemmer, snowballstemmer.stemmer("english"))


def fold(text: str) -> str:
    """Case-fold and drop diacritics, as FTS5's ``remove_diacritics 2`` does."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def words(text: str) -> Iterator[str]:
    """The words of ``text``, case-folded, in order (diacritics kept for the stemmers)."""
    for match in WORD.finditer(text):
        word = match.group().casefold()
        if len(word) <= WORD_MAX_CHARS:
            yield word


@lru_cache(maxsize=65_536)
def german_stem(word: str) -> str:
    """The German Snowball stem of a case-folded word, without diacritics."""
    return fold(_german().stemWord(word))


@lru_cache(maxsize=65_536)
def english_stem(word: str) -> str:
    """The English Snowball stem of a case-folded word, without diacritics."""
    return fold(_english().stemWord(word))


@lru_cache(maxsize=1)
def _parts() -> tuple[str, ...]:
    stems = {german_stem(p) for p in _COMPOUND_PARTS}
    return tuple(sorted((s for s in stems if len(s) >= 4), key=len, reverse=True))


@lru_cache(maxsize=65_536)
def compound_parts(stem: str) -> tuple[str, ...]:
    """The known parts a German compound stem starts or ends with (at least 3 letters left)."""
    found: list[str] = []
    for part in _parts():
        if len(stem) - len(part) < 3:
            continue
        if (stem.startswith(part) or stem.endswith(part)) and part not in found:
            found.append(part)
    return tuple(found)


def german_forms(word: str) -> tuple[str, ...]:
    """The German stem of a word and the known parts of it as a compound."""
    stem = german_stem(word)
    return (stem, *compound_parts(stem))


def stems_field(texts: Iterable[str]) -> str:
    """The ``stems`` field of a document: every distinct German form of its words."""
    seen: dict[str, None] = {}
    for text in texts:
        for word in words(text):
            for form in german_forms(word):
                seen.setdefault(form, None)
    return " ".join(seen)


def concepts_field(title: str, body: Iterable[str]) -> str:
    """The ``concepts`` field of a document: the glossary concept token of each of its words
    that belongs to a concept, as often as such words occur (as a word counts as often as it
    occurs), those of the title twice (a title says what an article is about)."""
    tokens: list[str] = []
    for text in (title, title, *body):
        for word in words(text):
            if word not in STOPWORDS:
                tokens += (concept.token for concept in _word_concepts(word))
    return " ".join(tokens)


@lru_cache(maxsize=65_536)
def _word_concepts(word: str) -> tuple[Concept, ...]:
    """The glossary concepts a case-folded word belongs to, the same for documents and
    queries."""
    return tuple(glossary().expand([(fold(word), _word_analysis_keys(word))]))


@dataclass(frozen=True)
class QueryTerms:
    """What a search string means: distinct words and their German forms, both folded, and
    the glossary words they bring in (``expansions``, with their German forms)."""

    words: tuple[str, ...]
    german: tuple[str, ...]
    expansions: tuple[str, ...] = ()
    expansion_forms: tuple[str, ...] = ()
    concepts: tuple[str, ...] = ()  # glossary concept tokens, searched in ``concepts``
    # What the engines search besides the concepts: the words without a concept, and their
    # German forms. ``words`` and ``german`` hold every typed word, for highlighting.
    searched: tuple[str, ...] = ()
    searched_german: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.words

    @property
    def all_words(self) -> tuple[str, ...]:
        return (*self.words, *self.expansions)

    @property
    def all_german(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.german, *self.expansion_forms)))

    def keys(self) -> frozenset[str]:
        """Every form a document word may take to count as a match (for highlighting)."""
        return _keys(self.all_words, self.all_german)


@lru_cache(maxsize=1024)
def _keys(words: tuple[str, ...], german: tuple[str, ...]) -> frozenset[str]:
    return frozenset({*words, *german, *(english_stem(w) for w in words)})


def _word_analysis_keys(word: str) -> tuple[str, ...]:
    return (german_stem(word), english_stem(word))


@lru_cache(maxsize=1)
def glossary_version() -> str:
    """A fingerprint of the glossary: a search document indexed under another one has
    concept tokens of another glossary, and is indexed again (``refresh_concepts``)."""
    return hashlib.sha256(GLOSSARY_FILE.read_bytes()).hexdigest()[:16]


@lru_cache(maxsize=1)
def glossary() -> Glossary:
    """The bilingual glossary, keyed by the same stems the search uses."""
    return Glossary(
        parse(GLOSSARY_FILE.read_text(encoding="utf-8"), words),
        fold=fold,
        german_keys=lambda w: (german_stem(w),),
        english_keys=lambda w: (english_stem(w),),
    )


def query_terms(text: str, *, max_terms: int = QUERY_MAX_TERMS, expand: bool = True) -> QueryTerms:
    """Split what a person typed into search terms; never raises, whatever the text holds.

    Stopwords are dropped unless nothing else is left ("the who" still searches). With
    ``expand`` the glossary's concepts of the words are searched instead of the words
    themselves (``searched``), so a word and its translation count the same, and their
    words are kept for highlighting (``expansions``).
    """
    text = text[:QUERY_MAX_CHARS]
    all_words = list(dict.fromkeys(words(text)))
    kept = [w for w in all_words if w not in STOPWORDS] or all_words
    kept = kept[:max_terms]
    german: dict[str, None] = {}
    for word in kept:
        for form in german_forms(word):
            german.setdefault(form, None)
    folded = tuple(fold(w) for w in kept)
    added: dict[str, None] = {}
    forms: dict[str, None] = {}
    concepts: dict[str, None] = {}
    searched = kept
    if expand:
        seen = {key for w in kept for key in _word_analysis_keys(w)}
        found: list[Concept] = []
        searched = []
        for word in kept:
            word_concepts = () if word in STOPWORDS else _word_concepts(word)
            found += word_concepts
            if not word_concepts:
                searched.append(word)
        for concept in dict.fromkeys(found):
            concepts.setdefault(concept.token, None)
            for side, is_german in ((concept.german, True), (concept.english, False)):
                taken = 0
                for word in side:
                    # One word per stem, a few per language: enough to mark a passage.
                    keys = _word_analysis_keys(word)
                    if taken == EXPANSION_PER_LANGUAGE or seen.intersection(keys):
                        continue
                    seen.update(keys)
                    taken += 1
                    added.setdefault(fold(word), None)
                    if is_german:
                        for form in german_forms(word):
                            if form not in german:
                                forms.setdefault(form, None)
    return QueryTerms(
        words=folded,
        german=tuple(german),
        expansions=tuple(added)[:EXPANSIONS_MAX],
        expansion_forms=tuple(forms)[:EXPANSIONS_MAX],
        concepts=tuple(concepts),
        searched=tuple(fold(w) for w in searched),
        searched_german=tuple(dict.fromkeys(f for w in searched for f in german_forms(w))),
    )


def _quoted(term: str) -> str:
    # Terms hold only letters and digits; doubling quotes keeps that true if it ever changes.
    return '"' + term.replace('"', '""') + '"'


def fts5_match(terms: QueryTerms) -> str:
    """An FTS5 MATCH expression: each word without a concept in any column or its German
    forms in ``stems``, or a concept token in ``concepts``."""
    parts = [_quoted(w) for w in terms.searched]
    parts += [f"stems : {_quoted(g)}" for g in terms.searched_german]
    parts += [f"concepts : {_quoted(c)}" for c in terms.concepts]
    return " OR ".join(parts)


def pg_query_text(terms: QueryTerms) -> tuple[str, str, str]:
    """The words without a concept, their German forms, and the concept tokens, as three
    texts for PostgreSQL's ``to_tsvector``."""
    return " ".join(terms.searched), " ".join(terms.searched_german), " ".join(terms.concepts)


@lru_cache(maxsize=65_536)
def word_keys(word: str) -> frozenset[str]:
    """The forms under which a document word matches a query (see ``QueryTerms.keys``)."""
    folded = fold(word)
    return frozenset({folded, english_stem(word), *german_forms(word)})
