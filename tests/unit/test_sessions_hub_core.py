"""The pure bookkeeping of a live session: participants, pacing, slow followers, the
recorder's backpressure, flushing and time limits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.sessions.hub_core import (
    IDLE_REASON,
    MAX_LENGTH_REASON,
    READ_ONLY_MESSAGE,
    SLOW_MESSAGE,
    Disconnect,
    EndSession,
    Flush,
    HubClosed,
    HubCore,
    HubFull,
    HubLimits,
    Marker,
    Notify,
    ParticipantsChanged,
    PauseAgent,
    ResumeAgent,
    roles_of,
)


def limits(**overrides: float) -> HubLimits:
    values: dict[str, float] = {
        "idle_timeout": 60.0,
        "max_seconds": 3600.0,
        "follower_max_buffer": 1000,
        "pacing_high": 100,
        "pacing_low": 10,
        "recorder_high": 400,
        "recorder_low": 50,
        "flush_bytes": 200,
        "flush_interval": 1.0,
        "max_participants": 3,
    }
    values.update(overrides)
    return HubLimits(
        idle_timeout=values["idle_timeout"],
        max_seconds=values["max_seconds"],
        follower_max_buffer=int(values["follower_max_buffer"]),
        pacing_high=int(values["pacing_high"]),
        pacing_low=int(values["pacing_low"]),
        recorder_high=int(values["recorder_high"]),
        recorder_low=int(values["recorder_low"]),
        flush_bytes=int(values["flush_bytes"]),
        flush_interval=values["flush_interval"],
        max_participants=int(values["max_participants"]),
    )


def test_limits_refuse_inverted_marks() -> None:
    """Low-water marks above high-water marks and non-positive times are refused."""
    with pytest.raises(ValueError, match="pacing_low"):
        limits(pacing_low=200)
    with pytest.raises(ValueError, match="recorder_low"):
        limits(recorder_low=500)
    with pytest.raises(ValueError, match="positive"):
        limits(idle_timeout=0)


def test_join_marks_and_lists_participants() -> None:
    """Joining puts a marker in the transcript and announces the new list."""
    core = HubCore(limits(), 0.0)
    owner, actions = core.join("alice", "owner", "ssh", 0.0)
    assert actions == [Marker("alice joined as owner (ssh)"), ParticipantsChanged()]
    watcher, _ = core.join("carol", "observer", "web", 1.0)
    assert core.owner == owner
    assert [m.name for m in core.members] == ["alice", "carol"]
    assert roles_of(core.members) == [
        {"name": "alice", "role": "owner"},
        {"name": "carol", "role": "observer"},
    ]
    assert core.member(watcher.pid) == watcher
    assert owner.types
    assert owner.paces
    assert not watcher.types
    assert not watcher.paces


def test_join_refuses_second_owner_unknown_role_full_and_closed() -> None:
    """A second owner, an unknown role, a full session and an ending one are refused."""
    core = HubCore(limits(), 0.0)
    core.join("alice", "owner", "ssh", 0.0)
    with pytest.raises(ValueError, match="owner already"):
        core.join("bob", "owner", "web", 0.0)
    with pytest.raises(ValueError, match="unknown role"):
        core.join("bob", "admin", "web", 0.0)  # type: ignore[arg-type]
    core.join("bob", "joiner", "web", 0.0)
    core.join("carol", "observer", "web", 0.0)
    with pytest.raises(HubFull):
        core.join("dave", "observer", "web", 0.0)
    core.end()
    with pytest.raises(HubClosed):
        core.join("erin", "observer", "web", 0.0)


def test_owner_leaving_ends_the_session() -> None:
    """The owner's departure is a marker, a new list and the end of the session."""
    core = HubCore(limits(), 0.0)
    owner, _ = core.join("alice", "owner", "ssh", 0.0)
    actions = core.leave(owner.pid, "disconnected", 5.0)
    assert actions == [
        Marker("alice left (disconnected)"),
        ParticipantsChanged(),
        EndSession("ended", "owner_left"),
    ]
    assert core.leave(owner.pid, "again", 6.0) == []


