"""The bench's one configuration object, built from the command line in `__main__`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.metrics import SCENARIOS, STREAM_COUNTS, TARGET_KEYS, TargetKey
from bench.results import JSON

DEFAULT_RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True, kw_only=True)
class Settings:
    """How much to measure; recorded in the JSON beside the figures."""

    quick: bool
    scenarios: tuple[str, ...]
    targets: tuple[TargetKey, ...]
    results_dir: Path
    runs: int
    """Repetitions of open_prompt and exec_true."""
    throughput_runs: int
    """Repetitions of pty_throughput and raw_throughput (each moves pty/raw_bytes)."""
    echo_sessions: int
    echo_keystrokes: int
    loaded_keystrokes: int
    """Keystrokes per session while others stream (each can take 100+ ms on 2 cores)."""
    echo_warmup: int
    echo_budget_s: float
    """Seconds one echo session may type before it stops with the keystrokes it has."""
    streamers: int
    """The most sessions streaming output through the target while loaded echo is measured."""
    stream_counts: tuple[int, ...]
    """Each count of streaming sessions loaded echo is measured with (a curve)."""
    start_concurrency: int
    """SSH handshakes in flight at once when opening many sessions (sshd's MaxStartups is 10)."""
    pty_bytes: int
    raw_bytes: int
    record_bytes: int
    sftp_bytes: int
    """Bytes each sftp get and put moves (sftp_throughput)."""
    sftp_load_bytes: int
    """Bytes the sftp get moves while another session types (sftp_echo): the issue's 1 GB."""
    stall_s: float
    """The longest silence a transfer may have before it counts as stalled."""
    """Bytes relayed through the broker to measure its CPU seconds per GB."""
    swarm_agents: int
    session_steps: tuple[int, ...]
    typing_interval_s: float
    step_seconds: float
    kex: str | None
    """OpenSSH KexAlgorithms for every client, or None for OpenSSH's defaults."""
    profile: bool = False
    """Sample the brokers with py-spy during the throughput and loaded-echo scenarios."""

    @classmethod
    def build(
        cls,
        *,
        quick: bool,
        only: tuple[str, ...] = (),
        targets: tuple[TargetKey, ...] = (),
        kex: str | None = None,
        results_dir: Path = DEFAULT_RESULTS_DIR,
        profile: bool = False,
    ) -> Settings:
        """Return the full settings, or the smaller `--quick` ones (≤ 3 min on 2 cores)."""
        scenarios = tuple(name for name in SCENARIOS if not only or name in only)
        chosen = tuple(key for key in TARGET_KEYS if not targets or key in targets)
        return cls(
            quick=quick,
            scenarios=scenarios,
            targets=chosen,
            results_dir=results_dir,
            runs=3 if quick else 10,
            throughput_runs=3,
            echo_sessions=1 if quick else 3,
            echo_keystrokes=200 if quick else 500,
            loaded_keystrokes=50 if quick else 500,
            echo_warmup=20,
            echo_budget_s=10.0 if quick else 60.0,
            streamers=max(STREAM_COUNTS),
            stream_counts=STREAM_COUNTS,
            start_concurrency=8,
            pty_bytes=10_000_000 if quick else 200_000_000,
            raw_bytes=50_000_000 if quick else 1_000_000_000,
            record_bytes=50_000_000 if quick else 1_000_000_000,
            sftp_bytes=100_000_000 if quick else 1_000_000_000,
            sftp_load_bytes=1_000_000_000,
            stall_s=5.0 if quick else 15.0,
            swarm_agents=50 if quick else 1000,
            session_steps=(50,) if quick else (50, 100, 200, 300, 500, 750, 1000),
            typing_interval_s=0.2,
            step_seconds=3.0 if quick else 10.0,
            kex=kex,
            profile=profile,
        )

    def as_json(self) -> dict[str, JSON]:
        """Return the settings as JSON-ready values."""
        return {
            "quick": self.quick,
            "scenarios": list[JSON](self.scenarios),
            "targets": list[JSON](self.targets),
            "runs": self.runs,
            "throughput_runs": self.throughput_runs,
            "echo_sessions": self.echo_sessions,
            "echo_keystrokes": self.echo_keystrokes,
            "loaded_keystrokes": self.loaded_keystrokes,
            "echo_warmup": self.echo_warmup,
            "echo_budget_s": self.echo_budget_s,
            "streamers": self.streamers,
            "stream_counts": list[JSON](self.stream_counts),
            "start_concurrency": self.start_concurrency,
            "pty_bytes": self.pty_bytes,
            "raw_bytes": self.raw_bytes,
            "record_bytes": self.record_bytes,
            "sftp_bytes": self.sftp_bytes,
            "sftp_load_bytes": self.sftp_load_bytes,
            "stall_s": self.stall_s,
            "swarm_agents": self.swarm_agents,
            "session_steps": list[JSON](self.session_steps),
            "typing_interval_s": self.typing_interval_s,
            "step_seconds": self.step_seconds,
            "kex": self.kex,
            "profile": self.profile,
        }
