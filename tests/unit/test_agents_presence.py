"""Coalescing of presence and facts changes before they are written (pure)."""

from __future__ import annotations

import datetime as dt

from broker.agents.presence import FactsChange, Offline, Online, PendingChanges

T0 = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(seconds=5)


def test_only_the_last_change_per_agent_is_written() -> None:
    """online, offline, online again for one agent leaves one online row."""
    pending = PendingChanges()
    pending.presence["ag-a"] = Online(T0)
    pending.presence["ag-a"] = Offline(T0, T1)
    pending.presence["ag-a"] = Online(T1)
    pending.presence["ag-b"] = Offline(T0, T1)
    pending.facts["ag-a"] = FactsChange({"hostname": "a"}, T1)
    online, offline, facts = pending.rows("node1")
    assert online == [{"b_id": "ag-a", "b_node": "node1", "b_at": T1}]
    assert offline == [{"b_id": "ag-b", "b_node": "node1", "b_connected": T0, "b_at": T1}]
    assert facts == [{"b_id": "ag-a", "b_facts": {"hostname": "a"}, "b_at": T1}]
    assert len(pending) == 3
    assert bool(pending)


def test_a_failed_batch_goes_back_under_newer_changes() -> None:
    """After a failed write, newer changes win and older ones fill the gaps."""
    failed = PendingChanges()
    failed.presence["ag-a"] = Online(T0)
    failed.presence["ag-b"] = Online(T0)
    failed.facts["ag-a"] = FactsChange({"hostname": "old"}, T0)
    newer = PendingChanges()
    newer.presence["ag-a"] = Offline(T0, T1)
    newer.merge_older(failed)
    assert newer.presence == {"ag-a": Offline(T0, T1), "ag-b": Online(T0)}
    assert newer.facts["ag-a"].facts == {"hostname": "old"}


def test_nothing_pending_is_falsy() -> None:
    """An empty batch writes nothing."""
    assert not PendingChanges()
    assert PendingChanges().rows("n") == ([], [], [])
