"""File content kept with a transcript: the bytes of each small file an SFTP session moved.

A file session's markers (``file upload PATH size=N sha256=H kept=K``, see
:mod:`broker.sessions.sftp_tracker`) name the file's SHA-256, and the marker is an event
under the digest chain and the signed seal. The content itself lies beside the ``.cast`` in
``<cast>.files/K``; it needs no signature of its own, because the signed marker fixes its
size and digest: :func:`check_kept` recomputes both, so a changed, cut, missing or swapped
content file fails verification like a changed event. Files larger than the session's
``keep_bytes`` (and files not moved as one run of bytes, or not finished) keep only their
digest, and their markers carry no ``kept=``.

:class:`ContentStore` writes the content while the session runs: ``K.part`` grows in offset
order and becomes ``K`` only when the file is closed whole; everything is opened with
``O_NOFOLLOW`` and ``O_EXCL`` under a directory made for this session.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

KEPT_SUFFIX: Final = ".files"
# The end of an upload or download marker that kept its content. Only these two ops carry
# a size and digest after their path, so a path cannot pose as the tail.
_KEPT: Final = re.compile(
    r"file (?:upload|download) .+ size=([0-9]{1,15}) sha256=([0-9a-f]{64}) kept=([0-9]{1,9})"
)
_CHUNK: Final = 1 << 20


def kept_dir(cast_path: Path) -> Path:
    """``<cast>.files`` beside a ``.cast`` (the recorded one or an exported copy)."""
    cast_path = Path(cast_path)
    return cast_path.with_name(cast_path.name + KEPT_SUFFIX)


def kept_claims(cast_path: Path) -> list[tuple[int, int, int, str]]:
    """``(event number, kept number, size, sha256)`` of every marker that kept content."""
    claims: list[tuple[int, int, int, str]] = []
    with open(cast_path, "rb") as fh:
        fh.readline()  # the header
        for number, line in enumerate(fh, start=1):
            if b'"m", "file ' not in line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue  # the chain check has already judged the lines
            if not (isinstance(event, list) and len(event) == 3 and event[1] == "m"):
                continue
            m = _KEPT.fullmatch(str(event[2]))
            if m is not None:
                claims.append((number, int(m.group(3)), int(m.group(1)), m.group(2)))
    return claims


def _digest(path: Path) -> tuple[int, str] | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    digest, size = hashlib.sha256(), 0
    with os.fdopen(fd, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def check_kept(cast_path: Path) -> tuple[int, str] | None:
    """The first kept file that does not match its marker: ``(event number, sentence)``;
    None when every one matches (or the session kept none)."""
    directory = kept_dir(cast_path)
    for event, number, size, sha256 in kept_claims(cast_path):
        found = _digest(directory / str(number))
        if found is None:
            return event, (
                f"the content of file {number} (event {event}) is missing from "
                f"{directory.name}/; copy it with the transcript"
            )
        if found != (size, sha256):
            return event, (
                f"the content of file {number} (event {event}) does not match the size and "
                "SHA-256 its signed marker records: it was altered"
            )
    return None


class ContentStore:
    """Writes one session's kept file content (see the module's docstring). Never raises
    for the disk: a file it cannot write is simply not kept (:meth:`finish` says so)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._fds: dict[int, int] = {}
        self._failed: set[int] = set()
        self._made = False

    def write(self, number: int, data: bytes) -> None:
        """Append the next bytes of file ``number`` (in offset order)."""
        if number in self._failed:
            return
        try:
            fd = self._fds.get(number)
            if fd is None:
                fd = self._open(number)
            os.write(fd, data)  # a regular file writes whole
        except OSError as exc:
            log.warning("cannot keep file %d in %s: %s", number, self.directory, exc)
            self.drop(number)
            self._failed.add(number)

    def drop(self, number: int) -> None:
        """File ``number`` is not kept: what was written of it goes."""
        fd = self._fds.pop(number, None)
        if fd is not None:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(self.directory / f"{number}.part")

    def finish(self, number: int) -> bool:
        """File ``number`` was closed whole: keep it. False when it could not be written."""
        if number in self._failed:
            return False
        try:
            fd = self._fds.pop(number, None)
            if fd is None:  # an empty file: nothing was written yet
                fd = self._open(number)
                self._fds.pop(number)
            os.close(fd)
            os.rename(self.directory / f"{number}.part", self.directory / str(number))
        except OSError as exc:
            log.warning("cannot keep file %d in %s: %s", number, self.directory, exc)
            self.drop(number)
            return False
        return True

    def close(self) -> None:
        """The session ended: files not finished are not kept."""
        for number in list(self._fds):
            self.drop(number)

    def _open(self, number: int) -> int:
        if not self._made:
            os.mkdir(self.directory, 0o700)  # refuses one that exists, or a planted link
            self._made = True
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self.directory / f"{number}.part", flags, 0o600)
        self._fds[number] = fd
        return fd
