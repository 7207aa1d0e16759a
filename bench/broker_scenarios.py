"""Scenarios only a broker has: its memory and CPU, agent handshakes, restarts, capacity.

Each takes the targets that implement `BrokerTarget` and reports a skipped outcome with
the reason when the broker or its simulated-agent swarm is not there yet. Memory is the
broker's VmRSS and CPU its utime + stime, read from /proc (see `procfs`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

from bench import BenchError, MeasurementError
from bench.agents_scale import idle_rss, rss_before
from bench.procfs import cpu_seconds, rss_kib
from bench.results import Figure, Outcome
from bench.session_scenarios import pipe_throughput_sample
from bench.settings import Settings
from bench.stats import largest_passing_step, per_item, percentile
from bench.targets import AgentSwarm, BrokerTarget, Target
from bench.typing_load import typing_load, wait_quiet

logger = logging.getLogger(__name__)

ONLINE_TIMEOUT_S: Final = 600.0
ECHO_P99_LIMIT_MS: Final = 50.0
KIB_TO_KB: Final = 1.024

BrokerScenario = Callable[[BrokerTarget, Settings], Awaitable[Outcome]]


def _brokers(targets: Sequence[Target]) -> list[BrokerTarget]:
    return [target for target in targets if isinstance(target, BrokerTarget)]


async def run_broker_scenario(
    name: str, targets: Sequence[Target], settings: Settings, scenario: BrokerScenario
) -> list[Outcome]:
    """Run `scenario` on every broker target; a failure becomes that target's outcome."""
    outcomes = []
    for target in _brokers(targets):
        try:
            outcomes.append(await scenario(target, settings))
        except BenchError as error:
            outcomes.append(Outcome.failed(name, target.key, str(error)))
        except Exception as error:  # a scenario boundary: report, keep going
            logger.exception("%s on %s failed", name, target.label)
            outcomes.append(Outcome.failed(name, target.key, f"{type(error).__name__}: {error}"))
    return outcomes


async def wait_online(swarm: AgentSwarm, count: int, wait_s: float) -> list[tuple[float, int]]:
    """Wait until `count` agents are online; return the (seconds, online) curve seen.

    The swarm is asked again with a short pause: the count is the event, and there is
    no channel to be told of it.
    """
    start = time.monotonic()
    curve: list[tuple[float, int]] = []
    try:
        async with asyncio.timeout(wait_s):
            while True:
                try:
                    online = await swarm.online()
                except OSError:  # the broker is not answering yet (restarting)
                    online = 0
                curve.append((time.monotonic() - start, online))
                if online >= count:
                    return curve
                await asyncio.sleep(0.05)
    except TimeoutError:
        seen = curve[-1][1] if curve else 0
        raise MeasurementError(
            f"only {seen} of {count} agents online after {wait_s:.0f} s"
        ) from None


SWARM_SCENARIOS: Final = ("memory_per_idle_agent", "handshakes_per_second", "restart_recovery")


async def _swarm_figures(
    target: BrokerTarget, swarm: AgentSwarm, wanted: Sequence[str]
) -> list[Outcome]:
    """Spawn, connect and (if wanted) restart under one swarm; one outcome per wanted figure.

    One swarm serves all three figures: enrolling thousands of agents three times would
    cost more than the measurements themselves.
    """
    # A fresh broker: after the session scenarios it holds (and later returns to the
    # system) memory of its own, which made the growth per agent even come out negative.
    if "memory_per_idle_agent" in wanted:
        await target.restart_broker()
    pid = target.broker_pid()
    await swarm.spawn()
    before = await rss_before(pid) if "memory_per_idle_agent" in wanted else rss_kib(pid)
    start = time.monotonic()
    await swarm.connect()
    curve = await wait_online(swarm, swarm.size, ONLINE_TIMEOUT_S)
    elapsed = time.monotonic() - start
    just_online = rss_kib(target.broker_pid())
    after = just_online
    if "memory_per_idle_agent" in wanted:
        # Idle, as the figure's name says and bench.agents_scale measures it: RSS taken the
        # moment the last agent was online counted the handshakes' and the deferred facts
        # refreshes' memory still in the heap (86 KB per agent at 1,000 against 64 idle).
        _, after = await idle_rss(target.broker_pid())
    agents = float(swarm.size)
    memory = (
        Outcome.ok(
            "memory_per_idle_agent",
            target.key,
            Figure(
                metric="memory_per_idle_agent",
                value=per_item((after - before) * KIB_TO_KB, swarm.size),
                detail={
                    "rss_before_kib": float(before),
                    "rss_just_online_kib": float(just_online),
                    "rss_after_kib": float(after),
                },
            ),
        )
        if after > before
        else Outcome.failed(
            "memory_per_idle_agent",
            target.key,
            f"the broker's RSS did not grow ({before} KiB before, {after} KiB after "
            f"{swarm.size} agents): it returned other memory meanwhile; measure alone "
            "with --only memory_per_idle_agent",
        )
    )
    outcomes = {
        "memory_per_idle_agent": memory,
        "handshakes_per_second": Outcome.ok(
            "handshakes_per_second",
            target.key,
            Figure(
                metric="handshakes_per_second",
                value=swarm.size / elapsed,
                samples=tuple(float(online) for _, online in curve),
                detail={"seconds": elapsed, "agents": agents},
            ),
        ),
    }
    if "restart_recovery" in wanted:
        try:
            outcomes["restart_recovery"] = await _restart(target, swarm)
        except BenchError as error:
            outcomes["restart_recovery"] = Outcome.failed(
                "restart_recovery", target.key, str(error)
            )
    return [outcomes[name] for name in wanted]


