"""Consent of the end user (attended agents).

Every staff member who enters a session asks on their own: a request is keyed by session,
staff member and role (:class:`ConsentKey`), so the owner's approval never answers for a
joiner or an observer, and each is named in the question. A retry of the same person for
the same role while the request waits shares that request (one question, one answer).

:class:`ConsentBook` is the pure bookkeeping: pending requests, decisions, timeouts and
the approval window, with ``now`` passed in by the caller. :class:`ConsentService` is the
asyncio side: ``sl:consent`` channels await :meth:`ConsentService.ask` and then, while the
broker keeps the channel open, hold the approval (:meth:`ConsentService.hold`); the
control socket and the terminal prompt call :meth:`ConsentService.answer`, and a denial
after an approval withdraws it from every channel holding it; a single timer turns overdue
requests into ``timeout`` decisions.
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
    ConsentRole,
    SessionEnv,
    iso_utc,
)

_HOW_TO_LIST = "list the waiting ones with: secondline-agent sessions"


@dataclass(frozen=True, slots=True)
class ConsentKey:
    """Who asks to enter which session, in which role."""

    session: str
    staff: str
    role: ConsentRole

    @classmethod
    def of(cls, env: SessionEnv) -> ConsentKey:
        return cls(env.session, env.staff, env.asked_role)

    def describe(self) -> str:
        return f"{self.staff} ({self.role})"


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsentRequest:
    """A staff member waits for the end user to let them into a session."""

    env: SessionEnv
    requested_at: float
    deadline: float

    @property
    def key(self) -> ConsentKey:
        return ConsentKey.of(self.env)

    def to_dict(self) -> dict[str, object]:
        """The JSON shape shown by ``secondline-agent sessions``."""
        return {
            "session": self.env.session,
            "staff": self.env.staff,
            "staff_level": self.env.staff_level,
            "role": self.env.asked_role,
            "ticket": self.env.ticket,
            "ticket_title": self.env.ticket_title,
            "requested_at": iso_utc(self.requested_at),
            "deadline": iso_utc(self.deadline),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """The outcome of a consent request (or the withdrawal of an approval)."""

    key: ConsentKey
    decision: ConsentDecision
    by: str | None
    at: float
    withdrawn: bool = False  # a denial after an approval

    @property
    def session(self) -> str:
        return self.key.session

    @property
    def allows(self) -> bool:
        """True when the staff member may enter."""
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
        self._pending: dict[ConsentKey, ConsentRequest] = {}
        self._decisions: dict[ConsentKey, Decision] = {}

    def request(self, env: SessionEnv, now: float) -> ConsentRequest | Decision:
        """Ask for consent: a decision at once (unattended), or the pending request of the
        same person and role (a new one unless one waits already). An earlier approval never
        answers a new request: every entry is asked about."""
        key = ConsentKey.of(env)
        if not self.attended:
            return Decision(key=key, decision="not_required", by=None, at=now)
        pending = self._pending.get(key)
        if pending is None:
            pending = ConsentRequest(env=env, requested_at=now, deadline=now + self.timeout)
            self._pending[key] = pending
        return pending

    def matching(self, session: str, staff: str | None = None) -> list[ConsentKey]:
        """The pending requests of ``session`` (of ``staff``, when named)."""
        return [key for key in self._pending if _matches(key, session, staff)]

    def find(self, session: str, staff: str | None = None) -> ConsentKey:
        """The one pending request of ``session`` (of ``staff``, when named)."""
        keys = self.matching(session, staff)
        who = f" from {staff}" if staff is not None else ""
        if not keys:
            raise ConsentError(
                f"no request{who} for session {session} is waiting for approval; {_HOW_TO_LIST}"
            )
        if len(keys) > 1:
            raise ConsentError(_ambiguous(session, keys))
        return keys[0]

    def decide(self, key: ConsentKey, *, approved: bool, by: str, now: float) -> Decision:
        """Record the end user's answer to the pending request ``key``."""
        if key not in self._pending:
            raise ConsentError(
                f"no request from {key.describe()} for session {key.session} is waiting "
                f"for approval; {_HOW_TO_LIST}"
            )
        del self._pending[key]
        decision = Decision(key=key, decision="approved" if approved else "denied", by=by, at=now)
        self._decisions[key] = decision
        return decision

    def withdraw_approval(self, key: ConsentKey, *, by: str, now: float) -> Decision:
        """The end user denies after approving: new channels are refused from now on."""
        decision = Decision(key=key, decision="denied", by=by, at=now, withdrawn=True)
        self._decisions[key] = decision
        return decision

    def expire(self, now: float) -> list[Decision]:
        """Turn overdue requests into ``timeout`` decisions and forget stale decisions."""
        overdue = [req for req in self._pending.values() if req.deadline <= now]
        decisions = []
        for req in overdue:
            del self._pending[req.key]
            decision = Decision(key=req.key, decision="timeout", by=None, at=now)
            self._decisions[req.key] = decision
            decisions.append(decision)
        for key, old in list(self._decisions.items()):
            if now - old.at > self.validity:
                del self._decisions[key]
        return decisions

    def withdraw(self, key: ConsentKey) -> ConsentRequest | None:
        """Forget a pending request nobody waits for any more (the channel closed)."""
        return self._pending.pop(key, None)

    def is_allowed(self, session: str, now: float) -> bool:
        """May a shell or command of ``session`` start now? Only the owner's approval,
        given in the approval window and not withdrawn since, lets one start."""
        if not self.attended:
            return True
        return any(
            key.session == session
            and key.role == "owner"
            and decision.decision == "approved"
            and 0 <= now - decision.at <= self.validity
            for key, decision in self._decisions.items()
        )

    def pending(self) -> list[ConsentRequest]:
        """The waiting requests, oldest first."""
        return sorted(self._pending.values(), key=lambda req: req.requested_at)

    def next_deadline(self) -> float | None:
        """When the next request times out, if any waits."""
        return min((req.deadline for req in self._pending.values()), default=None)


