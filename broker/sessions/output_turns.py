"""Turns at the broker's event loop for agents' output: small writes first, bulk in turn.

One event loop reads every agent's tunnel and writes every participant's terminal. Taking
a chunk of a session's output in (decrypting it) is cheap; handling it (recording it,
writing it to each participant's SSH channel or WebSocket, the socket write waking that
client) is where the broker's time goes. Handled in arrival order, a typed key's echo
waited behind every chunk that came before it in the agent's tunnel message (up to
256 KiB of other sessions' output, tens of milliseconds on a loaded machine), and the
kernel buffers in front of the broker stayed full of bulk because the broker could not
take it in any faster than it handled it.

The rule (:class:`OutputTurns`, one per event loop):

- a small chunk (at most :data:`SMALL` bytes: an echo, a prompt, an input report) of a
  session that has nothing waiting is handled at once, ahead of any bulk that came in
  the same message;
- anything else waits in its session's line; the lines are served in turn, at most
  :data:`QUANTUM` bytes of one session at a time and :data:`ROUND` bytes per event-loop
  turn, so socket reads (keystrokes, the next tunnel message with its echoes) come in
  between;
- a line that reaches :data:`HIGH` bytes holds its session's agent channel
  (``pause_reading``: asyncssh keeps at most the channel's window and stops granting
  more, so the agent stops reading that process); it is let go at :data:`LOW`.

So a line never holds more than ``LOW`` plus the channel's window (what asyncssh held
while it was paused, handed over at once when it is let go; :meth:`OutputTurns.bound`),
a session that streams slows only itself, and its bulk waits in the broker, behind the
echoes, instead of in the tunnel in front of them: with every line held, the agents run
out of window and the tunnel empties. The bookkeeping is pure; the only I/O
is the callback it is given to run a turn on the next loop iteration.

A lane whose handling raises (a bug: the hub catches what it expects, such as a full
recorder disk) is taken out of the turns at once, with everything it had waiting, and told
so (:meth:`Lane.failed`): the hub ends that session saying why. Left in, its line would be
served by nobody (every later chunk of the session joining it, its channel held for good),
and the exception, escaping a turn, would leave the other lines unserved until some chunk
came in to schedule the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Protocol

log = logging.getLogger(__name__)

#: A chunk this small from a session with nothing waiting is handled at once.
SMALL: Final = 4 * 1024
#: Most bytes of one session handled in one go (one agent read, one SSH packet).
QUANTUM: Final = 32 * 1024
#: Most bytes handled in one event-loop turn before reads get their chance.
ROUND: Final = 64 * 1024
#: A line this long holds its agent channel; it is let go once drained to LOW.
HIGH: Final = 64 * 1024
LOW: Final = 32 * 1024
#: The largest chunk asyncssh delivers (its default packet size, which the broker keeps).
MAX_CHUNK: Final = 32 * 1024


class Lane(Protocol):
    """A session's output as the turns see it (the hub, :class:`LiveSession`)."""

    def deliver(self, data: bytes, stderr: bool) -> None:
        """Handle one chunk now (record it, show it)."""

    def hold(self, held: bool) -> None:
        """Stop (True) or resume (False) reading the agent channel."""

    def failed(self, exc: Exception, lost: int) -> None:
        """Handling a chunk raised ``exc``: the lane is out of the turns, and ``lost`` bytes
        (that chunk and all that waited behind it) were not surely handled."""


@dataclass(eq=False)
class _Line:
    chunks: deque[tuple[bytes, bool]] = field(default_factory=deque)
    size: int = 0
    held: bool = False


