"""One TLS read buffer per thread instead of one per connection (and a lighter write
backlog).

asyncio's TLS layer (``asyncio.sslproto.SSLProtocol``, Python 3.11+) gives every connection
its own 256 KiB ``bytearray`` to receive encrypted bytes into. An idle agent holds a TLS
connection for days, so that buffer alone would be five times the broker's budget per
idle agent (PERFORMANCE.md: ≤ 50 KB). The buffer is only ever used between the event
loop's ``get_buffer()`` and ``buffer_updated()`` calls, which run back to back without
yielding (``recv_into`` then an immediate copy into the TLS object's memory BIO), so one
buffer per thread serves every connection of that thread's event loop, and reads stay
256 KiB large for throughput. Large reads and writes are handed to OpenSSL in pieces
(:data:`BIO_CHUNK`): its memory BIOs keep the size of the largest write they ever took.

:func:`install` swaps in :class:`SharedBufferSSLProtocol` for every TLS connection of the
process (servers and clients alike) and is idempotent. It does nothing, and says so, on
an asyncio whose TLS layer is not the one this was written against.

There is no supported way to give asyncio's TLS layer another buffer: the protocol class
is private and the event loop builds it itself (``sslproto.SSLProtocol(...)``, looked up
at every connection, which is why swapping the module attribute reaches every one). What
this relies on, that the base class reads sockets only through ``get_buffer`` and copies
out of ``_ssl_buffer_view`` at once in ``buffer_updated``, is checked against the
installed asyncio by tests/unit/test_library_guards.py, which fails when it changes.
"""

from __future__ import annotations

import asyncio.sslproto as sslproto
import logging
import threading
from collections.abc import Sequence
from typing import Final

log = logging.getLogger(__name__)

#: Socket reads land here: as large as asyncio's own per-connection buffer.
SHARED_READ_BYTES: Final = 256 * 1024
#: Decrypted bytes are read in chunks of this size; a TLS record holds at most 16 KiB.
#: (The base class also allocates this much per connection, and we drop it at once.)
PLAINTEXT_CHUNK: Final = 16 * 1024 + 256
#: The most bytes handed to a connection's memory BIOs at once, received or to send. A BIO
#: never gives back what it grew to (OpenSSL keeps 4/3 of the most it held), so one
#: 100 KB read (an agent's facts arrive so) stayed with the tunnel for its life, 133 KB;
#: in pieces each BIO stays under 22 KB. A piece costs one more call into OpenSSL (and,
#: sending, one more write to the socket), no copy.
BIO_CHUNK: Final = 16 * 1024

_local = threading.local()


def _shared_view() -> memoryview:
    view: memoryview | None = getattr(_local, "view", None)
    if view is None:
        view = memoryview(bytearray(SHARED_READ_BYTES))
        _local.view = view
    return view


class SharedBufferSSLProtocol(sslproto.SSLProtocol):
    """asyncio's SSLProtocol, receiving into the thread's shared buffer."""

    max_size = PLAINTEXT_CHUNK

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        view = _shared_view()
        self._ssl_buffer = view.obj
        self._ssl_buffer_view = view
        # The backlog of writes made before the handshake ended (or while OpenSSL wants
        # to read) is empty nearly always: an empty deque costs 760 bytes for its first
        # block, an empty list 56. asyncio uses nothing of it a list lacks (append,
        # [0], del [0], clear, truth), which tests/unit/test_library_guards.py checks;
        # deleting the head of a list is O(n), and the backlog holds a few items at most.
        self._write_backlog = []  # type: ignore[assignment]

    def get_buffer(self, n: int) -> memoryview:
        # buffer_updated() copies out of _ssl_buffer_view before the loop runs anything else.
        view = _shared_view()
        self._ssl_buffer_view = view
        return view

    def _write_appdata(self, list_of_data: Sequence[bytes | bytearray | memoryview]) -> None:
        # A large write goes to OpenSSL a piece at a time, each one's records sent before
        # the next is encrypted: the outgoing memory BIO, which never shrinks either, would
        # otherwise keep 4/3 of a 256 KiB WebSocket message for the tunnel's life.
        if len(list_of_data) == 1 and len(list_of_data[0]) <= BIO_CHUNK:
            # The common case (a keystroke, an echo) as asyncio does it.
            super()._write_appdata(list_of_data)  # type: ignore[arg-type]
            return
        for data in list_of_data:
            if len(data) <= BIO_CHUNK:
                super()._write_appdata([data])  # type: ignore[list-item]
                continue
            # Views of bytes only: the pieces of a bytearray the caller may still change
            # (or resize, which a view would forbid) would wait in the backlog as views.
            whole = memoryview(data if isinstance(data, bytes) else bytes(data))
            for start in range(0, len(whole), BIO_CHUNK):
                super()._write_appdata([whole[start : start + BIO_CHUNK]])  # type: ignore[list-item]

    def buffer_updated(self, nbytes: int) -> None:
        if nbytes <= BIO_CHUNK:
            super().buffer_updated(nbytes)
            return
        # A large read goes to OpenSSL a piece at a time, each decrypted and handed on
        # before the next is copied in: nothing in between reads a socket (only the event
        # loop does, between callbacks), so the shared buffer still holds the rest.
        view = self._ssl_buffer_view
        for start in range(0, nbytes, BIO_CHUNK):
            piece = view[start : min(nbytes, start + BIO_CHUNK)]
            self._ssl_buffer_view = piece
            super().buffer_updated(len(piece))


def _compatible() -> bool:
    base = sslproto.SSLProtocol
    return all(hasattr(base, name) for name in ("get_buffer", "buffer_updated", "max_size"))


def install() -> bool:
    """Make every new TLS connection of this process use the shared buffer."""
    if sslproto.SSLProtocol is SharedBufferSSLProtocol:
        return True
    if not _compatible() or sslproto.SSLProtocol is not SharedBufferSSLProtocol.__base__:
        log.warning("asyncio's TLS layer is not the expected one; keeping its own buffers")
        return False
    sslproto.SSLProtocol = SharedBufferSSLProtocol  # type: ignore[misc]
    return True
