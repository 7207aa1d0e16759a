"""agent/gc_policy.py: what start-up made is out of the collector's sight afterwards, the
young generation is collected less often, and garbage made later is still collected."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from agent.gc_policy import YOUNG_THRESHOLD, settle_after_startup


class _Node:
    """A container the collector tracks; two of them pointing at each other are a cycle
    only the collector frees."""

    def __init__(self) -> None:
        self.other: _Node | None = None


@pytest.fixture
def restored_gc() -> Iterator[None]:
    """The test process's collector as it was, whatever the test did to it."""
    threshold = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def _cycle() -> weakref.ref[_Node]:
    first, second = _Node(), _Node()
    first.other, second.other = second, first
    return weakref.ref(first)


@pytest.mark.usefixtures("restored_gc")
def test_what_startup_made_is_frozen_and_young_collections_are_spaced_out() -> None:
    made_at_startup = _Node()
    settle_after_startup()
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD > 700
    assert gc.get_freeze_count() > 0
    # No collection walks it any more: it is in none of the collector's generations.
    assert not any(obj is made_at_startup for obj in gc.get_objects())


@pytest.mark.usefixtures("restored_gc")
def test_startup_garbage_is_collected_before_the_freeze_not_kept_for_life() -> None:
    left_by_startup = _cycle()
    settle_after_startup()
    assert left_by_startup() is None


@pytest.mark.usefixtures("restored_gc")
def test_cycles_made_after_the_freeze_are_still_collected() -> None:
    settle_after_startup()
    later = _cycle()
    assert later() is not None  # unreachable, but only the collector frees a cycle
    gc.collect()
    assert later() is None
