"""Processes driven through a PTY the bench owns, timed with blocking system calls.

These functions run in a worker thread (`asyncio.to_thread`), so timing is a tight loop of
write → poll → read with `perf_counter_ns`, undisturbed by the event loop.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import math
import os
import pty
import select
import signal
import struct
import subprocess
import termios
import time
import tty
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from bench import MeasurementError

READ_CHUNK: Final = 1 << 20
PIPE_SIZE: Final = 1 << 20
F_SETPIPE_SZ: Final = 1031
KEYS: Final = b"abcdefghijklmnopqrstuvwxyz0123456789"
TAIL: Final = 4096


@dataclass(frozen=True)
class Transfer:
    """Bytes read until end of file, and when the first and last of them arrived."""

    byte_count: int
    first_ns: int
    last_ns: int

    @property
    def seconds(self) -> float:
        """Time from the first byte to the last."""
        return (self.last_ns - self.first_ns) / 1e9


class PtyProcess:
    """A child whose stdin, stdout and stderr are the slave side of a fresh PTY."""

    def __init__(self, argv: Sequence[str], rows: int = 24, columns: int = 80) -> None:
        master, slave = pty.openpty()
        # Raw from the start, so nothing the bench writes is echoed locally before ssh
        # itself switches the terminal to raw mode.
        tty.setraw(slave)
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        self.fd = master
        self._tail = bytearray()
        self._poll = select.poll()
        self._poll.register(master, select.POLLIN)
        self.started_ns = time.perf_counter_ns()
        try:
            self.process = subprocess.Popen(
                list(argv), stdin=slave, stdout=slave, stderr=slave, start_new_session=True
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)

    def _read(self, timeout: float) -> bytes:
        """Return what arrives within `timeout`; b"" at end of file (EIO on a PTY)."""
        if not self._poll.poll(max(0, int(timeout * 1000))):
            raise TimeoutError
        try:
            return os.read(self.fd, READ_CHUNK)
        except OSError as error:
            if error.errno == errno.EIO:
                return b""
            raise

    def _remember(self, data: bytes) -> None:
        self._tail += data
        del self._tail[:-TAIL]

    def describe_tail(self) -> str:
        """Return the last output as one printable line, for error messages."""
        text = self._tail.decode(errors="replace")
        return " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())[-200:]

    def read_until(self, marker: bytes, timeout: float) -> int:
        """Read until `marker` appears and return the perf_counter_ns when it did."""
        deadline = time.monotonic() + timeout
        window = bytearray()
        while True:
            try:
                data = self._read(deadline - time.monotonic())
            except TimeoutError:
                raise MeasurementError(
                    f"no {marker.decode()!r} within {timeout:.0f} s; got: {self.describe_tail()!r}"
                ) from None
            now = time.perf_counter_ns()
            if not data:
                raise MeasurementError(
                    f"session ended before {marker.decode()!r}: {self.describe_tail()!r}"
                )
            self._remember(data)
            window += data
            if marker in window:
                return now
            del window[: -len(marker)]

    def echo_round_trips(
        self, count: int, warmup: int, timeout: float, budget_s: float = math.inf
    ) -> list[float]:
        """Type `warmup` + `count` single bytes and return each echo's round trip in µs.

        Typing stops early once `budget_s` has passed (warm-up may use a third of it), so
        a target whose echo takes seconds still ends in bounded time, with fewer samples.
        """
        samples: list[float] = []
        started = time.monotonic()
        index = 0
        while len(samples) < count:
            elapsed = time.monotonic() - started
            if samples and elapsed > budget_s:
                break
            measuring = index >= warmup or elapsed > budget_s / 3
            key = KEYS[index % len(KEYS) : index % len(KEYS) + 1]
            start = time.perf_counter_ns()
            os.write(self.fd, key)
            while True:
                try:
                    data = self._read(timeout)
                except TimeoutError:
                    raise MeasurementError(
                        f"keystroke {index} not echoed within {timeout:.0f} s"
                    ) from None
                if not data:
                    raise MeasurementError(f"session ended at keystroke {index}")
                if key in data:
                    break
            if measuring:
                samples.append((time.perf_counter_ns() - start) / 1e3)
            index += 1
        return samples

    def read_to_eof(self, idle_timeout: float) -> Transfer:
        """Read everything until the child closes the PTY."""
        return read_to_eof(self.fd, idle_timeout, is_pty=True)

    def close(self, goodbye: bytes | None = None, grace: float = 5.0) -> int:
        """End the child (after writing `goodbye`, if given) and return its exit status."""
        if goodbye is not None and self.process.poll() is None:
            with contextlib.suppress(OSError):
                os.write(self.fd, goodbye)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(grace)
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        os.close(self.fd)
        return self.process.returncode


def read_to_eof(fd: int, idle_timeout: float, *, is_pty: bool = False) -> Transfer:
    """Count bytes from `fd` until end of file; `idle_timeout` bounds each silence."""
    buffer = bytearray(READ_CHUNK)
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    total = 0
    first_ns = last_ns = 0
    while True:
        if not poller.poll(int(idle_timeout * 1000)):
            raise MeasurementError(f"output stalled for {idle_timeout:.0f} s after {total} bytes")
        try:
            got = os.readv(fd, [buffer])
        except OSError as error:
            if is_pty and error.errno == errno.EIO:
                break
            raise
        if got == 0:
            break
        last_ns = time.perf_counter_ns()
        if total == 0:
            first_ns = last_ns
        total += got
    return Transfer(byte_count=total, first_ns=first_ns, last_ns=last_ns)


def widen_pipe(fd: int) -> None:
    """Grow a pipe to 1 MiB so the reader is not what limits throughput."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)
