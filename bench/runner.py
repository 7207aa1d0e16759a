"""One bench run: set every target up, run the scenarios, tear down, write the results."""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from bench import TargetUnavailable
from bench.agent_swarm_worker import raise_fd_limit
from bench.broker_scenarios import (
    BROKER_SCENARIO_FUNCTIONS,
    SWARM_SCENARIOS,
    run_broker_scenario,
    swarm_scenarios,
)
from bench.cluster_target import ClusterTarget
from bench.file_scenarios import sftp_echo, sftp_throughput
from bench.machine import machine_info
from bench.metrics import LOADED_PARTS, TargetKey
from bench.plot import write_plot
from bench.profile import profiling
from bench.results import JSON, Outcome, build_document
from bench.secondline_target import SecondlineTarget, SwarmFactory, UnrecordedTarget
from bench.session_scenarios import (
    echo_latency,
    exec_true,
    open_prompt,
    pty_throughput,
    raw_throughput,
)
from bench.settings import Settings
from bench.table import build_table, render_markdown, render_text
from bench.targets import DirectTarget, FloorTarget, ReverseTunnelTarget, Target, Workspace

logger = logging.getLogger(__name__)

ScenarioFunction = Callable[[Sequence[Target], Settings], Awaitable[list[Outcome]]]

SESSION_SCENARIO_FUNCTIONS: Final[dict[str, ScenarioFunction]] = {
    "open_prompt": open_prompt,
    "exec_true": exec_true,
    "echo_latency": echo_latency,
    "pty_throughput": pty_throughput,
    "raw_throughput": raw_throughput,
    "sftp_throughput": sftp_throughput,
    "sftp_echo": sftp_echo,
}


def _scenario_function(name: str, selected: Sequence[str]) -> ScenarioFunction | None:
    """Return what runs scenario `name`, or None when another one already covers it."""
    if name in SESSION_SCENARIO_FUNCTIONS:
        return SESSION_SCENARIO_FUNCTIONS[name]
    if name in SWARM_SCENARIOS:
        wanted = [scenario for scenario in SWARM_SCENARIOS if scenario in selected]
        if name != wanted[0]:
            return None

        async def run_swarm(targets: Sequence[Target], settings: Settings) -> list[Outcome]:
            return await swarm_scenarios(targets, settings, wanted)

        return run_swarm
    broker_scenario = BROKER_SCENARIO_FUNCTIONS[name]

    async def run(targets: Sequence[Target], settings: Settings) -> list[Outcome]:
        return await run_broker_scenario(name, targets, settings, broker_scenario)

    return run


def _swarm_factory() -> SwarmFactory | None:
    # The swarm imports the agent's tunnel code; a broken import must not stop the
    # baselines, only the swarm figures.
    try:
        from bench.agents_scale import swarm_factory
    except ImportError as error:
        logger.warning("no simulated-agent swarm: %s", error)
        return None
    return swarm_factory


@dataclass(frozen=True)
class RunResult:
    """Everything one run measured, and where it was written."""

    document: dict[str, JSON]
    table_text: str
    json_path: Path


def _make_targets(settings: Settings, workspace: Workspace) -> list[Target]:
    makers: dict[TargetKey, Callable[[], Target]] = {
        "floor": FloorTarget,
        "B": lambda: DirectTarget(workspace),
        "A": lambda: ReverseTunnelTarget(workspace),
        "secondline": lambda: SecondlineTarget(
            workspace,
            max_sessions=max(settings.session_steps, default=0) + settings.streamers + 10,
            swarm_factory=_swarm_factory(),
        ),
        "unrecorded": lambda: UnrecordedTarget(
            workspace, max_sessions=settings.streamers + settings.echo_sessions + 10
        ),
        "secondline-cluster1": lambda: _cluster(settings, workspace, 1),
        "secondline-cluster2": lambda: _cluster(settings, workspace, 2),
    }
    return [makers[key]() for key in settings.targets]


def _cluster(settings: Settings, workspace: Workspace, nodes: int) -> ClusterTarget:
    return ClusterTarget(
        workspace,
        nodes=nodes,
        max_sessions=max(settings.session_steps, default=0) + settings.streamers + 10,
        swarm_factory=_swarm_factory(),
    )