def test_follower_leaving_keeps_the_session() -> None:
    """An observer leaving is recorded and announced, and the session goes on."""
    core = HubCore(limits(), 0.0)
    core.join("alice", "owner", "ssh", 0.0)
    watcher, _ = core.join("carol", "observer", "web", 0.0)
    assert core.leave(watcher.pid, "closed", 1.0) == [
        Marker("carol left (closed)"),
        ParticipantsChanged(),
    ]


def test_leaving_while_ending_is_not_a_marker() -> None:
    """Once the session ends, departures change the list but add no markers."""
    core = HubCore(limits(), 0.0)
    owner, _ = core.join("alice", "owner", "ssh", 0.0)
    core.end()
    assert core.leave(owner.pid, "session ended", 1.0) == [ParticipantsChanged()]


def test_observer_input_is_dropped_and_told_once() -> None:
    """Observers never type: the first attempt gets a notice, later ones nothing."""
    core = HubCore(limits(), 0.0)
    core.join("alice", "owner", "ssh", 0.0)
    watcher, _ = core.join("carol", "observer", "web", 0.0)
    assert core.input(watcher.pid, 1.0) == (False, [Notify(watcher.pid, READ_ONLY_MESSAGE)])
    assert core.input(watcher.pid, 2.0) == (False, [])


def test_owner_and_joiner_input_goes_through() -> None:
    """The owner and joiners type; unknown participants and ended sessions do not."""
    core = HubCore(limits(), 0.0)
    owner, _ = core.join("alice", "owner", "ssh", 0.0)
    joiner, _ = core.join("dora", "joiner", "web", 0.0)
    assert core.input(owner.pid, 1.0) == (True, [])
    assert core.input(joiner.pid, 1.0) == (True, [])
    assert core.input(99, 1.0) == (False, [])
    core.end()
    assert core.input(owner.pid, 2.0) == (False, [])


def test_only_the_owner_resizes() -> None:
    """The PTY size follows the owner's terminal only, and only while running."""
    core = HubCore(limits(), 0.0)
    owner, _ = core.join("alice", "owner", "ssh", 0.0)
    joiner, _ = core.join("dora", "joiner", "web", 0.0)
    assert core.may_resize(owner.pid)
    assert not core.may_resize(joiner.pid)
    assert not core.may_resize(42)
    core.end()
    assert not core.may_resize(owner.pid)


def test_slow_follower_is_disconnected_once() -> None:
    """A follower over its buffer bound is cut off with a message; nobody else pauses."""
    core = HubCore(limits(), 0.0)
    core.join("alice", "owner", "ssh", 0.0)
    watcher, _ = core.join("carol", "observer", "web", 0.0)
    assert core.buffered(watcher.pid, 1000) == []
    assert core.buffered(watcher.pid, 1001) == [Disconnect(watcher.pid, SLOW_MESSAGE)]
    assert core.buffered(watcher.pid, 5000) == []
    assert not core.agent_paused


def test_owner_buffer_paces_the_agent() -> None:
    """The owner's full buffer pauses the agent; draining below the low mark resumes it."""
    core = HubCore(limits(), 0.0)
    owner, _ = core.join("alice", "owner", "ssh", 0.0)
    assert core.buffered(owner.pid, 100) == []
    assert core.buffered(owner.pid, 101) == [PauseAgent()]
    assert core.buffered(owner.pid, 500) == []
    assert core.paused_by == frozenset({f"member:{owner.pid}"})
    assert core.buffered(owner.pid, 50) == []
    assert core.buffered(owner.pid, 10) == [ResumeAgent()]
    assert core.buffered(owner.pid, 0) == []
    assert core.buffered(77, 10_000) == []


def test_owner_leaving_while_pacing_resumes_the_agent() -> None:
    """A paused owner that leaves no longer holds the agent."""
    core = HubCore(limits(), 0.0)
    owner, _ = core.join("alice", "owner", "ssh", 0.0)
    core.buffered(owner.pid, 1000)
    actions = core.leave(owner.pid, "disconnected", 1.0)
    assert ResumeAgent() in actions