async def _restart(target: BrokerTarget, swarm: AgentSwarm) -> Outcome:
    start = time.monotonic()
    await target.restart_broker()
    restarted = time.monotonic() - start
    curve = await wait_online(swarm, swarm.size, ONLINE_TIMEOUT_S)
    elapsed = time.monotonic() - start
    return Outcome.ok(
        "restart_recovery",
        target.key,
        Figure(
            metric="restart_recovery",
            value=elapsed,
            samples=tuple(float(online) for _, online in curve),
            detail={"broker_restart_s": restarted, "agents": float(swarm.size)},
        ),
    )


async def swarm_scenarios(
    targets: Sequence[Target], settings: Settings, all_wanted: Sequence[str]
) -> list[Outcome]:
    """memory_per_idle_agent, handshakes_per_second and restart_recovery, as `wanted`.

    For each broker: its RSS before and after a swarm of `settings.swarm_agents` connects
    at once (growth per agent), agents online per second while they do, and the seconds
    from stopping the broker until all are online again after a restart.
    """
    outcomes: list[Outcome] = []
    for target in _brokers(targets):
        # A cluster target measures handshakes, not one process's memory or restart.
        wanted = [name for name in all_wanted if target.supports(name)]
        if not wanted:
            continue
        swarm = target.agent_swarm(settings.swarm_agents)
        if isinstance(swarm, str):
            outcomes += [Outcome.skipped(name, target.key, swarm) for name in wanted]
            continue
        logger.info("swarm of %d agents on %s", swarm.size, target.label)
        try:
            outcomes += await _swarm_figures(target, swarm, wanted)
        except BenchError as error:
            outcomes += [Outcome.failed(name, target.key, str(error)) for name in wanted]
        except Exception as error:  # a scenario boundary: report, keep going
            logger.exception("the agent swarm on %s failed", target.label)
            reason = f"{type(error).__name__}: {error}"
            outcomes += [Outcome.failed(name, target.key, reason) for name in wanted]
        finally:
            await swarm.close()
        # The broker was restarted: the scenarios after these open sessions on the
        # target's own agent, which reconnects by its backoff (they failed with "agent
        # bench-agent is offline" when it had not yet).
        try:
            await target.wait_agent_online()
        except BenchError as error:
            logger.warning("%s: %s", target.label, error)
    return outcomes


async def cpu_per_gb_recorded(target: BrokerTarget, settings: Settings) -> Outcome:
    """Broker CPU seconds per GB relayed (and so recorded) from the agent to `ssh`."""
    argv = target.ssh_argv(f"head -c {settings.record_bytes} /dev/zero", tty=False)
    pid = target.broker_pid()
    # The scenario before may have left the broker sealing its sessions and writing their
    # ticket notes: that CPU is theirs, not this gigabyte's.
    quiet_wait_s = await wait_quiet(pid)
    before = cpu_seconds(pid)
    rate = await asyncio.to_thread(
        pipe_throughput_sample, argv, settings.record_bytes, settings.stall_s
    )
    spent = cpu_seconds(pid) - before
    gigabytes = settings.record_bytes / 1e9
    return Outcome.ok(
        "cpu_per_gb_recorded",
        target.key,
        Figure(
            metric="cpu_per_gb_recorded",
            value=spent / gigabytes,
            detail={
                "cpu_s": spent,
                "bytes": float(settings.record_bytes),
                "mb_per_s": rate,
                "quiet_wait_s": quiet_wait_s,
            },
        ),
    )


async def max_concurrent_sessions(target: BrokerTarget, settings: Settings) -> Outcome:
    """The most concurrent typing sessions whose echo p99 stays under 50 ms."""
    return await session_capacity(target, settings, "max_concurrent_sessions")


async def session_capacity(target: Target, settings: Settings, name: str) -> Outcome:
    """Step through `settings.session_steps` until echo p99 reaches 50 ms."""
    steps: list[tuple[int, float]] = []
    detail: dict[str, float] = {}
    for sessions in settings.session_steps:
        logger.info("%s: %d typing sessions on %s", name, sessions, target.label)
        load = await typing_load(target, sessions, settings)
        p99 = percentile(load.latencies_ms, 99)
        steps.append((sessions, p99))
        detail[f"p99_ms_at_{sessions}"] = p99
        detail[f"p50_ms_at_{sessions}"] = percentile(load.latencies_ms, 50)
        detail[f"keys_per_s_at_{sessions}"] = len(load.latencies_ms) / load.seconds
        # Who used the machine: the load generator (bench and ssh clients) and the broker,
        # in CPU milliseconds per keystroke and in cores.
        detail[f"generator_cpu_ms_per_key_at_{sessions}"] = load.per_key_ms(load.generator_cpu_s)
        detail[f"generator_cores_at_{sessions}"] = load.generator_cpu_s / load.seconds
        if load.broker_cpu_s is not None:
            detail[f"broker_cpu_ms_per_key_at_{sessions}"] = load.per_key_ms(load.broker_cpu_s)
            detail[f"broker_cores_at_{sessions}"] = load.broker_cpu_s / load.seconds
            detail[f"quiet_wait_s_at_{sessions}"] = load.quiet_wait_s
        if p99 >= ECHO_P99_LIMIT_MS:
            break
    # 0 when every step passed: the figure is then a lower bound, not a capacity.
    detail["limit_reached"] = 1.0 if steps and steps[-1][1] >= ECHO_P99_LIMIT_MS else 0.0
    capacity = largest_passing_step(steps, ECHO_P99_LIMIT_MS)
    return Outcome.ok(name, target.key, Figure(metric=name, value=float(capacity), detail=detail))


BROKER_SCENARIO_FUNCTIONS: Final[dict[str, BrokerScenario]] = {
    "max_concurrent_sessions": max_concurrent_sessions,
    "cpu_per_gb_recorded": cpu_per_gb_recorded,
}
