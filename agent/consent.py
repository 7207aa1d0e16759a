"""Consent of the end user (attended agents).

:class:`ConsentBook` is the pure bookkeeping: pending requests, decisions, timeouts and
the approval window, with ``now`` passed in by the caller. :class:`ConsentService` is the
asyncio side: ``sl:consent`` channels await :meth:`ConsentService.ask`, the control socket
and the terminal prompt call :meth:`ConsentService.decide`, and a single timer turns
overdue requests into ``timeout`` decisions.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from agent.errors import ConsentError
from agent.protocol import (
    CONSENT_VALIDITY_SECONDS,
    ConsentAnswer,
    ConsentDecision,
    SessionEnv,
    iso_utc,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsentRequest:
    """A staff member waits for the end user to approve a session."""

    env: SessionEnv
    requested_at: float
    deadline: float

    def to_dict(self) -> dict[str, object]:
        """The JSON shape shown by ``secondline-agent sessions``."""
        return {
            "session": self.env.session,
            "staff": self.env.staff,
            "staff_level": self.env.staff_level,
            "ticket": self.env.ticket,
            "ticket_title": self.env.ticket_title,
            "requested_at": iso_utc(self.requested_at),
            "deadline": iso_utc(self.deadline),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """The outcome of a consent request."""

    session: str
    decision: ConsentDecision
    by: str | None
    at: float

    @property
    def allows(self) -> bool:
        """True when the session may start."""
        return self.decision in ("approved", "not_required")

    def answer(self) -> ConsentAnswer:
        """What ``sl:consent`` writes."""
        return ConsentAnswer(
            decision=self.decision, by=self.by, at=datetime.fromtimestamp(self.at, UTC)
        )


class ConsentBook:
    """Pending requests and decisions; never awaits, never reads the clock."""

    def __init__(
        self, *, attended: bool, timeout: float, validity: float = CONSENT_VALIDITY_SECONDS
    ) -> None:
        self.attended = attended
        self.timeout = timeout
        self.validity = validity
        self._pending: dict[str, ConsentRequest] = {}
        self._decisions: dict[str, Decision] = {}

    def request(self, env: SessionEnv, now: float) -> ConsentRequest | Decision:
        """Ask for consent: a decision at once, or the (possibly existing) pending request."""
        if not self.attended:
            return Decision(session=env.session, decision="not_required", by=None, at=now)
        previous = self._decisions.get(env.session)
        if previous is not None and previous.allows and now - previous.at <= self.validity:
            return previous
        pending = self._pending.get(env.session)
        if pending is None:
            pending = ConsentRequest(env=env, requested_at=now, deadline=now + self.timeout)
            self._pending[env.session] = pending
        return pending

    def decide(self, session: str, *, approved: bool, by: str, now: float) -> Decision:
        """Record the end user's answer to a pending request."""
        if session not in self._pending:
            raise ConsentError(
                f"no session {session} is waiting for approval; "
                "list the waiting ones with: secondline-agent sessions"
            )
        del self._pending[session]
        decision = Decision(
            session=session, decision="approved" if approved else "denied", by=by, at=now
        )
        self._decisions[session] = decision
        return decision

    def expire(self, now: float) -> list[Decision]:
        """Turn overdue requests into ``timeout`` decisions and forget stale decisions."""
        overdue = [req for req in self._pending.values() if req.deadline <= now]
        decisions = []
        for req in overdue:
            del self._pending[req.env.session]
            decision = Decision(session=req.env.session, decision="timeout", by=None, at=now)
            self._decisions[req.env.session] = decision
            decisions.append(decision)
        for session, old in list(self._decisions.items()):
            if now - old.at > self.validity:
                del self._decisions[session]
        return decisions

    def withdraw(self, session: str) -> ConsentRequest | None:
        """Forget a pending request nobody waits for any more (the channel closed)."""
        return self._pending.pop(session, None)

    def is_allowed(self, session: str, now: float) -> bool:
        """May a shell or command of ``session`` start now?"""
        if not self.attended:
            return True
        decision = self._decisions.get(session)
        return (
            decision is not None
            and decision.decision == "approved"
            and 0 <= now - decision.at <= self.validity
        )

    def pending(self) -> list[ConsentRequest]:
        """The waiting requests, oldest first."""
        return sorted(self._pending.values(), key=lambda req: req.requested_at)

    def next_deadline(self) -> float | None:
        """When the next request times out, if any waits."""
        return min((req.deadline for req in self._pending.values()), default=None)


ConsentListener = Callable[[ConsentRequest | Decision], None]


class ConsentService:
    """The asyncio side of :class:`ConsentBook`: waiters, the timeout timer, listeners."""

    def __init__(self, book: ConsentBook, *, clock: Callable[[], float] = time.time) -> None:
        self.book = book
        self._clock = clock
        self._waiters: dict[str, asyncio.Future[Decision]] = {}
        self._waiting: dict[str, int] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._listeners: list[ConsentListener] = []

    def add_listener(self, listener: ConsentListener) -> None:
        """Call ``listener`` with every new request and every decision."""
        self._listeners.append(listener)

    def is_allowed(self, session: str) -> bool:
        """May a shell or command of ``session`` start now?"""
        return self.book.is_allowed(session, self._clock())

    async def ask(self, env: SessionEnv) -> Decision:
        """Wait for the decision on ``env.session`` (at once when none is needed)."""
        result = self.book.request(env, self._clock())
        if isinstance(result, Decision):
            return result
        future = self._waiters.get(env.session)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._waiters[env.session] = future
            self._notify(result)
            self._schedule()
        self._waiting[env.session] = self._waiting.get(env.session, 0) + 1
        try:
            return await asyncio.shield(future)
        finally:
            self._waiting[env.session] -= 1
            if not self._waiting[env.session]:
                del self._waiting[env.session]
                if not future.done():
                    # The last channel waiting for it closed: the request is moot.
                    self.book.withdraw(env.session)
                    del self._waiters[env.session]
                    future.cancel()
                    self._schedule()

    def decide(self, session: str, *, approved: bool, by: str) -> Decision:
        """Record the end user's answer and wake the waiting channel."""
        decision = self.book.decide(session, approved=approved, by=by, now=self._clock())
        self._resolve(decision)
        self._schedule()
        return decision

    def close(self) -> None:
        """Stop the timer (the agent is shutting down)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _resolve(self, decision: Decision) -> None:
        future = self._waiters.pop(decision.session, None)
        if future is not None and not future.done():
            future.set_result(decision)
        self._notify(decision)

    def _notify(self, event: ConsentRequest | Decision) -> None:
        for listener in self._listeners:
            listener(event)

    def _schedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.book.next_deadline()
        if deadline is not None:
            delay = max(0.0, deadline - self._clock())
            self._timer = asyncio.get_running_loop().call_later(delay, self._expire)

    def _expire(self) -> None:
        self._timer = None
        for decision in self.book.expire(self._clock()):
            self._resolve(decision)
        self._schedule()
