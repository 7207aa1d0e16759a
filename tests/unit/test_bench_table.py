"""The results table and its JSON: cells, ratios, goals and notes for skipped targets."""

from __future__ import annotations

import json
from pathlib import Path

from bench.metrics import LOADED_PARTS, SCENARIOS, STREAM_COUNTS, Goal, loaded_part, metrics_of
from bench.results import Figure, Outcome, build_document, median_figure, one_line, value_of
from bench.secondline_target import UnrecordedTarget
from bench.settings import Settings
from bench.table import build_table, format_ratio, format_value, render_markdown, render_text
from bench.targets import Workspace

SKIP = "secondline broker not available (`secondline init` exited 2: no such command)"


def _outcomes() -> list[Outcome]:
    return [
        Outcome.ok("exec_true", "B", median_figure("exec_true", [190.0, 200.0, 210.0])),
        Outcome.ok("exec_true", "A", Figure(metric="exec_true", value=340.0)),
        Outcome.ok("exec_true", "secondline", Figure(metric="exec_true", value=120.0)),
        Outcome.ok("raw_throughput", "B", Figure(metric="raw_throughput", value=400.0)),
        Outcome.failed("raw_throughput", "A", "read 0 of 100 bytes"),
        Outcome.skipped("raw_throughput", "secondline", SKIP),
        Outcome.skipped("open_prompt", "secondline", SKIP),
    ]


def _row(rows: tuple[tuple[str, ...], ...], key: str) -> tuple[str, ...]:
    return next(row for row in rows if row[0] == key)


def test_format_value_keeps_about_three_digits() -> None:
    """Large figures lose decimals, small ones keep two."""
    assert format_value(191.4) == "191"
    assert format_value(33.54) == "33.5"
    assert format_value(0.554) == "0.55"
    assert format_ratio(0.784) == "0.78x"
    assert format_ratio(None) == "—"


def test_ratios_and_goal_marks_are_computed_from_the_medians() -> None:
    """Secondline/B and /A divide Secondline's median by each baseline's; the goal is marked."""
    table = build_table(_outcomes(), ("exec_true",))
    row = _row(table.rows, "exec_true")
    assert row[3:6] == ("200", "340", "120 ✓")
    assert row[6:9] == ("—", "—", "—")  # no no-op recorder or cluster figure here
    assert row[9:13] == ("0.60x", "0.35x", "—", "≤ 150 ms")
    assert row[2] == "—"


def test_skipped_and_failed_cells_point_at_one_note_per_reason() -> None:
    """A reason shared by several rows is printed once, with its status and target."""
    table = build_table(_outcomes(), ("open_prompt", "raw_throughput"))
    raw = _row(table.rows, "raw_throughput")
    prompt = _row(table.rows, "open_prompt")
    assert prompt[5] == "skipped[1]"
    assert raw[4] == "failed[2]"
    assert raw[5] == "skipped[1]"
    assert table.notes == (
        f"[1] Secondline: skipped: {SKIP}",
        "[2] A reverse tunnel: failed: read 0 of 100 bytes",
    )


def test_a_missed_goal_is_marked() -> None:
    """A Secondline figure that misses its goal carries a cross."""
    slow = [Outcome.ok("exec_true", "secondline", Figure(metric="exec_true", value=180.0))]
    assert _row(build_table(slow, ("exec_true",)).rows, "exec_true")[5] == "180 ✗"
    assert Goal(op=">=", value=30.0, text="").met_by(30.0)
    assert not Goal(op=">=", value=30.0, text="").met_by(29.9)


def test_renderings_hold_every_row_and_note() -> None:
    """Text and Markdown both show the header, each metric row and the notes."""
    table = build_table(_outcomes(), ("exec_true", "raw_throughput"))
    text = render_text(table)
    markdown = render_markdown(table)
    for rendering in (text, markdown):
        assert "Secondline/B" in rendering
        assert "raw_throughput" in rendering
        assert SKIP in rendering
    assert markdown.startswith("| scenario |")
    assert len(text.splitlines()[0]) == len(text.splitlines()[1].rstrip())


