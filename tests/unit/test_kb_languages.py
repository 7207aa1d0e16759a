"""Article languages: guessed from the text when the author does not say, checked when set."""

from __future__ import annotations

import pytest

from broker.kb.article import ArticleContent, check_content
from broker.kb.drafting import TicketDigest, draft_from_ticket
from broker.kb.errors import ArticleInvalid
from broker.kb.languages import guess_language, other_language


def test_guess_by_common_words() -> None:
    """The language whose common words occur more often; German on a tie."""
    assert guess_language("Der Drucker druckt nicht mehr, die Aufträge hängen") == "de"
    assert guess_language("The printer does not print and jobs are stuck") == "en"
    assert guess_language("VPN", "") == "de"
    assert other_language("de") == "en"
    assert other_language("en") == "de"


def test_check_content_sets_or_checks_the_language() -> None:
    """Unset, it is guessed; set, it must be de or en, said clearly otherwise."""
    english = check_content(ArticleContent("Printer stuck", problem="The queue is stuck."))
    assert english.language == "en"
    assert check_content(ArticleContent("Drucker", language="en")).language == "en"
    with pytest.raises(ArticleInvalid, match="language is de \\(German\\) or en"):
        check_content(ArticleContent("Imprimante", language="fr"))


def test_draft_from_a_german_ticket_is_german() -> None:
    """A draft is written in its ticket's language."""
    ticket = TicketDigest(9, "acme", "Drucker druckt nicht", "Die Aufträge hängen.", "open", "")
    assert draft_from_ticket(ticket).language == "de"
