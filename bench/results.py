"""What a scenario hands back, and the JSON document of a whole run (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from bench.metrics import METRICS, TargetKey
from bench.stats import median, ratio

JSON = dict[str, "JSON"] | list["JSON"] | str | int | float | bool | None

Status = Literal["ok", "skipped", "failed"]


@dataclass(frozen=True, kw_only=True)
class Figure:
    """One measured figure of one target: its value and the raw samples it came from."""

    metric: str
    value: float
    samples: tuple[float, ...] = ()
    detail: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """What one scenario gave for one target: figures, or a one-line reason why not."""

    scenario: str
    target: TargetKey
    status: Status
    figures: tuple[Figure, ...] = ()
    reason: str = ""

    @classmethod
    def ok(cls, scenario: str, target: TargetKey, *figures: Figure) -> Outcome:
        """Return a successful outcome."""
        return cls(scenario=scenario, target=target, status="ok", figures=figures)

    @classmethod
    def skipped(cls, scenario: str, target: TargetKey, why: str) -> Outcome:
        """Return an outcome that was not measured on purpose (`why` is one line)."""
        return cls(scenario=scenario, target=target, status="skipped", reason=one_line(why))

    @classmethod
    def failed(cls, scenario: str, target: TargetKey, why: str) -> Outcome:
        """Return an outcome whose measurement broke (`why` is one line)."""
        return cls(scenario=scenario, target=target, status="failed", reason=one_line(why))

    def note(self) -> str:
        """Return the line shown under the table, e.g. ``skipped: secondline ...``."""
        return f"{self.status}: {self.reason}"


def one_line(text: str, limit: int = 300) -> str:
    """Collapse `text` to a single line of at most `limit` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def median_figure(metric: str, samples: Sequence[float]) -> Figure:
    """Return a figure whose value is the median of its samples."""
    return Figure(metric=metric, value=median(samples), samples=tuple(samples))


def value_of(outcomes: Iterable[Outcome], metric: str, target: TargetKey) -> float | None:
    """Return the value of `metric` for `target`, or None if it was not measured."""
    for outcome in outcomes:
        if outcome.target != target or outcome.status != "ok":
            continue
        for figure in outcome.figures:
            if figure.metric == metric:
                return figure.value
    return None


def _outcome_json(outcome: Outcome) -> JSON:
    return {
        "scenario": outcome.scenario,
        "target": outcome.target,
        "status": outcome.status,
        "reason": outcome.reason or None,
        "figures": [
            {
                "metric": figure.metric,
                "value": figure.value,
                "samples": list(figure.samples),
                "detail": dict(figure.detail),
            }
            for figure in outcome.figures
        ],
    }


def _summary_json(outcomes: Sequence[Outcome], scenarios: Sequence[str]) -> JSON:
    rows: list[JSON] = []
    for metric in METRICS:
        if metric.scenario not in scenarios:
            continue
        values: dict[str, JSON] = {
            target: value_of(outcomes, metric.key, target)
            for target in ("floor", "B", "A", "secondline")
        }
        ours = value_of(outcomes, metric.key, "secondline")
        rows.append(
            {
                "metric": metric.key,
                "unit": metric.unit,
                "values": values,
                "secondline_over_B": ratio(ours, value_of(outcomes, metric.key, "B")),
                "secondline_over_A": ratio(ours, value_of(outcomes, metric.key, "A")),
                "goal": metric.goal.text if metric.goal else None,
                "goal_met": (
                    metric.goal.met_by(ours) if metric.goal and ours is not None else None
                ),
            }
        )
    return rows


def metrics_json() -> JSON:
    """Return the metric catalogue (units, goals, PERFORMANCE.md peer figures)."""
    return [
        {
            "key": metric.key,
            "scenario": metric.scenario,
            "label": metric.label,
            "unit": metric.unit,
            "better": metric.better,
            "goal": (
                {"op": metric.goal.op, "value": metric.goal.value, "text": metric.goal.text}
                if metric.goal
                else None
            ),
            "performance_md": dict(metric.reference),
        }
        for metric in METRICS
    ]


def build_document(
    *,
    started: str,
    finished: str,
    duration_s: float,
    machine: Mapping[str, JSON],
    settings: Mapping[str, JSON],
    targets: Mapping[str, Outcome | None],
    outcomes: Sequence[Outcome],
) -> dict[str, JSON]:
    """Return the JSON document of one run.

    `targets` maps each target to None when it was set up, or to the outcome of its setup.
    """
    scenarios = settings.get("scenarios")
    chosen = (
        [name for name in scenarios if isinstance(name, str)] if isinstance(scenarios, list) else []
    )
    return {
        "schema": 1,
        "started": started,
        "finished": finished,
        "duration_s": duration_s,
        "machine": dict(machine),
        "settings": dict(settings),
        "targets": {
            key: {
                "status": "ok" if setup is None else setup.status,
                "reason": None if setup is None else setup.reason,
            }
            for key, setup in targets.items()
        },
        "metrics": metrics_json(),
        "summary": _summary_json(outcomes, chosen),
        "results": [_outcome_json(outcome) for outcome in outcomes],
    }
