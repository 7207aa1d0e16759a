"""Which language a page is shown in (pure): the account's choice, else the browser's
Accept-Language, else English."""

from __future__ import annotations

from typing import Final, Literal

Language = Literal["en", "de"]
LANGUAGES: Final[tuple[Language, ...]] = ("en", "de")
DEFAULT: Final[Language] = "en"
_MAX_HEADER: Final = 500
_MAX_ITEMS: Final = 20


def as_language(text: str | None) -> Language | None:
    """``text`` when it names a console language (case-insensitive, region ignored)."""
    if not text:
        return None
    primary = text.strip().lower().replace("_", "-").split("-", 1)[0]
    for lang in LANGUAGES:
        if primary == lang:
            return lang
    return None


def _quality(params: list[str]) -> float:
    for param in params:
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "q":
            try:
                q = float(value)
            except ValueError:
                return 0.0
            return q if 0.0 <= q <= 1.0 else 0.0
    return 1.0


def from_accept_language(header: str | None) -> Language | None:
    """The console language the browser prefers most, or None when it names none of ours.

    Oversized headers and items beyond the first 20 are ignored: they cost parsing time and
    carry no more preference."""
    if not header:
        return None
    best: tuple[float, int, Language] | None = None
    for index, item in enumerate(header[:_MAX_HEADER].split(",")[:_MAX_ITEMS]):
        tag, *params = item.split(";")
        lang = as_language(tag)
        if lang is None:
            continue
        q = _quality(params)
        if q <= 0:
            continue
        # Higher quality wins; on a tie the earlier item wins.
        if best is None or q > best[0]:
            best = (q, index, lang)
    return best[2] if best else None


def choose(account_language: str | None, accept_language: str | None) -> Language:
    return as_language(account_language) or from_accept_language(accept_language) or DEFAULT
