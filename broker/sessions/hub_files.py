"""An SFTP session's recording: the tracker that reads the relayed packets
(:mod:`broker.sessions.sftp_tracker`, pure) and the store that keeps small files' content
beside the transcript (:mod:`broker.transcript.kept_files`). The hub feeds it the bytes of
both directions and writes the marker labels it returns."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from broker.sessions.hub_core import end_message
from broker.sessions.sftp_tracker import (
    Content,
    Direction,
    FileLimits,
    Item,
    SftpLimitError,
    SftpStreamError,
    SftpTracker,
)
from broker.transcript.kept_files import ContentStore, kept_dir

# One SSH packet (asyncssh's 32 KiB) at least, or nothing moves.
MIN_WINDOW: Final = 64 << 10


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why the session must end: ``sftp_unreadable`` or ``sftp_limit``, and what to say."""

    code: str
    message: str


class FileRecording:
    """Feed relayed bytes, get the labels of the file markers to record, in order."""

    def __init__(self, limits: FileLimits, cast_path: Path) -> None:
        self.tracker = SftpTracker(limits)
        self.window = max(limits.window_bytes, MIN_WINDOW)
        self.store = ContentStore(kept_dir(cast_path))

    def feed(self, direction: Direction, data: bytes) -> tuple[list[str], Refusal | None]:
        """The labels to mark, and a refusal when the session must end without relaying
        ``data``: a stream that is not SFTP, or a file limit passed (the files still open
        are then marked as not finished)."""
        try:
            return self._labels(self.tracker.feed(direction, data)), None
        except SftpLimitError as exc:
            return self.close(), Refusal("sftp_limit", str(exc))
        except SftpStreamError as exc:
            return [], Refusal("sftp_unreadable", f"{end_message('sftp_unreadable')} ({exc})")

    def close(self) -> list[str]:
        """The session ends: files still open are recorded as not finished, not kept."""
        labels = self._labels(self.tracker.close())
        self.store.close()
        return labels

    def _labels(self, items: list[Item]) -> list[str]:
        labels: list[str] = []
        for item in items:
            if isinstance(item, Content):
                if item.drop:
                    self.store.drop(item.number)
                else:
                    self.store.write(item.number, item.data)
                continue
            if item.kept is not None and not self.store.finish(item.kept):
                # Not written (the broker's disk is full): the marker claims no content.
                item = dataclasses.replace(item, kept=None)
            labels.append(item.label())
        return labels
