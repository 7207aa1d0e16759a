"""Tests of the session lifecycle table: the paths a session takes, and properties of every
sequence of events."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.sessions import lifecycle as lc
from broker.sessions.store import ENDED_STATES, LIVE_STATES

PLAIN = lc.StartPlan(needs_consent=False, assign=False, ticket_new=False)
ATTENDED = lc.StartPlan(needs_consent=True, assign=True, ticket_new=True)


def run(plan: lc.StartPlan, *events: lc.Event) -> tuple[lc.SessionLifecycle, list[lc.Action]]:
    machine, insert = lc.SessionLifecycle.begin(plan)
    actions: list[lc.Action] = [insert]
    for event in events:
        actions += machine.feed(event)
    return machine, actions


def test_states_are_the_ones_the_rows_hold() -> None:
    """The row states the store counts and lists are the table's, and every end state."""
    assert LIVE_STATES == lc.UNENDED_ROW_STATES
    assert ENDED_STATES == lc.END_STATES
    assert set(lc.STATES) == {*lc.UNENDED_ROW_STATES, "ending", *lc.END_STATES}
    assert {target for target, _ in lc.TRANSITIONS.values()} <= set(lc.STATES)


def test_an_unattended_session_starts_in_order() -> None:
    """Row, agent, recorder and audit, hub, channel, then the row is marked live."""
    machine, actions = run(
        PLAIN, lc.RowInserted(), lc.AgentReached(), lc.StartRecorded(), lc.ChannelOpened()
    )
    assert actions == [
        lc.InsertRow("starting"),
        lc.ReachAgent(),
        lc.RecordStart(),
        lc.RegisterHub(),
        lc.OpenChannel(),
        lc.MarkLive(open_ticket=False),
    ]
    assert machine.state == "live"


def test_an_attended_session_assigns_then_asks() -> None:
    """The ticket is assigned before the end user is asked; a new ticket is opened once live."""
    machine, actions = run(
        ATTENDED,
        lc.RowInserted(),
        lc.AgentReached(),
        lc.ConsentGiven(),
        lc.StartRecorded(),
        lc.ChannelOpened(),
    )
    assert actions == [
        lc.InsertRow("waiting_consent"),
        lc.ReachAgent(),
        lc.AssignTicket(),
        lc.AskConsent(),
        lc.RecordStart(),
        lc.RegisterHub(),
        lc.OpenChannel(),
        lc.MarkLive(open_ticket=True),
    ]
    assert machine.state == "live"


def test_a_session_that_ran_ends_with_its_note() -> None:
    """A hub that ran and sealed its transcript writes "ended", its note and its audit."""
    machine, actions = run(
        PLAIN,
        lc.RowInserted(),
        lc.AgentReached(),
        lc.StartRecorded(),
        lc.ChannelOpened(),
        lc.HubEnded(opened=True, sealed=True),
    )
    assert actions[-2:] == [lc.WriteEnd("ended", None, note=True), lc.AuditEnd("session.end")]
    assert machine.has_ended


def test_a_refused_channel_ends_the_hub_as_failed_without_a_note() -> None:
    """The agent refusing the channel ends the hub; its end is "failed", with no note."""
    machine, actions = run(
        PLAIN, lc.RowInserted(), lc.AgentReached(), lc.StartRecorded(), lc.ChannelRefused("web01")
    )
    end = actions[-1]
    assert isinstance(end, lc.EndHub)
    assert (end.reason, end.code) == ("not started", "agent_refused")
    assert "agent web01 refused" in end.message
    assert machine.state == "ending"
    assert machine.feed(lc.HubEnded(opened=False, sealed=True)) == (
        lc.WriteEnd("failed", None, note=False),
        lc.AuditEnd("session.end"),
    )


