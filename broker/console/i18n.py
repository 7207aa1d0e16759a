"""Translations: the gettext catalogues of ``locale/<lang>/LC_MESSAGES/messages.po``, compiled
in memory when the console starts, so no build step and no binary file is needed."""

from __future__ import annotations

import gettext
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from broker.console.language import LANGUAGES, Language

LOCALE_DIR: Final = Path(__file__).resolve().parent / "locale"
DOMAIN: Final = "messages"


def po_path(lang: Language, root: Path = LOCALE_DIR) -> Path:
    return root / lang / "LC_MESSAGES" / f"{DOMAIN}.po"


def compile_po(path: Path, lang: Language) -> gettext.GNUTranslations:
    """Read one .po file and return it as a ready translations object."""
    with path.open("rb") as fh:
        catalog = read_po(fh, locale=lang, domain=DOMAIN)
    buffer = io.BytesIO()
    # Fuzzy entries are drafts: they are not shown, the English text is.
    write_mo(buffer, catalog, use_fuzzy=False)
    buffer.seek(0)
    return gettext.GNUTranslations(buffer)


@dataclass(frozen=True)
class Catalogues:
    by_language: dict[Language, gettext.GNUTranslations]

    @classmethod
    def load(cls, root: Path = LOCALE_DIR) -> Catalogues:
        return cls({lang: compile_po(po_path(lang, root), lang) for lang in LANGUAGES})

    def get(self, lang: Language) -> gettext.GNUTranslations:
        return self.by_language[lang]
