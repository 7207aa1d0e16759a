"""Give the memory of finished handshakes back to the system.

Every SSH and TLS handshake allocates and frees tens of kilobytes (key exchange, packets,
option objects, partly in asyncssh's executor threads). After a reconnect storm the freed
memory stays in the C allocator's heap, scattered between the small objects that live
tunnels keep, and counts in the broker's resident size: about a fifth of what an idle
agent costs. glibc's ``malloc_trim(0)`` returns such free pages to the system (a few
milliseconds for thousands of tunnels). :class:`TrimPolicy` (pure) decides when: once
handshakes (or enrollments, which leave garbage as well) happened and none has run for a
little while.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

log = logging.getLogger(__name__)

#: Quiet time after the last handshake before trimming.
QUIET_S: Final = 5.0


@dataclass
class TrimPolicy:
    """Trim once handshakes completed since the last trim and ``quiet`` seconds passed."""

    quiet: float = QUIET_S
    _seen: int = 0
    _changed_at: float = 0.0
    _trimmed: int = 0

    def due(self, handshakes: int, in_flight: int, now: float) -> bool:
        """Whether to trim now, given the running handshake count and those in flight."""
        if handshakes != self._seen or in_flight:
            self._seen = handshakes
            self._changed_at = now
            return False
        if handshakes == self._trimmed or now - self._changed_at < self.quiet:
            return False
        self._trimmed = handshakes
        return True


def malloc_trim() -> Callable[[], None] | None:
    """glibc's ``malloc_trim(0)``, or None on a C library without it."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def run() -> None:
        trim(0)

    return run
