"""The capacity test's typists against a local shell on a PTY (the floor target)."""

from __future__ import annotations

import asyncio
import dataclasses

from bench.settings import Settings
from bench.targets import FloorTarget
from bench.typing_load import (
    ECHO_GIVE_UP_S,
    QUIET_GIVE_UP_S,
    QUIET_WINDOW_S,
    typing_load,
    wait_quiet,
)


async def test_typists_time_every_echo_and_say_what_they_cost() -> None:
    """Three typists on `cat` in raw mode: every key is echoed and timed (none given up),
    the load's CPU is counted, and there is no broker to count."""
    settings = dataclasses.replace(
        Settings.build(quick=True), step_seconds=0.3, typing_interval_s=0.01
    )
    load = await typing_load(FloorTarget(), 3, settings)
    assert len(load.latencies_ms) >= 3
    assert all(0 < latency < ECHO_GIVE_UP_S * 1e3 for latency in load.latencies_ms)
    assert load.seconds >= settings.step_seconds
    assert load.generator_cpu_s > 0
    assert load.broker_cpu_s is None
    assert load.per_key_ms(1.0) == 1e3 / len(load.latencies_ms)


async def test_a_quiet_broker_is_seen_within_one_window() -> None:
    """A process that uses no CPU (a sleeping child) is quiet at the first window."""
    child = await asyncio.create_subprocess_exec("sleep", "60")
    try:
        waited = await wait_quiet(child.pid)
    finally:
        child.kill()
        await child.wait()
    assert QUIET_WINDOW_S <= waited < QUIET_GIVE_UP_S
