"""The results table: built from outcomes, rendered as aligned text or Markdown (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bench.metrics import TARGET_KEYS, TARGET_LABELS, Metric, TargetKey, metrics_of
from bench.results import Outcome, value_of
from bench.stats import ratio

HEADER: tuple[str, ...] = (
    "scenario",
    "unit",
    "floor",
    "B",
    "A",
    "Secondline",
    "no-op recorder",
    "cluster, 1 node",
    "cluster, 2 nodes",
    "Secondline/B",
    "Secondline/A",
    "2 nodes/1 node",
    "PERFORMANCE.md target",
)
NOT_APPLICABLE = "—"


@dataclass(frozen=True)
class Table:
    """Rows of cell text, and the numbered notes their `[n]` marks refer to."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    notes: tuple[str, ...]


def format_value(value: float) -> str:
    """Return `value` with about three significant digits and no exponent."""
    magnitude = abs(value)
    if magnitude >= 100.0:
        return f"{value:.0f}"
    if magnitude >= 10.0:
        return f"{value:.1f}"
    return f"{value:.2f}"


def format_ratio(value: float | None) -> str:
    """Return a ratio such as ``0.78x``, or a dash when it cannot be computed."""
    return NOT_APPLICABLE if value is None else f"{value:.2f}x"


class _Notes:
    """Numbers each distinct reason once, so a target that failed setup needs one note."""

    def __init__(self) -> None:
        self._numbers: dict[str, int] = {}

    def mark(self, target: TargetKey, outcome: Outcome) -> str:
        line = f"{TARGET_LABELS[target]}: {outcome.note()}"
        number = self._numbers.setdefault(line, len(self._numbers) + 1)
        return f"{outcome.status}[{number}]"

    def lines(self) -> tuple[str, ...]:
        return tuple(f"[{number}] {line}" for line, number in self._numbers.items())


def _find(outcomes: Sequence[Outcome], scenario: str, target: TargetKey) -> Outcome | None:
    for outcome in outcomes:
        if outcome.scenario == scenario and outcome.target == target:
            return outcome
    return None


def _cell(metric: Metric, target: TargetKey, outcomes: Sequence[Outcome], notes: _Notes) -> str:
    outcome = _find(outcomes, metric.outcome_key, target)
    if outcome is None:
        return NOT_APPLICABLE
    if outcome.status != "ok":
        return notes.mark(target, outcome)
    value = value_of([outcome], metric.key, target)
    if value is None:
        return NOT_APPLICABLE
    text = format_value(value)
    if target == "secondline" and metric.goal is not None:
        text += " ✓" if metric.goal.met_by(value) else " ✗"
    return text


def build_table(outcomes: Sequence[Outcome], scenarios: tuple[str, ...]) -> Table:
    """Return one row per metric of `scenarios`, with ratios and the PERFORMANCE.md goal."""
    notes = _Notes()
    rows: list[tuple[str, ...]] = []
    for metric in metrics_of(scenarios):
        cells = [_cell(metric, target, outcomes, notes) for target in TARGET_KEYS]
        ours = value_of(outcomes, metric.key, "secondline")
        rows.append(
            (
                metric.key,
                metric.unit,
                *cells,
                format_ratio(ratio(ours, value_of(outcomes, metric.key, "B"))),
                format_ratio(ratio(ours, value_of(outcomes, metric.key, "A"))),
                # What the second node (the second core) buys, same run, same set-up.
                format_ratio(
                    ratio(
                        value_of(outcomes, metric.key, "secondline-cluster2"),
                        value_of(outcomes, metric.key, "secondline-cluster1"),
                    )
                ),
                metric.goal.text if metric.goal else NOT_APPLICABLE,
            )
        )
    return Table(header=HEADER, rows=tuple(rows), notes=notes.lines())


def render_text(table: Table) -> str:
    """Return the table as aligned columns for a terminal, notes below it."""
    widths = [
        max(len(row[column]) for row in (table.header, *table.rows))
        for column in range(len(table.header))
    ]

    def line(cells: tuple[str, ...]) -> str:
        padded = [
            cell.ljust(width) if column < 2 else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(padded).rstrip()

    rule = "  ".join("-" * width for width in widths)
    out = [line(table.header), rule, *(line(row) for row in table.rows)]
    if table.notes:
        out.append("")
        out.extend(table.notes)
    return "\n".join(out) + "\n"


def render_markdown(table: Table) -> str:
    """Return the table in GitHub Markdown, notes below it, for docs/benchmarks.md."""
    out = [
        "| " + " | ".join(table.header) + " |",
        "|" + "|".join("---" if column < 2 else "--:" for column in range(len(table.header))) + "|",
        *("| " + " | ".join(row) + " |" for row in table.rows),
    ]
    if table.notes:
        out.append("")
        out.extend(f"{note}  " for note in table.notes)
    return "\n".join(out) + "\n"
