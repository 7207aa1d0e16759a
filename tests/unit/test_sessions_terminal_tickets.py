"""One-time terminal tickets: single use, short-lived, bound to who minted them."""

from __future__ import annotations

import pytest

from broker.web.terminal_tickets import (
    MAX_PER_PRINCIPAL,
    TICKET_TTL,
    TerminalTickets,
)

TOKEN = "tt_" + "A" * 43


def mint(book: TerminalTickets, token: str = TOKEN, *, user: int = 1, now: float = 0.0) -> None:
    book.mint(
        token,
        user_id=user,
        staff=f"user{user}",
        mode="open",
        ticket_id=1042,
        agent="web01",
        session=None,
        cols=100,
        rows=30,
        now=now,
    )


def test_redeem_once() -> None:
    """A ticket is good once, for its owner, with what was asked."""
    book = TerminalTickets()
    mint(book)
    grant = book.redeem(TOKEN, user_id=1, now=1.0)
    assert grant is not None
    assert (grant.staff, grant.ticket_id, grant.agent, grant.cols, grant.rows) == (
        "user1",
        1042,
        "web01",
        100,
        30,
    )
    assert grant.expires_at == TICKET_TTL
    assert book.redeem(TOKEN, user_id=1, now=1.0) is None
    assert len(book) == 0


def test_other_principal_gets_nothing_and_burns_nothing() -> None:
    """Someone else's ticket is refused, and its owner can still use it."""
    book = TerminalTickets()
    mint(book)
    assert book.redeem(TOKEN, user_id=2, now=1.0) is None
    assert book.redeem(TOKEN, user_id=1, now=1.0) is not None


def test_expired_ticket_is_refused() -> None:
    """After its lifetime a ticket is refused (and forgotten)."""
    book = TerminalTickets(ttl=60.0)
    mint(book)
    assert book.redeem(TOKEN, user_id=1, now=60.0) is None
    assert len(book) == 0


@pytest.mark.parametrize("token", [None, 42, "", "tt_short", "xx_" + "A" * 43, TOKEN + "\x00"])
def test_malformed_tokens_are_refused(token: object) -> None:
    """Anything but tt_ and 43 URL-safe characters is refused without a lookup."""
    book = TerminalTickets()
    mint(book)
    assert book.redeem(token, user_id=1, now=1.0) is None


def test_mint_refuses_malformed_token() -> None:
    """The minting side checks the token's shape too."""
    with pytest.raises(ValueError, match="tt_"):
        mint(TerminalTickets(), token="nope")


def test_per_principal_cap_and_purge() -> None:
    """A principal holds a bounded number of waiting tickets; expired ones free the room."""
    book = TerminalTickets(ttl=10.0)
    for n in range(MAX_PER_PRINCIPAL):
        mint(book, token=f"tt_{n:043d}", now=0.0)
    with pytest.raises(OverflowError):
        mint(book, token="tt_" + "B" * 43, now=1.0)
    mint(book, token="tt_" + "C" * 43, user=2, now=1.0)
    mint(book, token="tt_" + "B" * 43, now=11.0)  # the first batch expired
    assert len(book) == 1
