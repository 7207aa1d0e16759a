"""Writing all of a buffer, or a list of buffers with ``writev``, to a regular file,
and saying how much went in before an error stopped it (the recorder cuts a torn line
back to the last whole one)."""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from typing import Final

_IOV_MAX: Final = 1024  # Linux's UIO_MAXIOV: buffers per writev call


def write_fully(fd: int, data: bytes) -> tuple[int, OSError | None]:
    """Write all of ``data``; return the bytes written and the error that stopped it."""
    view = memoryview(data)
    written = 0
    while written < len(data):
        try:  # EINTR is retried by Python itself (PEP 475)
            n = os.write(fd, view[written:])
        except OSError as exc:
            return written, exc
        if n == 0:  # pragma: no cover - regular files never write 0 bytes
            return written, OSError(errno.EIO, "write returned 0")
        written += n
    return written, None


def writev_fully(fd: int, buffers: Sequence[bytes]) -> tuple[int, OSError | None]:
    """Write ``buffers`` in order with ``writev``; return the bytes written and the error
    that stopped it (a short write, which a regular file makes only when space runs out,
    is finished with :func:`write_fully`, which then reports the error)."""
    written = 0
    for start in range(0, len(buffers), _IOV_MAX):
        batch = buffers[start : start + _IOV_MAX]
        try:
            n = os.writev(fd, batch)
        except OSError as exc:
            return written, exc
        written += n
        want = sum(len(b) for b in batch)
        if n < want:
            more, error = write_fully(fd, b"".join(batch)[n:])
            written += more
            if error is not None:
                return written, error
    return written, None
