"""Which language an article is written in, German or English (pure).

Authors say it; when they do not (a draft from a ticket, an article created through the API
without one), it is guessed from the text: whichever language's common words occur more
often, German on a tie (the helpdesks this serves are German). An article may have a version
in the other language, linked to it (``store.link_translation``).
"""

from __future__ import annotations

from typing import Final, Literal

from broker.kb.analysis import words

Language = Literal["de", "en"]
LANGUAGES: Final[tuple[Language, ...]] = ("de", "en")
LANGUAGE_RULE: Final = "the language is de (German) or en (English)"

_GERMAN_TEXT: Final = (
    "der die das und ist nicht ein eine mit auf für von im den dem zu sich auch wird werden "
    "kann ich es bei nach oder wenn geht mehr kein keine wurde sind hat beim seit noch"
)
_ENGLISH_TEXT: Final = (
    "the and is not a an with on for of in to it can be was are has after when or no does "
    "doesn't cant can't won't from this that any my since still"
)
_GERMAN: Final = frozenset(_GERMAN_TEXT.split())
_ENGLISH: Final = frozenset(_ENGLISH_TEXT.split())


def guess_language(*texts: str) -> Language:
    """The language the texts are most likely written in."""
    german = english = 0
    for text in texts:
        for word in words(text):
            german += word in _GERMAN
            english += word in _ENGLISH
    return "en" if english > german else "de"


def other_language(language: str) -> Language:
    return "en" if language == "de" else "de"
