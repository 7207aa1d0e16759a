"""Writes to a socket gathered over one event-loop iteration and sent with one ``send``.

asyncssh hands its transport every SSH packet on its own, and asyncio's socket transport
sends each write at once: relaying a session's output to a staff member's OpenSSH client
cost two ``send`` calls per 32 KiB of output (asyncssh puts an empty IGNORE packet before
every packet it encrypts), each one a trip through the kernel's TCP stack that wakes the
client for 64 bytes. A profile of the broker relaying a gigabyte put a quarter of its
event loop in those socket writes.

:class:`CoalescedTransport` stands between such a protocol and its transport: what is
written during one iteration of the event loop is kept, and the iteration after it starts
by writing it all to the real transport at once (:class:`WriteCoalescer`, one per loop,
one ``call_soon`` for every transport that has something waiting). Never on a timer: a
keystroke's echo leaves at the start of the next iteration, and when several connections
have something to send, the ones with least waiting go first, so an echo does not queue
behind other connections' bulk.

What the wrapped transport promises, as asyncio's own does:

- bytes leave in the order they were written, and nothing is lost: ``close()`` and
  ``write_eof()`` send what is waiting first; ``abort()`` hands it to the real transport
  first too, which sends what the socket takes at once, as a write before the abort
  would have (and then drops the rest, as abort does);
- flow control: ``get_write_buffer_size()`` counts what waits here too; the real
  transport's ``pause_writing``/``resume_writing`` reach the protocol as before (it is
  the real transport's protocol), one iteration later at most, since nothing waits here
  longer than that;
- a transport whose connection is lost drops what waits, as asyncio's does.

Only asyncio's public transport interface is used, on both sides.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)


class WriteCoalescer:
    """The transports of one event loop with writes waiting, and the one callback that
    sends them at the start of the next iteration."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiting: list[CoalescedTransport] = []
        self._scheduled = False

    def waiting(self, transport: CoalescedTransport) -> None:
        """``transport`` has its first write of this iteration."""
        self._waiting.append(transport)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def order(self) -> list[CoalescedTransport]:
        """The transports with writes waiting, in the order :meth:`flush` sends them:
        least waiting first (an echo before a stream's bulk), then first come."""
        return sorted(self._waiting, key=CoalescedTransport.get_pending_size)

    def flush(self) -> None:
        """Send what every transport has waiting."""
        self._scheduled = False
        due = self.order() if len(self._waiting) > 1 else self._waiting
        self._waiting = []
        for transport in due:
            try:
                transport.flush()
            except Exception:  # a callback boundary: the other transports still send
                log.exception("a coalesced write failed")

    @classmethod
    def for_loop(cls, loop: asyncio.AbstractEventLoop | None = None) -> WriteCoalescer:
        """The coalescer of ``loop`` (the running one by default)."""
        loop = loop or asyncio.get_running_loop()
        coalescer = _BY_LOOP.get(loop)
        if coalescer is None:
            coalescer = _BY_LOOP[loop] = cls(loop)
        return coalescer


_BY_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, WriteCoalescer] = (
    weakref.WeakKeyDictionary()
)


class CoalescedTransport(asyncio.Transport):
    """A transport whose writes of one loop iteration reach ``inner`` as one write."""

    def __init__(self, inner: asyncio.Transport, coalescer: WriteCoalescer | None = None) -> None:
        super().__init__()
        self._inner = inner
        self._coalescer = coalescer or WriteCoalescer.for_loop()
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._closing = False
        self._eof = False
        #: Writes handed to the real transport (each one ``send`` when the socket takes it).
        self.sends = 0
        #: Writes asked of this transport.
        self.writes = 0

    # -- asyncio.WriteTransport -------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Keep ``data`` until the next iteration (after close or ``write_eof``: straight
        through, so the real transport says what it says to a late write)."""
        if self._closing or self._eof:
            self._inner.write(data)
            return
        if not data:
            return
        # A caller may reuse a bytearray or memoryview once write returns.
        chunk = data if isinstance(data, bytes) else bytes(data)
        self.writes += 1
        if not self._pending:
            self._coalescer.waiting(self)
        self._pending.append(chunk)
        self._pending_size += len(chunk)

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        """Keep every chunk (they leave with the rest of this iteration's writes)."""
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        """Hand what is waiting to the real transport now, as one write."""
        pending = self._pending
        if not pending:
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        self._pending = []
        self._pending_size = 0
        if self._inner.is_closing():
            return  # the connection was lost: asyncio's transport drops writes too
        self.sends += 1
        self._inner.write(data)

    def get_pending_size(self) -> int:
        """Bytes waiting here for the next iteration."""
        return self._pending_size

    def get_write_buffer_size(self) -> int:
        """Bytes waiting here and in the real transport's buffer."""
        return self._pending_size + self._inner.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        """The real transport's (low, high) water marks."""
        return self._inner.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """Set the real transport's water marks."""
        self._inner.set_write_buffer_limits(high, low)

    def can_write_eof(self) -> bool:
        """Whether the real transport can half-close."""
        return self._inner.can_write_eof()

    def write_eof(self) -> None:
        """Send what is waiting, then half-close."""
        self.flush()
        self._eof = True
        self._inner.write_eof()

    def abort(self) -> None:
        """Hand what is waiting to the real transport (which sends what the socket takes
        at once), then abort it."""
        self.flush()
        self._closing = True
        self._inner.abort()

    # -- asyncio.ReadTransport --------------------------------------------------------

    def pause_reading(self) -> None:
        self._inner.pause_reading()

    def resume_reading(self) -> None:
        self._inner.resume_reading()

    def is_reading(self) -> bool:
        return self._inner.is_reading()

    # -- asyncio.BaseTransport --------------------------------------------------------

    def close(self) -> None:
        """Send what is waiting, then close the real transport (it sends its buffer)."""
        self.flush()
        self._closing = True
        self._inner.close()

    def is_closing(self) -> bool:
        return self._closing or self._inner.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._inner.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._inner.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._inner.get_protocol()
