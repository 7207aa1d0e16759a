"""The language a customer's session notes are written in, and its translations.

A customer's ``language`` (``secondline customer set NAME --language de``) picks the note's
language; an unknown customer or value gives English. The texts are in the console's
gettext catalogues (``broker/console/locale``), compiled once, on the first note.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from broker.db.models_staff import Customer
from broker.sessions.note import Gettext

if TYPE_CHECKING:
    from broker.console.i18n import Catalogues


async def customer_language(db: AsyncSession, customer: str) -> str:
    """The note language of ``customer``; English when there is no such customer."""
    found = await db.scalar(select(Customer.language).where(Customer.name == customer))
    return found or "en"


class NoteTranslations:
    """Gettext per note language, loaded on first use (one per finisher, not per note)."""

    def __init__(self) -> None:
        self._catalogues: Catalogues | None = None

    def gettext(self, language: str) -> Gettext:
        # Imported here: the console package pulls in the web layer, which imports sessions.
        from broker.console.i18n import Catalogues
        from broker.console.language import as_language

        if self._catalogues is None:
            self._catalogues = Catalogues.load()
        return self._catalogues.get(as_language(language) or "en").gettext
