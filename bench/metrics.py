"""The figures the bench reports, their units and the targets from PERFORMANCE.md.

One `Metric` per table row. `Goal` is Secondline's target; `reference` holds the peers'
figures measured for PERFORMANCE.md (kept in the JSON so a run can be compared with them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

TargetKey = Literal[
    "floor", "B", "A", "secondline", "unrecorded", "secondline-cluster1", "secondline-cluster2"
]

TARGET_KEYS: Final[tuple[TargetKey, ...]] = (
    "floor",
    "B",
    "A",
    "secondline",
    "unrecorded",
    "secondline-cluster1",
    "secondline-cluster2",
)
TARGET_LABELS: Final[dict[TargetKey, str]] = {
    "floor": "floor",
    "B": "B direct",
    "A": "A reverse tunnel",
    "secondline": "Secondline",
    "unrecorded": "Secondline, no-op recorder",
    "secondline-cluster1": "Secondline cluster, 1 node",
    "secondline-cluster2": "Secondline cluster, 2 nodes",
}
# Sessions streaming while loaded echo is measured: a curve, not one point. The last count
# keeps the figure names echo_loaded_p50/_p99 of earlier runs.
STREAM_COUNTS: Final[tuple[int, ...]] = (1, 10, 50)


def loaded_part(streams: int) -> str:
    """The outcome (and figure prefix) of loaded echo with `streams` sessions streaming."""
    return "echo_loaded" if streams == STREAM_COUNTS[-1] else f"echo_loaded_{streams}"


LOADED_PARTS: Final[tuple[str, ...]] = tuple(loaded_part(n) for n in STREAM_COUNTS)


@dataclass(frozen=True, kw_only=True)
class Goal:
    """Secondline's target for one figure: `value` must be met with `op`."""

    op: Literal["<=", ">="]
    value: float
    text: str

    def met_by(self, figure: float) -> bool:
        """Tell whether `figure` meets the goal."""
        return figure <= self.value if self.op == "<=" else figure >= self.value


@dataclass(frozen=True, kw_only=True)
class Metric:
    """One row of the table: a figure measured by `scenario` for each target."""

    key: str
    scenario: str
    label: str
    unit: str
    better: Literal["lower", "higher"]
    goal: Goal | None = None
    reference: dict[str, float] = field(default_factory=dict)
    part: str = ""
    """The outcome that holds this figure when a scenario reports in parts (echo_loaded)."""

    @property
    def outcome_key(self) -> str:
        """The `Outcome.scenario` this figure is found in."""
        return self.part or self.scenario


def _le(value: float, text: str) -> Goal:
    return Goal(op="<=", value=value, text=text)


def _ge(value: float, text: str) -> Goal:
    return Goal(op=">=", value=value, text=text)


