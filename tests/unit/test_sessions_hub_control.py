"""The pure bookkeeping of invitations and of handing control of a live session over."""

from __future__ import annotations

import pytest

from broker.sessions.hub_core import (
    MAX_INVITED,
    Disconnect,
    EndSession,
    HubClosed,
    HubCore,
    HubRefused,
    Marker,
    Notify,
    ParticipantsChanged,
    PauseAgent,
    ResumeAgent,
    roles_of,
)
from tests.unit.test_sessions_hub_core import limits


def core_with_people() -> tuple[HubCore, int, int, int]:
    core = HubCore(limits(max_participants=5), 0.0)
    owner, _ = core.join("alice", "owner", "ssh", 0.0)
    joiner, _ = core.join("bob", "joiner", "web", 0.0)
    watcher, _ = core.join("carol", "observer", "web", 0.0)
    return core, owner.pid, joiner.pid, watcher.pid


def refusal(core: HubCore, by: str, to: str, *, invite: bool = False) -> str:
    act = core.invite if invite else core.hand_over
    with pytest.raises(HubRefused) as caught:
        act(by, to)
    return caught.value.code


def test_owner_invites_once_as_a_marker() -> None:
    """An invitation is a transcript marker; inviting the same name again changes nothing."""
    core, _, _, _ = core_with_people()
    assert core.invite("alice", "dave") == [Marker("invited: dave")]
    assert core.invite("alice", "dave") == []
    assert core.invited == frozenset({"dave"})


def test_invite_refuses_non_owner_self_too_many_and_ending() -> None:
    """Only the owner invites, never themself, at most MAX_INVITED names, while running."""
    core, _, _, _ = core_with_people()
    assert refusal(core, "bob", "dave", invite=True) == "not_owner"
    assert refusal(core, "alice", "alice", invite=True) == "self"
    for n in range(MAX_INVITED):
        core.invite("alice", f"user{n}")
    assert refusal(core, "alice", "one-more", invite=True) == "too_many"
    core.end()
    with pytest.raises(HubClosed):
        core.invite("alice", "dave")


def test_hand_over_swaps_roles_and_announces() -> None:
    """The joiner becomes owner and may resize; the old owner stays as a joiner who types."""
    core, alice, bob, _ = core_with_people()
    actions = core.hand_over("alice", "bob")
    assert actions == [
        Marker("control handed from alice to bob"),
        ParticipantsChanged(),
        Notify(bob, "alice handed you control of this session"),
        Notify(alice, "you handed control to bob; you can still type"),
    ]
    assert roles_of(core.members) == [
        {"name": "alice", "role": "joiner"},
        {"name": "bob", "role": "owner"},
        {"name": "carol", "role": "observer"},
    ]
    assert core.may_resize(bob)
    assert not core.may_resize(alice)
    assert core.input(alice, 1.0) == (True, [])
    assert core.leave(alice, "closed", 2.0)[-1] == ParticipantsChanged()
    assert isinstance(core.leave(bob, "closed", 3.0)[-1], EndSession)


def test_hand_over_refusals() -> None:
    """Non-owners, the owner themself, absent users and observers are refused by code."""
    core, _, _, _ = core_with_people()
    assert refusal(core, "bob", "alice") == "not_owner"
    assert refusal(core, "carol", "bob") == "not_owner"
    assert refusal(core, "alice", "alice") == "self"
    assert refusal(core, "alice", "dave") == "absent"
    assert refusal(core, "alice", "carol") == "observer"
    core.end()
    with pytest.raises(HubClosed):
        core.hand_over("alice", "bob")


def test_hand_over_without_an_owner_is_refused() -> None:
    """A session whose owner left has nobody who may hand control over."""
    core = HubCore(limits(), 0.0)
    joiner, _ = core.join("bob", "joiner", "web", 0.0)
    assert refusal(core, "bob", "bob") == "not_owner"
    assert core.member(joiner.pid) is not None


def test_pacing_moves_with_control() -> None:
    """The old owner's full buffer stops pacing; the new owner's full buffer starts it."""
    core, alice, bob, _ = core_with_people()
    assert core.buffered(alice, 150) == [PauseAgent()]
    core.buffered(bob, 50)
    actions = core.hand_over("alice", "bob")
    assert ResumeAgent() in actions
    assert not core.agent_paused
    core2, alice2, bob2, _ = core_with_people()
    core2.buffered(bob2, 150)
    assert PauseAgent() in core2.hand_over("alice", "bob")
    assert core2.paused_by == frozenset({f"member:{bob2}"})
    assert core2.may_resize(bob2)
    assert not core2.may_resize(alice2)


def test_old_owner_over_the_follower_bound_is_cut_off() -> None:
    """An old owner whose buffer is beyond a follower's bound is disconnected at hand-over."""
    core, alice, _, _ = core_with_people()
    core.buffered(alice, 5000)
    actions = core.hand_over("alice", "bob")
    assert any(isinstance(a, Disconnect) and a.pid == alice for a in actions)