def test_echo_loaded_rows_come_from_their_own_outcome() -> None:
    """The loaded-echo figures belong to the echo_latency scenario but a separate outcome."""
    assert [m.key for m in metrics_of(("echo_latency",))] == [
        "echo_idle_p50",
        "echo_idle_p99",
        "echo_loaded_1_p99",
        "echo_loaded_10_p99",
        "echo_loaded_p50",
        "echo_loaded_p99",
    ]
    outcomes = [
        Outcome.ok("echo_loaded", "B", Figure(metric="echo_loaded_p99", value=4000.0)),
        Outcome.ok("echo_latency", "B", Figure(metric="echo_idle_p99", value=200.0)),
    ]
    rows = build_table(outcomes, ("echo_latency",)).rows
    assert _row(rows, "echo_loaded_p99")[3] == "4000"
    assert _row(rows, "echo_idle_p99")[3] == "200"


def test_the_loaded_curve_and_the_no_op_recorder_have_their_own_cells() -> None:
    """Each stream count is its own outcome; the no-op recorder's figures sit beside ours."""
    assert [loaded_part(n) for n in STREAM_COUNTS] == [
        "echo_loaded_1",
        "echo_loaded_10",
        "echo_loaded",
    ]
    outcomes = [
        Outcome.ok("echo_loaded_1", "secondline", Figure(metric="echo_loaded_1_p99", value=9.0)),
        Outcome.ok("echo_loaded_10", "secondline", Figure(metric="echo_loaded_10_p99", value=90)),
        Outcome.ok("echo_loaded_10", "unrecorded", Figure(metric="echo_loaded_10_p99", value=60)),
    ]
    rows = build_table(outcomes, ("echo_latency",)).rows
    assert _row(rows, "echo_loaded_1_p99")[5:7] == ("9.00", "—")
    assert _row(rows, "echo_loaded_10_p99")[5:7] == ("90.0", "60.0")


def test_the_no_op_recorder_target_runs_only_what_recording_moves(tmp_path: Path) -> None:
    """The unrecorded broker has its own directory and only the recording-sensitive rows."""
    workspace = Workspace(root=tmp_path, identity=tmp_path / "id", public_key="", kex=None)
    target = UnrecordedTarget(workspace)
    assert target.directory == tmp_path / "unrecorded"
    ran = {s for s in (*SCENARIOS, *LOADED_PARTS) if target.supports(s)}
    assert ran == {"echo_latency", *LOADED_PARTS, "raw_throughput", "cpu_per_gb_recorded"}


def test_document_is_json_with_samples_ratios_and_target_status() -> None:
    """The JSON document keeps raw samples, summary ratios and why a target was skipped."""
    settings = Settings.build(quick=True, only=("exec_true", "raw_throughput"))
    document = build_document(
        started="2026-01-01T00:00:00+00:00",
        finished="2026-01-01T00:01:00+00:00",
        duration_s=60.0,
        machine={"nproc": 2},
        settings=settings.as_json(),
        targets={"B": None, "secondline": Outcome.skipped("setup", "secondline", SKIP)},
        outcomes=_outcomes(),
    )
    parsed = json.loads(json.dumps(document))
    summary = {row["metric"]: row for row in parsed["summary"]}
    assert set(summary) == {"exec_true", "raw_throughput"}
    assert summary["exec_true"]["secondline_over_B"] == 0.6
    assert summary["exec_true"]["goal_met"] is True
    assert summary["raw_throughput"]["values"]["secondline"] is None
    assert parsed["targets"]["secondline"] == {"status": "skipped", "reason": SKIP}
    assert parsed["targets"]["B"] == {"status": "ok", "reason": None}
    assert parsed["results"][0]["figures"][0]["samples"] == [190.0, 200.0, 210.0]
    assert value_of(_outcomes(), "raw_throughput", "A") is None


def test_one_line_flattens_and_caps_reasons() -> None:
    """Reasons become one line and are cut with an ellipsis when too long."""
    assert one_line("a\n  b\tc") == "a b c"
    assert one_line("x" * 10, limit=5) == "xxxx…"


def test_quick_settings_are_smaller_and_only_filters_scenarios() -> None:
    """--quick shrinks runs and transfers; --only and --targets keep catalogue order."""
    full = Settings.build(quick=False)
    quick = Settings.build(quick=True, only=("raw_throughput", "exec_true"), targets=("A", "B"))
    assert quick.runs < full.runs
    assert quick.raw_bytes < full.raw_bytes
    assert full.echo_sessions * full.echo_keystrokes >= 1500
    assert quick.scenarios == ("exec_true", "raw_throughput")
    assert quick.targets == ("B", "A")
    assert full.results_dir == Path(__file__).resolve().parents[2] / "bench" / "results"
