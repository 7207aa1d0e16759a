"""The seal file on disk: overwritten in place and synced at the end of a recording (and
by recovery), and read back (as a seal, or as its text for the database store); the
directory entries made durable."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

from broker.transcript.chain import MAX_SEAL_FILE, Seal, padded_seal, parse_seal
from broker.transcript.errors import RecorderWriteError, SealFormatError

logger = logging.getLogger(__name__)


def write_seal(fd: int, seal: Seal) -> None:
    """Overwrite the reserved seal file in place (no new disk space needed) and sync it."""
    data = padded_seal(seal)
    try:
        if os.pwrite(fd, data, 0) != len(data):  # pragma: no cover - 4 KiB in one go
            raise OSError(errno.EIO, "short write of the seal")
        os.fsync(fd)
    except OSError as exc:
        raise RecorderWriteError(f"writing the seal failed: {exc.strerror}") from None
    try:
        os.ftruncate(fd, len(seal.encode()))  # the padding is JSON whitespace: optional
    except OSError:  # pragma: no cover - shrinking a local file does not fail
        logger.warning("trimming a seal file failed; its padding stays")


def sync_directory(path: Path) -> None:
    """Make new directory entries durable; failures are logged, not raised."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:  # pragma: no cover - the directory we just wrote in
        logger.warning("opening %s to sync it failed: %s", path, exc.strerror)
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # pragma: no cover - depends on the file system
        logger.warning("syncing %s failed: %s", path, exc.strerror)
    finally:
        os.close(fd)


def read_seal_file(path: Path) -> Seal | None:
    """The seal at ``path``; ``None`` if missing, still pending, or unreadable as a seal."""
    read = _read_seal(path)
    return None if read is None else read[0]


def read_seal_text(path: Path) -> str | None:
    """The seal file's text as it is on disk (to hand on unchanged), under the same
    conditions as :func:`read_seal_file`."""
    read = _read_seal(path)
    return None if read is None else read[1].decode("utf-8")


def _read_seal(path: Path) -> tuple[Seal, bytes] | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(MAX_SEAL_FILE + 1)
    try:
        seal = parse_seal(data)
    except SealFormatError:
        return None  # broken: not a seal
    if seal is None:
        return None  # the placeholder: still recording
    return seal, data