def _matches(key: ConsentKey, session: str, staff: str | None) -> bool:
    return key.session == session and (staff is None or key.staff == staff)


def _ambiguous(session: str, keys: list[ConsentKey]) -> str:
    names = ", ".join(sorted(key.describe() for key in keys))
    return (
        f"several people wait or are let into session {session}: {names}; name one, "
        f"for example: secondline-agent approve {session} {keys[0].staff}"
    )


ConsentListener = Callable[[ConsentRequest | Decision], None]


class ConsentService:
    """The asyncio side of :class:`ConsentBook`: waiters, holders of approvals, the
    timeout timer, listeners."""

    def __init__(self, book: ConsentBook, *, clock: Callable[[], float] = time.time) -> None:
        self.book = book
        self._clock = clock
        self._waiters: dict[ConsentKey, asyncio.Future[Decision]] = {}
        self._waiting: dict[ConsentKey, int] = {}
        # Approvals in force: one future per open sl:consent channel holding one, resolved
        # with the denial when the end user withdraws it.
        self._held: dict[ConsentKey, set[asyncio.Future[Decision]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._listeners: list[ConsentListener] = []

    def add_listener(self, listener: ConsentListener) -> None:
        """Call ``listener`` with every new request and every decision."""
        self._listeners.append(listener)

    def is_allowed(self, session: str) -> bool:
        """May a shell or command of ``session`` start now?"""
        return self.book.is_allowed(session, self._clock())

    def held(self) -> list[ConsentKey]:
        """The approvals in force (a channel holds them), by session."""
        return sorted(self._held, key=lambda key: (key.session, key.staff, key.role))

    async def ask(self, env: SessionEnv) -> Decision:
        """Wait for the decision on ``env`` (at once when none is needed)."""
        result = self.book.request(env, self._clock())
        if isinstance(result, Decision):
            return result
        key = result.key
        future = self._waiters.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._waiters[key] = future
            self._notify(result)
            self._schedule()
        self._waiting[key] = self._waiting.get(key, 0) + 1
        try:
            return await asyncio.shield(future)
        finally:
            self._waiting[key] -= 1
            if not self._waiting[key]:
                del self._waiting[key]
                if not future.done():
                    # The last channel waiting for it closed: the request is moot.
                    self.book.withdraw(key)
                    del self._waiters[key]
                    future.cancel()
                    self._schedule()

    async def hold(self, approval: Decision) -> Decision:
        """Keep ``approval`` in force until the end user withdraws it (returns the denial);
        the caller cancels this when its channel closes."""
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        holders = self._held.setdefault(approval.key, set())
        holders.add(future)
        try:
            return await future
        finally:
            holders.discard(future)
            if not holders and self._held.get(approval.key) is holders:
                del self._held[approval.key]

    def answer(
        self, session: str, *, approved: bool, by: str, staff: str | None = None
    ) -> Decision:
        """The end user approves or denies a request of ``session`` (of ``staff``, needed
        when several wait); denying someone already let in withdraws their approval."""
        if approved or self.book.matching(session, staff):
            return self.decide(self.book.find(session, staff), approved=approved, by=by)
        held = [key for key in self._held if _matches(key, session, staff)]
        if not held:
            who = f" from {staff}" if staff is not None else ""
            raise ConsentError(
                f"no request{who} for session {session} is waiting or approved; {_HOW_TO_LIST}"
            )
        if len({key.staff for key in held}) > 1:
            raise ConsentError(_ambiguous(session, held))
        decisions = [self.withdraw_approval(key, by=by) for key in held]
        return decisions[0]

    def decide(self, key: ConsentKey, *, approved: bool, by: str) -> Decision:
        """Record the end user's answer to ``key`` and wake the waiting channels."""
        decision = self.book.decide(key, approved=approved, by=by, now=self._clock())
        self._resolve(decision)
        self._schedule()
        return decision

    def withdraw_approval(self, key: ConsentKey, *, by: str) -> Decision:
        """The end user denies after approving: every channel holding it answers so."""
        decision = self.book.withdraw_approval(key, by=by, now=self._clock())
        for future in self._held.pop(key, set()):
            if not future.done():
                future.set_result(decision)
        self._notify(decision)
        return decision

    def close(self) -> None:
        """Stop the timer (the agent is shutting down)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _resolve(self, decision: Decision) -> None:
        future = self._waiters.pop(decision.key, None)
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