def test_an_offline_agent_is_refused_and_audited() -> None:
    """An agent without a tunnel: the row ends "refused" and the refusal is audited."""
    machine, actions = run(PLAIN, lc.RowInserted(), lc.AgentOffline("web01"))
    reason = "agent web01 is offline; it must be running and connected"
    assert actions[-2:] == [
        lc.WriteEnd("refused", reason, note=False),
        lc.AuditRefusal("agent_offline", reason),
    ]
    assert machine.state == "refused"


def test_a_kill_while_waiting_cancels_the_start() -> None:
    """Killed while the end user is asked: the start stops and the row ends refused."""
    machine, actions = run(
        ATTENDED, lc.RowInserted(), lc.AgentReached(), lc.Killed("admin", "wrong machine")
    )
    assert actions[-2:] == [
        lc.CancelStart(),
        lc.WriteEnd("refused", "ended by admin before it started: wrong machine", note=False),
    ]
    assert not machine.accepts(lc.ConsentGiven())
    with pytest.raises(lc.LifecycleError, match="refused cannot take consent_given"):
        machine.feed(lc.ConsentGiven())
    assert machine.state == "refused"


def test_a_kill_of_a_live_session_ends_its_hub() -> None:
    """A live session is killed through its hub, which then reports the end."""
    machine, actions = run(
        PLAIN, lc.RowInserted(), lc.AgentReached(), lc.StartRecorded(), lc.Killed("admin")
    )
    assert actions[-1] == lc.KillHub("admin", "")
    assert machine.state == "ending"


def test_a_failed_mark_ends_the_session() -> None:
    """A row that cannot be marked live ends the session: nothing runs unrecorded."""
    machine, actions = run(
        PLAIN,
        lc.RowInserted(),
        lc.AgentReached(),
        lc.StartRecorded(),
        lc.ChannelOpened(),
        lc.MarkFailed(),
    )
    end = actions[-1]
    assert isinstance(end, lc.EndHub)
    assert end.code == "store_unavailable"
    assert machine.state == "ending"


@pytest.mark.parametrize(
    ("row_state", "sealed", "note"),
    [("live", True, True), ("live", False, False), ("starting", True, False)],
)
def test_recovery_interrupts_unended_rows(row_state: str, sealed: bool, note: bool) -> None:
    """A row a crash left unended is interrupted; only one that was live gets a note."""
    machine = lc.SessionLifecycle.restored(row_state)
    assert machine.feed(lc.Recovered(sealed=sealed)) == (
        lc.WriteEnd("interrupted", None, note=note),
        lc.AuditEnd("session.interrupted"),
    )
    with pytest.raises(lc.LifecycleError, match="has ended already"):
        lc.SessionLifecycle.restored("ended")


# -- properties of every sequence ------------------------------------------------------------

EVENTS = st.one_of(
    st.just(lc.RowInserted()),
    st.just(lc.AgentReached()),
    st.builds(lc.AgentOffline, st.sampled_from(["web01", "db02"])),
    st.just(lc.ConsentGiven()),
    st.builds(lc.StartRefused, st.sampled_from(["denied", "store unavailable"])),
    st.just(lc.StartFailed()),
    st.just(lc.StartRecorded()),
    st.just(lc.ChannelOpened()),
    st.builds(lc.ChannelRefused, st.just("web01")),
    st.just(lc.MarkFailed()),
    st.builds(lc.Killed, st.sampled_from(["admin", "bob"]), st.sampled_from(["", "why"])),
    st.builds(lc.EndAsked, st.just("broker shut down"), st.just("shutdown"), st.just("bye")),
    st.builds(lc.HubEnded, st.booleans(), st.booleans()),
)
PLANS = st.builds(
    lc.StartPlan, needs_consent=st.booleans(), assign=st.booleans(), ticket_new=st.booleans()
)