def test_recorder_flushes_by_size_and_pauses_when_behind() -> None:
    """Past the flush size a flush starts; past the high mark the agent pauses until
    the flushes catch up."""
    core = HubCore(limits(), 0.0)
    assert core.output(150, 0.1) == []
    assert core.output(60, 0.2) == [Flush()]
    assert core.flushing
    assert core.unflushed == 210
    assert core.output(150, 0.3) == []  # a flush runs already
    assert core.output(100, 0.4) == [PauseAgent()]
    assert core.paused_by == frozenset({"recorder"})
    # 250 bytes waited meanwhile: another flush starts at once, the agent stays paused.
    assert core.flush_done(0.5) == [Flush()]
    assert core.agent_paused
    assert core.flush_done(0.6) == [ResumeAgent()]
    assert not core.agent_paused
    assert not core.flushing


def test_recorder_and_owner_pause_independently() -> None:
    """The agent resumes only when neither the recorder nor the owner holds it."""
    core = HubCore(limits(), 0.0)
    owner, _ = core.join("alice", "owner", "ssh", 0.0)
    assert core.buffered(owner.pid, 200) == [PauseAgent()]
    assert core.output(500, 0.1) == [Flush()]
    core.output(1, 0.1)
    assert core.paused_by == frozenset({"recorder", f"member:{owner.pid}"})
    assert core.flush_done(0.2) == []
    assert core.buffered(owner.pid, 0) == [ResumeAgent()]


def test_tick_flushes_once_a_second() -> None:
    """Small output is flushed by the tick once the interval passed."""
    core = HubCore(limits(), 0.0)
    core.output(10, 0.2)
    assert core.tick(0.5) == []
    assert core.tick(1.0) == [Flush()]
    assert core.tick(2.5) == []  # flushing already
    core.flush_done(2.6)
    assert core.tick(4.0) == []  # nothing waits


def test_what_is_recorded_beside_output_is_flushed_like_output() -> None:
    """Resizes and typed input are flushed by size and by the tick too: a resize storm with
    no output is written out, not kept in memory until some output comes."""
    core = HubCore(limits(), 0.0)
    assert core.recorded(150, 0.1) == []
    assert core.recorded(60, 0.2) == [Flush()]
    core.flush_done(0.3)
    core.recorded(32, 0.4)
    assert core.tick(1.3) == [Flush()]
    core.flush_done(1.4)
    # It is not activity: a client that only resizes still times out as idle.
    assert core.tick(61.0) == [EndSession(IDLE_REASON, "idle")]


def test_idle_and_max_length_end_the_session() -> None:
    """No input and no output for the idle timeout ends it; so does the maximum length."""
    core = HubCore(limits(idle_timeout=10, max_seconds=100), 0.0)
    owner, _ = core.join("alice", "owner", "ssh", 0.0)
    assert core.tick(9.9) == []
    core.input(owner.pid, 9.0)
    assert core.tick(18.0) == []
    assert core.tick(19.0) == [EndSession(IDLE_REASON, "idle")]
    busy = HubCore(limits(idle_timeout=10, max_seconds=100), 0.0)
    for second in range(0, 100, 5):
        busy.output(1, float(second))
        busy.flush_done(float(second))
    assert busy.tick(100.0) == [Flush(), EndSession(MAX_LENGTH_REASON, "max_length")]


def test_ended_phases_stop_ticks() -> None:
    """An ending session fires no more limits; ended() is final."""
    core = HubCore(limits(idle_timeout=1), 0.0)
    phases = [core.phase]
    core.end()
    phases.append(core.phase)
    assert core.tick(100.0) == []
    core.ended()
    core.end()
    phases.append(core.phase)
    assert phases == ["running", "ending", "ended"]


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 300)), max_size=60))
def test_pause_and_resume_alternate(steps: list[tuple[bool, int]]) -> None:
    """Whatever happens, pause and resume actions alternate, starting with a pause."""
    core = HubCore(limits(), 0.0)
    owner, _ = core.join("alice", "owner", "ssh", 0.0)
    paused = False
    now = 0.0
    for is_output, size in steps:
        now += 0.1
        if is_output:
            actions = core.output(size, now)
            if Flush() in actions:
                actions += core.flush_done(now)
        else:
            actions = core.buffered(owner.pid, size)
        for action in actions:
            if isinstance(action, PauseAgent):
                assert not paused
                paused = True
            elif isinstance(action, ResumeAgent):
                assert paused
                paused = False
        assert paused == core.agent_paused
