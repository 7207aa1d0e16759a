"""Secondline's benchmark suite: OpenSSH baselines and the broker, side by side in one run.

`python -m bench [--quick] [--only SCENARIO...]` measures every scenario for every target
(floor, B direct OpenSSH, A reverse tunnel, Secondline) and writes a table, JSON and a plot
to ``bench/results/``. How to read the figures: ``docs/benchmarks.md``.

Errors::

    BenchError                  root of every error the bench raises on purpose
    ├── SshdMissing             /usr/sbin/sshd is absent and cannot be installed here
    ├── TargetUnavailable       a target cannot be set up; the message is one line
    └── MeasurementError        a scenario could not measure (process died, marker not seen)
"""

from __future__ import annotations


class BenchError(Exception):
    """Root of the errors the bench raises on purpose."""


class SshdMissing(BenchError):
    """OpenSSH's server is not installed and the bench may not install it."""


class TargetUnavailable(BenchError):
    """A target could not be set up; ``str(error)`` is a one-line reason."""


class MeasurementError(BenchError):
    """A scenario could not take its measurement on one target."""


__all__ = ["BenchError", "MeasurementError", "SshdMissing", "TargetUnavailable"]
