"""One-time tickets that let a browser's WebSocket attach to a terminal (pure).

The console mints a ticket with an authenticated API call (``POST
/api/v1/sessions/terminal-tickets``) and sends it as the WebSocket's first message, so no
credential ever travels in a URL. A ticket is good once, for :data:`TICKET_TTL` seconds,
and only for the principal who minted it. Tickets are kept by their SHA-256, never as
given; the caller passes ``now`` and the random token.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Final, Literal

TICKET_TTL: Final = 60.0
MAX_PER_PRINCIPAL: Final = 16
MAX_TOTAL: Final = 10_000
TOKEN_PATTERN: Final = re.compile(r"tt_[A-Za-z0-9_-]{43}")

Mode = Literal["open", "join", "observe"]


@dataclass(frozen=True, kw_only=True)
class TerminalGrant:
    """What a terminal ticket allows: who, which ticket and agent or session, what size."""

    user_id: int
    staff: str
    mode: Mode
    ticket_id: int
    agent: str | None
    session: str | None
    cols: int
    rows: int
    expires_at: float


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


class TerminalTickets:
    """Outstanding terminal tickets of this broker node."""

    def __init__(self, *, ttl: float = TICKET_TTL) -> None:
        self.ttl = ttl
        self._grants: dict[str, TerminalGrant] = {}

    def __len__(self) -> int:
        return len(self._grants)

    def purge(self, now: float) -> None:
        """Forget expired tickets."""
        for key in [k for k, g in self._grants.items() if g.expires_at <= now]:
            del self._grants[key]

    def mint(
        self,
        token: str,
        *,
        user_id: int,
        staff: str,
        mode: Mode,
        ticket_id: int,
        agent: str | None,
        session: str | None,
        cols: int,
        rows: int,
        now: float,
    ) -> TerminalGrant:
        """Keep a new ticket; raises ValueError for a malformed token or too many tickets."""
        if not TOKEN_PATTERN.fullmatch(token):
            raise ValueError("a terminal ticket is tt_ and 43 URL-safe characters")
        self.purge(now)
        mine = sum(1 for g in self._grants.values() if g.user_id == user_id)
        if mine >= MAX_PER_PRINCIPAL:
            raise OverflowError(
                f"you have {mine} unused terminal tickets, the limit; open a terminal with "
                f"one of them, or wait up to {self.ttl:.0f} s for them to expire"
            )
        if len(self._grants) >= MAX_TOTAL:
            raise OverflowError(
                "this broker holds too many unused terminal tickets; "
                f"try again in {self.ttl:.0f} s, and tell an admin if it lasts"
            )
        grant = TerminalGrant(
            user_id=user_id,
            staff=staff,
            mode=mode,
            ticket_id=ticket_id,
            agent=agent,
            session=session,
            cols=cols,
            rows=rows,
            expires_at=now + self.ttl,
        )
        self._grants[_digest(token)] = grant
        return grant

    def redeem(self, token: object, *, user_id: int, now: float) -> TerminalGrant | None:
        """The grant of ``token``, used up; None when unknown, used, expired or not yours."""
        if not isinstance(token, str) or not TOKEN_PATTERN.fullmatch(token):
            return None
        key = _digest(token)
        grant = self._grants.get(key)
        if grant is None or grant.user_id != user_id:
            # Another principal's ticket stays usable by its owner: a guess burns nothing.
            return None
        del self._grants[key]
        if grant.expires_at <= now:
            return None
        return grant