class OutputTurns:
    """The lines of output waiting to be handled, and whose turn it is."""

    def __init__(
        self,
        schedule: Callable[[Callable[[], None]], object],
        *,
        small: int = SMALL,
        quantum: int = QUANTUM,
        round_bytes: int = ROUND,
        high: int = HIGH,
        low: int = LOW,
    ) -> None:
        if not 0 <= low <= high or min(quantum, round_bytes) <= 0 or small < 0:
            raise ValueError("output turns need 0 <= low <= high and positive quanta")
        self._schedule = schedule
        self.small = small
        self.quantum = quantum
        self.round_bytes = round_bytes
        self.high = high
        self.low = low
        self._lines: dict[Lane, _Line] = {}
        self._order: deque[Lane] = deque()
        self._scheduled = False
        #: The longest any line got (tests assert it stays within :meth:`bound`).
        self.peak = 0
        #: Chunks handled at once / after waiting their turn (what the bench reads).
        self.direct = 0
        self.queued = 0
        #: Lanes taken out because handling their output raised.
        self.failures = 0

    def bound(self, window: int) -> int:
        """The most one line of a channel with this ``window`` can hold: it is held at
        ``high``, after the chunk that got it there (at most one SSH packet); let go at
        ``low``, it takes at once all asyncssh held meanwhile (at most the window)."""
        return max(self.high + MAX_CHUNK, self.low + window)

    def waiting(self, lane: Lane) -> int:
        """Bytes of ``lane`` waiting for their turn."""
        line = self._lines.get(lane)
        return 0 if line is None else line.size

    def offer(self, lane: Lane, data: bytes, stderr: bool) -> None:
        """A chunk of ``lane``'s output came in: handle it now or put it in line."""
        line = self._lines.get(lane)
        if line is None:
            if len(data) <= self.small:
                self.direct += 1
                self._deliver(lane, data, stderr)
                return
            line = self._lines[lane] = _Line()
            self._order.append(lane)
        self.queued += 1
        line.chunks.append((data, stderr))
        line.size += len(data)
        self.peak = max(self.peak, line.size)
        if not line.held and line.size >= self.high:
            line.held = True
            self._hold(lane, True)
        if not self._scheduled:
            self._scheduled = True
            self._schedule(self._turn)

    def flush(self, lane: Lane) -> None:
        """Handle everything ``lane`` has waiting, now (its session is ending)."""
        line = self._lines.pop(lane, None)
        if line is None:
            return
        with contextlib.suppress(ValueError):
            self._order.remove(lane)
        while line.chunks:
            data, stderr = line.chunks.popleft()
            line.size -= len(data)
            try:
                lane.deliver(data, stderr)
            except Exception as exc:  # a bug in the lane: it fails, its session ends
                self._failed(lane, exc, len(data) + line.size)
                return

    def _turn(self) -> None:
        """Serve the lines in order, a quantum each, until this turn's bytes are spent."""
        self._scheduled = False
        budget = self.round_bytes
        while budget > 0 and self._order:
            lane = self._order.popleft()
            line = self._lines[lane]
            served = 0
            while line.chunks and served < self.quantum:
                data, stderr = line.chunks.popleft()
                line.size -= len(data)
                served += len(data)
                if not self._deliver(lane, data, stderr, line):
                    break  # failed: out of the turns, with all it had waiting
                if self._lines.get(lane) is not line:
                    break  # flushed while handling its chunk (the session ended)
            budget -= served
            if self._lines.get(lane) is not line:
                continue
            resume = line.held and line.size <= self.low
            if resume:
                line.held = False
            if line.chunks:
                self._order.append(lane)
            else:
                del self._lines[lane]
            if resume:
                # asyncssh hands over what it held at once: it may come back in here.
                self._hold(lane, False)
        if self._order and not self._scheduled:
            self._scheduled = True
            self._schedule(self._turn)

    def _deliver(self, lane: Lane, data: bytes, stderr: bool, line: _Line | None = None) -> bool:
        """Hand ``lane`` one chunk (taken out of ``line``, if it waited in one); False: it
        raised, and the lane is out."""
        try:
            lane.deliver(data, stderr)
        except Exception as exc:  # a bug in the lane: it fails, its session ends
            lost = len(data)
            if line is not None and self._lines.get(lane) is line:
                lost += line.size  # and all that waits behind it
            self._failed(lane, exc, lost)
            return False
        return True

    def _hold(self, lane: Lane, held: bool) -> None:
        """Hold or let go of ``lane``'s channel (if that raises, the lane is out)."""
        try:
            lane.hold(held)
        except Exception as exc:  # a bug in the lane: it fails, its session ends
            line = self._lines.get(lane)
            self._failed(lane, exc, 0 if line is None else line.size)

    def _failed(self, lane: Lane, exc: Exception, lost: int) -> None:
        """Take ``lane`` out of the turns (its line and its place in order) and tell it."""
        self.failures += 1
        self._lines.pop(lane, None)
        with contextlib.suppress(ValueError):
            self._order.remove(lane)
        try:
            lane.failed(exc, lost)
        except Exception:  # the other lines must still be served
            log.exception("an output lane failed, and so did telling it (%d bytes lost)", lost)

    @classmethod
    def for_loop(cls, loop: asyncio.AbstractEventLoop | None = None) -> OutputTurns:
        """The turns of ``loop`` (the running one by default): every session handled by
        one event loop shares them, as they share its time."""
        loop = loop or asyncio.get_running_loop()
        turns = _BY_LOOP.get(loop)
        if turns is None:
            turns = _BY_LOOP[loop] = cls(loop.call_soon)
        return turns


_BY_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, OutputTurns] = (
    weakref.WeakKeyDictionary()
)