METRICS: Final[tuple[Metric, ...]] = (
    Metric(
        key="open_prompt",
        scenario="open_prompt",
        label="ssh start → first prompt (PTY)",
        unit="ms",
        better="lower",
        goal=_le(150.0, "≤ 150 ms"),
        reference={"B": 191.0, "A": 382.0},
    ),
    Metric(
        key="exec_true",
        scenario="exec_true",
        label="ssh host true, start → exit",
        unit="ms",
        better="lower",
        goal=_le(150.0, "≤ 150 ms"),
        reference={"B": 191.0, "A": 341.0},
    ),
    Metric(
        key="echo_idle_p50",
        scenario="echo_latency",
        label="keystroke echo p50, idle",
        unit="µs",
        better="lower",
        goal=_le(250.0, "≤ 250 µs"),
        reference={"floor": 43.0, "B": 163.0, "A": 294.0},
    ),
    Metric(
        key="echo_idle_p99",
        scenario="echo_latency",
        label="keystroke echo p99, idle",
        unit="µs",
        better="lower",
        goal=_le(500.0, "≤ 500 µs"),
        reference={"floor": 70.0, "B": 201.0, "A": 555.0},
    ),
    Metric(
        key="echo_loaded_1_p99",
        scenario="echo_latency",
        part="echo_loaded_1",
        label="keystroke echo p99, 1 session streaming",
        unit="µs",
        better="lower",
    ),
    Metric(
        key="echo_loaded_10_p99",
        scenario="echo_latency",
        part="echo_loaded_10",
        label="keystroke echo p99, 10 sessions streaming",
        unit="µs",
        better="lower",
    ),
    Metric(
        key="echo_loaded_p50",
        scenario="echo_latency",
        part="echo_loaded",
        label="keystroke echo p50, 50 sessions streaming",
        unit="µs",
        better="lower",
    ),
    Metric(
        key="echo_loaded_p99",
        scenario="echo_latency",
        part="echo_loaded",
        label="keystroke echo p99, 50 sessions streaming",
        unit="µs",
        better="lower",
        goal=_le(5000.0, "≤ 5 ms"),
    ),
    Metric(
        key="pty_throughput",
        scenario="pty_throughput",
        label="output through a PTY",
        unit="MB/s",
        better="higher",
        goal=_ge(30.0, "≥ 30 MB/s"),
        reference={"floor": 35.0, "B": 33.5, "A": 34.4},
    ),
    Metric(
        key="raw_throughput",
        scenario="raw_throughput",
        label="output without a PTY",
        unit="MB/s",
        better="higher",
        goal=_ge(100.0, "≥ 100 MB/s"),
        reference={"B": 428.0, "A": 73.0},
    ),
    Metric(
        key="sftp_download",
        scenario="sftp_throughput",
        part="sftp_download",
        label="sftp get (sparse file to /dev/null)",
        unit="MB/s",
        better="higher",
    ),
    Metric(
        key="sftp_upload",
        scenario="sftp_throughput",
        part="sftp_upload",
        label="sftp put (sparse file to /dev/null)",
        unit="MB/s",
        better="higher",
    ),
    Metric(
        key="sftp_echo_p50",
        scenario="sftp_echo",
        label="keystroke echo p50, during an sftp get",
        unit="µs",
        better="lower",
    ),
    Metric(
        key="sftp_echo_p99",
        scenario="sftp_echo",
        label="keystroke echo p99, during an sftp get",
        unit="µs",
        better="lower",
    ),
    Metric(
        key="memory_per_idle_agent",
        scenario="memory_per_idle_agent",
        label="broker memory per idle agent",
        unit="KB",
        better="lower",
        goal=_le(50.0, "≤ 50 KB"),
        reference={"A": 1850.0},
    ),
    Metric(
        key="handshakes_per_second",
        scenario="handshakes_per_second",
        label="agent handshakes per second",
        unit="/s",
        better="higher",
        goal=_ge(200.0, "≥ 200 /s"),
        reference={"A": 21.0},
    ),
    Metric(
        key="restart_recovery",
        scenario="restart_recovery",
        label="broker restart → every agent back",
        unit="s",
        better="lower",
        goal=_le(60.0, "≤ 60 s (10,000 agents)"),
    ),
    Metric(
        key="max_concurrent_sessions",
        scenario="max_concurrent_sessions",
        label="interactive sessions with echo p99 < 50 ms",
        unit="sessions",
        better="higher",
        goal=_ge(500.0, "≥ 500"),
    ),
    Metric(
        key="cpu_per_gb_recorded",
        scenario="cpu_per_gb_recorded",
        label="broker CPU per GB relayed and recorded",
        unit="s/GB",
        better="lower",
    ),
)

METRICS_BY_KEY: Final[dict[str, Metric]] = {metric.key: metric for metric in METRICS}

SESSION_SCENARIOS: Final[tuple[str, ...]] = (
    "open_prompt",
    "exec_true",
    "echo_latency",
    "pty_throughput",
    "raw_throughput",
    "sftp_throughput",
    "sftp_echo",
)
# What the SFTP scenarios report (bench.file_scenarios); every ssh target supports them.
FILE_PARTS: Final[frozenset[str]] = frozenset(
    {"sftp_throughput", "sftp_download", "sftp_upload", "sftp_echo"}
)
BROKER_SCENARIOS: Final[tuple[str, ...]] = (
    "memory_per_idle_agent",
    "handshakes_per_second",
    "restart_recovery",
    "max_concurrent_sessions",
    "cpu_per_gb_recorded",
)
SCENARIOS: Final[tuple[str, ...]] = SESSION_SCENARIOS + BROKER_SCENARIOS


def metrics_of(scenarios: tuple[str, ...]) -> tuple[Metric, ...]:
    """Return the table rows of the given scenarios, in catalogue order."""
    return tuple(metric for metric in METRICS if metric.scenario in scenarios)
