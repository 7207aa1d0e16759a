"""`python -m bench.unrecorded_broker ARGS`: `secondline ARGS` with a no-op recorder.

Bench only, never shipped as a setting: Secondline records every session and has no switch
to stop it. The bench's "Secondline, no-op recorder" target runs its broker through this
module so that the table shows what recording costs beside the same broker recording.
The no-op recorder still creates and seals the transcript files (an empty, valid
transcript), so the session's start and end take their usual path; it drops every event.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from broker.cli.main import main
from broker.sessions import recording
from broker.transcript import Mark, TranscriptRecorder


class NoopRecorder(TranscriptRecorder):
    """A recorder that records nothing between its header and its seal."""

    def output(self, data: bytes, now: float, marks: Sequence[Mark]) -> None:
        """Drop agent output."""

    def input(self, data: bytes, now: float, *, echoed: bool) -> None:
        """Drop staff input."""

    def answer_back(self, data: bytes, now: float, *, echoed: bool) -> None:
        """Drop answer-back."""

    def resize(self, cols: int, rows: int, now: float) -> None:
        """Drop resizes."""

    def marker(self, label: str, now: float) -> None:
        """Drop markers."""


if __name__ == "__main__":
    # The one place the broker creates recorders (broker/sessions/recording.py).
    recording.TranscriptRecorder = NoopRecorder  # type: ignore[attr-defined]
    sys.exit(main())