def _walk(
    plan: lc.StartPlan, events: list[lc.Event]
) -> tuple[lc.SessionLifecycle, list[lc.Action], bool]:
    """Feed every event; refused ones must change nothing. A hub reports what happened
    (whether its channel opened); returns whether it did."""
    machine, insert = lc.SessionLifecycle.begin(plan)
    actions: list[lc.Action] = [insert]
    opened = False
    for event in events:
        if isinstance(event, lc.HubEnded):
            event = lc.HubEnded(opened=opened, sealed=event.sealed)
        before = machine.state
        if not machine.accepts(event):
            with pytest.raises(lc.LifecycleError):
                machine.feed(event)
            assert machine.state == before
            continue
        actions += machine.feed(event)
        opened = opened or isinstance(event, lc.ChannelOpened)
        assert machine.state in lc.STATES
    return machine, actions, opened


def _ends(actions: list[lc.Action]) -> list[lc.WriteEnd]:
    return [action for action in actions if isinstance(action, lc.WriteEnd)]


_ALL_KINDS: list[lc.Event] = [
    lc.RowInserted(),
    lc.AgentReached(),
    lc.AgentOffline("a"),
    lc.ConsentGiven(),
    lc.StartRefused("r"),
    lc.StartFailed(),
    lc.StartRecorded(),
    lc.ChannelOpened(),
    lc.ChannelRefused("a"),
    lc.MarkFailed(),
    lc.Killed("k"),
    lc.EndAsked("r", "c", "m"),
    lc.HubEnded(opened=True, sealed=True),
    lc.HubEnded(opened=False, sealed=True),
    lc.Recovered(sealed=True),
]


@settings(max_examples=400)
@given(PLANS, st.lists(EVENTS, max_size=30))
def test_no_sequence_leaves_the_table(plan: lc.StartPlan, events: list[lc.Event]) -> None:
    """Any sequence of events keeps the session in a known state; an end state takes no
    more events, and its end write is decided once, after everything but audits."""
    machine, actions, _ = _walk(plan, events)
    ends = _ends(actions)
    if machine.has_ended:
        assert len(ends) == 1
        assert ends[0].state == machine.state
        tail = actions[actions.index(ends[0]) + 1 :]
        assert all(isinstance(a, lc.AuditEnd | lc.AuditRefusal) for a in tail)
        assert not any(machine.accepts(event) for event in _ALL_KINDS)
    else:
        assert ends == []


@settings(max_examples=400)
@given(PLANS, st.lists(EVENTS, max_size=30), st.booleans(), st.booleans())
def test_every_path_ends_with_one_end_write_and_its_note(
    plan: lc.StartPlan, events: list[lc.Event], sealed: bool, crash: bool
) -> None:
    """Wherever a session stands, it reaches an end: a start can always break off, a hub
    always reports its end, a crash is recovered at the next start. Every path has
    exactly one end write, and one note exactly when the session ran and was sealed."""
    machine, actions, opened = _walk(plan, events)
    if machine.has_ended:
        last = _ends(actions)[-1]
        ran_and_sealed = last.note  # checked against the hub's report below
        assert not last.note or (opened and machine.state == "ended")
    elif crash:
        # What the row says: "live" once marked (taken as done when the channel opened).
        first: lc.RowState = "waiting_consent" if plan.needs_consent else "starting"
        row = "live" if opened else first
        machine = lc.SessionLifecycle.restored(row)
        actions += machine.feed(lc.Recovered(sealed=sealed))
        ran_and_sealed = row == "live" and sealed
    elif machine.state in ("starting", "waiting_consent"):
        actions += machine.feed(lc.StartFailed())
        ran_and_sealed = False
    else:
        actions += machine.feed(lc.HubEnded(opened=opened, sealed=sealed))
        ran_and_sealed = opened and sealed
    assert machine.has_ended
    ends = _ends(actions)
    assert len(ends) == 1
    assert ends[0].note is ran_and_sealed


@given(PLANS)
def test_a_start_begins_with_its_row(plan: lc.StartPlan) -> None:
    """The first action is the row, in the state the end user's approval calls for."""
    machine, insert = lc.SessionLifecycle.begin(plan)
    expected: lc.RowState = "waiting_consent" if plan.needs_consent else "starting"
    assert insert == lc.InsertRow(expected)
    assert machine.state == expected
