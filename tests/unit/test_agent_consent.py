"""Unit tests of the consent bookkeeping (pure, `now` passed in) and its asyncio service."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from agent.consent import ConsentBook, ConsentKey, ConsentRequest, ConsentService, Decision
from agent.errors import ConsentError
from agent.protocol import SessionEnv

A = SessionEnv(session="s-" + "A" * 22, staff="alice", staff_level=2, ticket="T-1")
B = SessionEnv(session="s-" + "B" * 22, staff="bob", staff_level=3, ticket="T-2")
KA = ConsentKey.of(A)


def test_unattended_needs_no_consent() -> None:
    """An unattended book answers not_required and allows everything."""
    book = ConsentBook(attended=False, timeout=120)
    decision = book.request(A, now=10)
    assert isinstance(decision, Decision)
    assert (decision.decision, decision.by, decision.allows) == ("not_required", None, True)
    assert book.is_allowed(A.session, now=10_000)
    assert book.pending() == []


def test_request_is_pending_until_decided() -> None:
    """An attended request waits with its deadline; asking again returns the same request."""
    book = ConsentBook(attended=True, timeout=120)
    first = book.request(A, now=100)
    assert isinstance(first, ConsentRequest)
    assert first.deadline == 220
    assert book.request(A, now=150) is first
    assert book.pending() == [first]
    assert book.next_deadline() == 220
    assert not book.is_allowed(A.session, now=150)


def test_approval_allows_for_five_minutes() -> None:
    """An approval lets the session start for 300 s, then no longer."""
    book = ConsentBook(attended=True, timeout=120)
    book.request(A, now=100)
    decision = book.decide(KA, approved=True, by="carol", now=110)
    assert (decision.decision, decision.by, decision.at) == ("approved", "carol", 110)
    assert book.is_allowed(A.session, now=110)
    assert book.is_allowed(A.session, now=410)
    assert not book.is_allowed(A.session, now=411)
    assert not book.is_allowed(B.session, now=110)
    assert not book.is_allowed(A.session, now=109)  # a clock that went back proves nothing


def test_an_earlier_approval_never_answers_a_new_request() -> None:
    """Each entry is asked about: after the owner's approval, the owner asking again, a
    joiner and an observer of the same session each wait for an answer of their own."""
    book = ConsentBook(attended=True, timeout=120)
    book.request(A, now=0)
    book.decide(KA, approved=True, by="carol", now=1)
    again = book.request(A, now=2)
    assert isinstance(again, ConsentRequest)
    joiner = book.request(replace(A, staff="dave", role="participant"), now=3)
    observer = book.request(replace(A, staff="tina", role="observer"), now=4)
    assert isinstance(joiner, ConsentRequest)
    assert isinstance(observer, ConsentRequest)
    assert len(book.pending()) == 3
    assert joiner.to_dict()["role"] == "participant"


def test_denial_refuses_and_a_new_request_asks_again() -> None:
    """A denied session stays refused; asking again creates a new pending request."""
    book = ConsentBook(attended=True, timeout=120)
    book.request(A, now=0)
    denial = book.decide(KA, approved=False, by="carol", now=5)
    assert (denial.decision, denial.allows) == ("denied", False)
    assert not book.is_allowed(A.session, now=6)
    assert isinstance(book.request(A, now=7), ConsentRequest)


def test_deciding_without_a_request_is_an_error() -> None:
    """Approving a session that is not waiting raises ConsentError naming `sessions`."""
    book = ConsentBook(attended=True, timeout=120)
    with pytest.raises(ConsentError, match="secondline-agent sessions"):
        book.decide(KA, approved=True, by="carol", now=0)
    book.request(A, now=0)
    book.decide(KA, approved=True, by="carol", now=1)
    with pytest.raises(ConsentError):
        book.decide(KA, approved=False, by="carol", now=2)


def test_expire_times_out_overdue_requests_only() -> None:
    """Requests past their deadline become timeouts; others keep waiting."""
    book = ConsentBook(attended=True, timeout=10)
    book.request(A, now=0)
    book.request(B, now=5)
    assert book.expire(now=9) == []
    [timeout] = book.expire(now=10)
    assert (timeout.session, timeout.decision, timeout.by) == (A.session, "timeout", None)
    assert [req.env.session for req in book.pending()] == [B.session]
    assert book.next_deadline() == 15
    assert not book.is_allowed(A.session, now=11)


def test_expire_forgets_stale_decisions() -> None:
    """Decisions older than the approval window are dropped (bounded memory)."""
    book = ConsentBook(attended=True, timeout=10, validity=300)
    book.request(A, now=0)
    book.decide(KA, approved=True, by="carol", now=0)
    book.expire(now=301)
    assert not book.is_allowed(A.session, now=301)
    assert isinstance(book.request(A, now=302), ConsentRequest)


def test_withdraw_forgets_a_pending_request() -> None:
    """A request nobody waits for is withdrawn without a decision."""
    book = ConsentBook(attended=True, timeout=10)
    request = book.request(A, now=0)
    assert book.withdraw(KA) is request
    assert book.withdraw(KA) is None
    assert book.pending() == []
    assert book.next_deadline() is None


def test_request_to_dict_and_decision_answer() -> None:
    """The shapes shown to the end user and sent to the broker carry ISO-8601 UTC times."""
    book = ConsentBook(attended=True, timeout=120)
    request = book.request(A, now=0)
    assert isinstance(request, ConsentRequest)
    shown = request.to_dict()
    assert shown["requested_at"] == "1970-01-01T00:00:00Z"
    assert shown["deadline"] == "1970-01-01T00:02:00Z"
    decision = book.decide(KA, approved=True, by="carol", now=60)
    assert decision.answer().serialize() == (
        b'{"decision":"approved","by":"carol","at":"1970-01-01T00:01:00Z"}\n'
    )


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_service_wakes_the_waiter_on_decision() -> None:
    """ask() waits until decide() answers; listeners hear the request and the decision."""
    clock = FakeClock()
    service = ConsentService(ConsentBook(attended=True, timeout=120), clock=clock)
    events: list[object] = []
    service.add_listener(events.append)
    waiter = asyncio.create_task(service.ask(A))
    await asyncio.sleep(0)  # one loop turn for the request to register
    assert isinstance(events[0], ConsentRequest)
    decision = service.answer(A.session, approved=True, by="carol")
    assert await waiter == decision
    assert events[-1] == decision
    assert service.is_allowed(A.session)
    service.close()


async def test_service_times_out_with_the_loop_timer() -> None:
    """Without an answer, the timer resolves the waiter with a timeout."""
    service = ConsentService(ConsentBook(attended=True, timeout=0.01))
    async with asyncio.timeout(10):
        decision = await service.ask(A)
    assert decision.decision == "timeout"
    service.close()


async def test_service_withdraws_when_the_last_waiter_leaves() -> None:
    """Cancelling the only waiter withdraws the request; other waiters keep it alive."""
    service = ConsentService(ConsentBook(attended=True, timeout=120), clock=FakeClock())
    first = asyncio.create_task(service.ask(A))
    second = asyncio.create_task(service.ask(A))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.wait([first])
    assert [req.env.session for req in service.book.pending()] == [A.session]
    second.cancel()
    await asyncio.wait([second])
    assert service.book.pending() == []
    service.close()


async def test_two_waiting_people_must_be_named_and_each_is_answered_alone() -> None:
    """With a joiner and an observer waiting on one session, an unnamed answer is refused
    with both names; a named one answers that person only."""
    service = ConsentService(ConsentBook(attended=True, timeout=120), clock=FakeClock())
    joiner = asyncio.create_task(service.ask(replace(A, staff="dave", role="participant")))
    observer = asyncio.create_task(service.ask(replace(A, staff="tina", role="observer")))
    await asyncio.sleep(0)
    with pytest.raises(ConsentError, match=r"dave \(participant\), tina \(observer\)"):
        service.answer(A.session, approved=True, by="carol")
    denial = service.answer(A.session, approved=False, by="carol", staff="tina")
    assert await observer == denial
    assert not joiner.done()
    approval = service.answer(A.session, approved=True, by="carol")  # only dave waits now
    assert (await joiner).key == ConsentKey(A.session, "dave", "participant")
    assert approval.decision == "approved"
    service.close()


async def test_denying_after_approving_withdraws_from_every_holder() -> None:
    """A denial after an approval answers every channel holding it, and the owner's
    withdrawn approval no longer lets shells start; without a holder it is an error."""
    service = ConsentService(ConsentBook(attended=True, timeout=120), clock=FakeClock())
    owner = replace(A, role="owner")
    asking = asyncio.create_task(service.ask(owner))
    await asyncio.sleep(0)
    approval = service.answer(A.session, approved=True, by="carol")
    assert await asking == approval
    assert service.is_allowed(A.session)
    holders = [asyncio.create_task(service.hold(approval)) for _ in range(2)]
    await asyncio.sleep(0)
    assert service.held() == [approval.key]
    withdrawal = service.answer(A.session, approved=False, by="carol", staff="alice")
    assert (withdrawal.decision, withdrawal.withdrawn) == ("denied", True)
    assert [await h for h in holders] == [withdrawal, withdrawal]
    assert service.held() == []
    assert not service.is_allowed(A.session)
    with pytest.raises(ConsentError, match="waiting or approved"):
        service.answer(A.session, approved=False, by="carol")
    service.close()
