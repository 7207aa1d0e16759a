"""The PNG beside the JSON: one small bar chart per figure, the goal as a dashed line."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a display

import matplotlib.pyplot as plt

from bench.metrics import TARGET_KEYS, TARGET_LABELS, metrics_of
from bench.results import Outcome, value_of

COLOURS = {
    "floor": "#9e9e9e",
    "B": "#1f77b4",
    "A": "#ff7f0e",
    "secondline": "#2ca02c",
    "unrecorded": "#98df8a",
    "secondline-cluster1": "#9467bd",
    "secondline-cluster2": "#c5b0d5",
}


def _status(outcomes: Sequence[Outcome], part: str, target: str) -> str:
    for outcome in outcomes:
        if outcome.scenario == part and outcome.target == target:
            return outcome.status
    return "—"


def write_plot(
    outcomes: Sequence[Outcome], scenarios: tuple[str, ...], path: Path, title: str
) -> None:
    """Draw every figure of `scenarios` for each target and save the PNG at `path`."""
    metrics = metrics_of(scenarios)
    if not metrics:
        return
    columns = min(4, len(metrics))
    rows = math.ceil(len(metrics) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False)
    labels = [TARGET_LABELS[key] for key in TARGET_KEYS]
    for index, metric in enumerate(metrics):
        ax = axes[index // columns][index % columns]
        values = [value_of(outcomes, metric.key, key) for key in TARGET_KEYS]
        heights = [value if value is not None else 0.0 for value in values]
        bars = ax.bar(labels, heights, color=[COLOURS[key] for key in TARGET_KEYS])
        for key, bar, value in zip(TARGET_KEYS, bars, values, strict=True):
            text = (
                f"{value:.3g}" if value is not None else _status(outcomes, metric.outcome_key, key)
            )
            ax.annotate(
                text,
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=7,
            )
        if metric.goal is not None:
            ax.axhline(metric.goal.value, linestyle="--", color="#2ca02c", linewidth=1)
        ax.set_title(f"{metric.key} ({metric.unit})", fontsize=9)
        ax.tick_params(axis="x", labelsize=7, rotation=20)
        ax.tick_params(axis="y", labelsize=7)
    for index in range(len(metrics), rows * columns):
        axes[index // columns][index % columns].set_visible(False)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