def parts_run_by(scenario: str, selected: Sequence[str]) -> tuple[str, ...]:
    """The scenarios the run of `scenario` measures: the first selected swarm scenario
    runs every selected one (one swarm serves them all), any other only itself."""
    wanted = tuple(name for name in SWARM_SCENARIOS if name in selected)
    if wanted and scenario == wanted[0]:
        return wanted
    return (scenario,)


async def _set_up(targets: Sequence[Target]) -> dict[TargetKey, Outcome]:
    """Set every target up; return, for those that could not be, the outcome to report."""
    broken: dict[TargetKey, Outcome] = {}
    for target in targets:
        logger.info("setting up %s", target.label)
        try:
            await target.setup()
        except TargetUnavailable as error:
            broken[target.key] = Outcome.skipped("setup", target.key, str(error))
        except Exception as error:  # a target boundary: report it, measure the others
            logger.exception("setting up %s failed", target.label)
            broken[target.key] = Outcome.failed("setup", target.key, f"setup failed: {error}")
        if target.key in broken:
            logger.warning("%s: %s", target.label, broken[target.key].note())
    return broken


async def _measure(
    settings: Settings, targets: Sequence[Target], broken: dict[TargetKey, Outcome]
) -> list[Outcome]:
    outcomes: list[Outcome] = []
    ready = [target for target in targets if target.key not in broken]
    for scenario in settings.scenarios:
        parts = ("echo_latency", *LOADED_PARTS) if scenario == "echo_latency" else (scenario,)
        # A target that could not be set up still gets a row, saying why, in every
        # scenario it would have run.
        for target in targets:
            why = broken.get(target.key)
            for part in parts:
                if why is not None and target.supports(part):
                    outcomes.append(
                        Outcome(
                            scenario=part, target=target.key, status=why.status, reason=why.reason
                        )
                    )
        covered = parts_run_by(scenario, settings.scenarios)
        runnable = [target for target in ready if any(map(target.supports, covered))]
        if not runnable:
            continue
        function = _scenario_function(scenario, settings.scenarios)
        if function is None:
            continue
        logger.info("%s on %s", scenario, ", ".join(target.label for target in runnable))
        started = time.monotonic()
        async with profiling(settings, scenario, runnable):
            outcomes += await function(runnable, settings)
        logger.info("%s took %.1f s", scenario, time.monotonic() - started)
    return outcomes


async def run_bench(settings: Settings) -> RunResult:
    """Measure every scenario of `settings` on every target and write the results."""
    raise_fd_limit()
    started_at = datetime.now(UTC)
    clock = time.monotonic()
    machine = machine_info()
    with tempfile.TemporaryDirectory(prefix="secondline-bench-") as temp:
        workspace = await Workspace.create(Path(temp), settings.kex)
        targets = _make_targets(settings, workspace)
        try:
            broken = await _set_up(targets)
            outcomes = await _measure(settings, targets, broken)
        finally:
            for target in reversed(targets):
                try:
                    await target.teardown()
                except Exception:  # teardown boundary: keep tearing the others down
                    logger.exception("tearing down %s failed", target.label)
    finished_at = datetime.now(UTC)
    document = build_document(
        started=started_at.isoformat(timespec="seconds"),
        finished=finished_at.isoformat(timespec="seconds"),
        duration_s=round(time.monotonic() - clock, 1),
        machine=machine,
        settings=settings.as_json(),
        targets={target.key: broken.get(target.key) for target in targets},
        outcomes=outcomes,
    )
    table = build_table(outcomes, settings.scenarios)
    json_path = _write(settings, document, table_markdown=render_markdown(table))
    write_plot(
        outcomes,
        settings.scenarios,
        settings.results_dir / "latest.png",
        f"Secondline bench {started_at:%Y-%m-%d %H:%M} UTC{' (quick)' if settings.quick else ''}",
    )
    return RunResult(document=document, table_text=render_text(table), json_path=json_path)


def _write(settings: Settings, document: dict[str, JSON], table_markdown: str) -> Path:
    settings.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = str(document["started"]).replace("-", "").replace(":", "").replace("+0000", "Z")
    text = json.dumps(document, indent=1, ensure_ascii=False) + "\n"
    path = settings.results_dir / f"{stamp}.json"
    path.write_text(text)
    (settings.results_dir / "latest.json").write_text(text)
    (settings.results_dir / "latest.md").write_text(table_markdown)
    return path
