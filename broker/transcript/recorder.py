"""Record a live session to ``<root>/<session>.cast``, keep its chain, seal it at the end.

The session hub drives it synchronously, and decides when to flush::

    forward, marks = parser.feed(chunk)         # a MarkParser per session
    recorder.output(forward, now, marks)        # before or after forwarding, never skipped
    recorder.input(keystrokes, now, echoed=e)   # staff input, once the agent reported it
    recorder.answer_back(replies, now, echoed=e)  # the staff terminal's replies, likewise
    recorder.flush()                            # at least once a second
    recorder.seal(True, "ended", now)

Files (see docs/transcripts.md): the ``.cast`` itself, its chain file ``.cast.chain`` (one
digest per event, to name the first bad event) and the seal ``.cast.seal.json``, reserved
at the start as a :data:`SEAL_SIZE`-byte placeholder so that sealing needs no new space.

Output is coalesced: the chunks of agent output that arrive within :data:`OUTPUT_WINDOW`
of session time (up to :data:`OUTPUT_BLOCK` bytes) become one ``o`` event, closed early by
any other event and by every flush, so a bulk transfer costs one encoding, one digest step
and three write buffers per 32 KiB, not per SSH packet, and replay keeps the timing a person
can see. In format 2 (the header says which) a block is written as text when it is valid
UTF-8 and cheap to escape, else as its bytes in base64 (:func:`output_event_parts`), so
a GB of zeros is 1.33 GB to digest and write, not 6. Writes are batched: events go to
memory and :meth:`TranscriptRecorder.flush` digests them and writes them with ``writev``
(no joined copy) in one go per file (an automatic flush also happens past
``flush_bytes``). The hub flushes in two steps: :meth:`TranscriptRecorder.prepare_flush`
encodes and digests on the event loop, the job it returns writes on a writer thread
(:mod:`broker.transcript.disk_writer`), as does the seal, never on the event loop. On a
failed write (ENOSPC, EDQUOT, EIO...) the recorder cuts the ``.cast`` back to its last
complete line, keeps the chain file no longer than the ``.cast``, and raises
:class:`RecorderDiskFull` (or :class:`RecorderWriteError`); from then on it records nothing
more, and :meth:`TranscriptRecorder.seal` still seals what is on disk as cut short.

:func:`recover` seals the transcript of a session interrupted by a broker crash.

Not thread-safe beyond this: :meth:`flush`, the job :meth:`prepare_flush` returns and
:meth:`seal` may run in a worker thread while the event loop keeps calling
``output``/``input`` (a lock guards the buffer); call ``seal`` once.
"""

from __future__ import annotations

import codecs
import collections
import contextlib
import errno
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.transcript.asciicast import (
    FORMAT_DENSE,
    MAX_EVENT_CHARS,
    MAX_OUTPUT_BYTES,
    MAX_TIME,
    CastHeader,
    clean_label,
    encode_header_line,
    event_line_parts,
    resize_data,
)
from broker.transcript.chain import (
    CHAIN_ENTRY_BYTES,
    END_DISK_FULL,
    END_WRITE_ERROR,
    DigestChain,
    Seal,
    chain_entry,
    chain_header_line,
    check_reason,
    pending_placeholder,
    sign_seal,
)
from broker.transcript.errors import (
    RecorderClosed,
    RecorderDiskFull,
    RecorderError,
    RecorderWriteError,
)
from broker.transcript.file_writes import write_fully, writev_fully
from broker.transcript.marks import Command, CommandTracker, Mark
from broker.transcript.output import output_event_parts
from broker.transcript.paths import TranscriptPaths, transcript_paths
from broker.transcript.seal_file import sync_directory, write_seal

logger = logging.getLogger(__name__)

INPUT_HIDDEN_LABEL: Final = "input hidden (echo off)"
FLUSH_BYTES: Final = 1 << 20
# Output coalescing: one o event holds the output of at most this much session time (what
# a replay shows as one frame) and at most this many bytes: an SSH packet's data, so bulk
# output costs what it did per packet and a disk that fills cuts no bigger a last event.
OUTPUT_WINDOW: Final = 0.05
OUTPUT_BLOCK: Final = 32 << 10
_LINE_END: Final = b"]\n"  # the end of an event line (text data), line end included
_CREATE_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_DISK_FULL_ERRNOS: Final = frozenset({errno.ENOSPC, errno.EDQUOT})
# An event line as written: (head, body, end), the line their concatenation, "\n" in end.
_Event = tuple[bytes, bytes, bytes]


def _failure_for(exc: OSError, what: str) -> RecorderError:
    if exc.errno in _DISK_FULL_ERRNOS:
        return RecorderDiskFull(f"the disk is full: {what} was cut short and must be sealed")
    return RecorderWriteError(f"writing {what} failed ({exc.strerror}); it must be sealed")


def _split(text: str) -> list[str]:
    if len(text) <= MAX_EVENT_CHARS:
        return [text] if text else []
    return [text[i : i + MAX_EVENT_CHARS] for i in range(0, len(text), MAX_EVENT_CHARS)]


class TranscriptRecorder:
    """Write one session's transcript as it runs; seal it at the end."""

    def __init__(
        self,
        root: Path,
        header: CastHeader,
        signing_key: Ed25519PrivateKey,
        *,
        started_at: float,
        flush_bytes: int = FLUSH_BYTES,
    ) -> None:
        self.paths: TranscriptPaths = transcript_paths(root, header.session.session_id)
        self.session_id = header.session.session_id
        self._key = signing_key
        self._started_at = started_at
        self._flush_bytes = flush_bytes
        header_line = encode_header_line(header)
        self._chain = DigestChain(header_line)
        self._lock = threading.Lock()  # the buffer and the recording state
        self._io_lock = threading.Lock()  # one writer at a time, in order
        # Events not written yet, as (head, body, end): the line is their concatenation,
        # its "\n" at the end of ``end``. They are chained when written, under the I/O lock
        # and in order.
        self._pending: list[_Event] = []
        self._pending_bytes = 0
        # Events taken by a flush, chained, not written yet: (events, digests, bytes) per
        # flush, oldest first; the writer thread writes them under the I/O lock.
        self._taken: collections.deque[tuple[list[_Event], list[bytes], int]] = collections.deque()
        self._writing = 0  # the bytes in _taken and in the write under way
        self._sealing = False
        # The open o event: raw output chunks, their size, and the time of the first.
        self._run: list[bytes] = []
        self._run_bytes = 0
        self._run_start = 0.0
        # Format 2 writes output as its bytes (output_event_parts); format 1 as decoded text.
        self._dense = header.transcript_format >= FORMAT_DENSE
        self._durable_count = 0
        self._durable_head = self._chain.h0
        self._failure: RecorderError | None = None
        self._seal: Seal | None = None
        self._last_time = 0.0
        self._hidden_run = False
        self._out_decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._in_decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._reply_decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._tracker = CommandTracker(started_at)
        self._commands: tuple[Command, ...] | None = None
        self._fds: list[int] = []
        self._created: list[Path] = []
        try:
            self._seal_fd = self._create(self.paths.seal, pending_placeholder(), "the seal")
            self._cast_fd = self._create(self.paths.cast, header_line + b"\n", "the transcript")
            chain_head = chain_header_line(self.session_id, self._chain.h0)
            self._chain_fd = self._create(self.paths.chain, chain_head, "the chain file")
        except BaseException:
            self._close_fds()
            for path in self._created:  # a session that cannot be recorded leaves nothing
                path.unlink()
            raise
        self._cast_size = len(header_line) + 1
        self._chain_size = len(chain_head)
        self._chain_ok = True

    def _create(self, path: Path, content: bytes, what: str) -> int:
        try:
            fd = os.open(path, _CREATE_FLAGS, 0o600)
        except FileExistsError:
            raise RecorderError(f"{what} of session {self.session_id} exists already") from None
        except OSError as exc:
            raise _failure_for(exc, what) from None
        self._fds.append(fd)
        self._created.append(path)
        _, error = write_fully(fd, content)
        if error is not None:
            raise _failure_for(error, what)
        return fd

    def _close_fds(self) -> None:
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:  # pragma: no cover - closing a regular file we opened
                logger.warning("closing a transcript file of %s failed", self.session_id)
        self._fds = []

    @property
    def buffered(self) -> int:
        """Bytes taken and not written yet, a flush under way included (what the hub's
        flushes and flow control keep bounded)."""
        return self._pending_bytes + self._run_bytes + self._writing

    # -- recording ------------------------------------------------------------------------

    def output(self, data: bytes, now: float, marks: Sequence[Mark]) -> None:
        """Record agent output: the ``forward`` bytes and the marks the parser returned."""
        with self._lock:
            self._check_recording()
            if self._run and not 0.0 <= now - self._run_start < OUTPUT_WINDOW:
                self._close_output()
            if data:
                if self._run and self._run_bytes + len(data) > OUTPUT_BLOCK:
                    self._close_output()  # its text then fits one event
                if not self._run:
                    self._run_start = now
                self._run.append(bytes(data))  # the caller's buffer may be reused
                self._run_bytes += len(data)
            self._tracker.observe(data, marks, now)
            full = self._pending_bytes + self._run_bytes >= self._flush_bytes
        if full:
            self.flush()

    def input(self, data: bytes, now: float, *, echoed: bool) -> None:
        """Record staff keystrokes the agent reported as written to its terminal;
        ``echoed=False`` (the terminal did not echo them): one marker per run instead."""
        self._record("i", self._in_decoder, data, now, echoed)

    def answer_back(self, data: bytes, now: float, *, echoed: bool) -> None:
        """Record the staff terminal's replies to queries (cursor position, device
        attributes...) as ``a`` events: sent to the shell, never typed by anyone. Hidden
        like typed input when the terminal did not echo them."""
        self._record("a", self._reply_decoder, data, now, echoed)

    def _record(
        self, code: str, decoder: codecs.IncrementalDecoder, data: bytes, now: float, echoed: bool
    ) -> None:
        with self._lock:
            self._check_recording()
            if not echoed:
                # A character split across the secret's edge must not leak its first byte
                # into the next recorded event.
                decoder.reset()
                if not self._hidden_run:
                    self._hidden_run = True
                    self._append("m", INPUT_HIDDEN_LABEL, now)
                return
            self._hidden_run = False
            for piece in _split(decoder.decode(data)):
                self._append(code, piece, now)
            full = self._pending_bytes >= self._flush_bytes
        if full:
            self.flush()

    def resize(self, cols: int, rows: int, now: float) -> None:
        """Record a terminal resize."""
        data = resize_data(cols, rows)
        with self._lock:
            self._check_recording()
            self._append("r", data, now)

    def marker(self, label: str, now: float) -> None:
        """Record a marker (consent, participants...); the label is cleaned and capped."""
        with self._lock:
            self._check_recording()
            self._append("m", clean_label(label), now)

    def commands(self) -> tuple[Command, ...]:
        """The commands finished so far (after :meth:`seal`: all of them)."""
        if self._commands is not None:
            return self._commands
        return self._tracker.commands

    def _check_recording(self) -> None:
        if self._seal is not None:
            raise RecorderClosed(f"the transcript of {self.session_id} is sealed already")
        if self._failure is not None:
            raise self._failure

    def _time(self, now: float) -> float:
        t = min(max(now - self._started_at, self._last_time), MAX_TIME - 1)
        self._last_time = round(t, 6)
        return self._last_time

    def _close_output(self) -> None:
        """Turn the open output run into o events (several if its text exceeds a cap)."""
        run = self._run
        data = run[0] if len(run) == 1 else b"".join(run)
        self._run, self._run_bytes = [], 0
        if self._dense:
            time = self._time(self._run_start)
            for start in range(0, len(data), MAX_OUTPUT_BYTES):
                head, body, end = output_event_parts(time, data[start : start + MAX_OUTPUT_BYTES])
                self._pending.append((head, body, end + b"\n"))
                self._pending_bytes += len(head) + len(body) + len(end) + 1
            return
        for piece in _split(self._out_decoder.decode(data)):
            self._append("o", piece, self._run_start)

    def _append(self, code: str, data: str, now: float) -> None:
        if self._run and code != "o":  # output so far comes first, as it arrived
            self._close_output()
        head, body = event_line_parts(self._time(now), code, data)
        self._pending.append((head, body, _LINE_END))
        self._pending_bytes += len(head) + len(body) + len(_LINE_END)

    # -- writing --------------------------------------------------------------------------

    def flush(self) -> None:
        """Write what is buffered; raises :class:`RecorderDiskFull` when the disk is full."""
        self.prepare_flush()()

    def prepare_flush(self) -> Callable[[], None]:
        """Encode and digest what is buffered, here, and return the rest of the flush: the
        writes, for a writer thread. Every event of the flush is hashed in one go on the
        caller's thread, so a writer thread takes the interpreter lock once per flush, not
        around each event's SHA-256 (hashlib releases it past 2 KiB). The job writes every
        batch taken so far, in the order taken (a batch an earlier job wrote is not written
        twice); it raises :class:`RecorderDiskFull` when the disk is full."""
        with self._lock:
            self._check_recording()
            if self._sealing:
                raise RecorderClosed(f"the transcript of {self.session_id} is being sealed")
            if self._run:
                self._close_output()
            self._take_pending()
        return self._write_taken

    def _take_pending(self) -> None:
        """Chain the pending events and queue them for writing (under the buffer lock, so
        that the chain and the writes follow the order in which events are taken)."""
        if not self._pending:
            return
        events, self._pending = self._pending, []
        size, self._pending_bytes = self._pending_bytes, 0
        add = self._chain.add_parts
        digests = [add(head, body, end[:-1]) for head, body, end in events]
        self._taken.append((events, digests, size))
        self._writing += size

    def _write_taken(self) -> None:
        with self._io_lock:
            self._write_queued()

    def _write_queued(self) -> None:
        """Write the batches taken so far, oldest first (the caller holds the I/O lock)."""
        while True:
            with self._lock:
                if self._failure is not None:
                    raise self._failure
                if not self._taken:
                    return
                events, digests, size = self._taken.popleft()
            try:
                self._write(events, digests)
            finally:
                with self._lock:
                    self._writing -= size

    def _write(self, events: list[_Event], digests: list[bytes]) -> None:
        buffers: list[bytes] = []
        for event in events:
            buffers += event
        written, exc = writev_fully(self._cast_fd, buffers)
        done = len(events)
        if exc is not None:
            done, good = 0, 0
            for head, body, end in events:
                size = len(head) + len(body) + len(end)
                if good + size > written:
                    break
                good += size
                done += 1
            written = good
        self._cast_size += written
        if done:
            self._durable_count += done
            self._durable_head = digests[done - 1]
        if exc is not None:
            self._cut_cast()
            self._fail(_failure_for(exc, "the transcript"))
        self._write_chain(digests[:done])
        if self._failure is not None:
            raise self._failure

    def _cut_cast(self) -> None:
        """Drop a torn last line: the file ends at the last event the chain accounts for."""
        try:
            os.ftruncate(self._cast_fd, self._cast_size)
            os.lseek(self._cast_fd, self._cast_size, os.SEEK_SET)
        except OSError as exc:  # pragma: no cover - shrinking a local file does not fail
            logger.error("cutting the transcript of %s failed: %s", self.session_id, exc)

    def _write_chain(self, digests: list[bytes]) -> None:
        if not self._chain_ok or not digests:
            return
        data = b"".join(chain_entry(digest) for digest in digests)
        written, exc = write_fully(self._chain_fd, data)
        if exc is None:
            self._chain_size += written
            return
        # The chain file only locates bad events: a short one is harmless, a torn one is not.
        self._chain_ok = False
        self._chain_size += written - written % CHAIN_ENTRY_BYTES
        try:
            os.ftruncate(self._chain_fd, self._chain_size)
        except OSError:  # pragma: no cover - shrinking a local file does not fail
            logger.error("cutting the chain file of %s failed", self.session_id)
        self._fail(_failure_for(exc, "the chain file"))

    def _fail(self, failure: RecorderError) -> None:
        with self._lock:
            if self._failure is None:
                self._failure = failure
                self._pending, self._pending_bytes = [], 0
                self._run, self._run_bytes = [], 0
                self._writing -= sum(size for _, _, size in self._taken)
                self._taken.clear()
                logger.error("recording %s stopped: %s", self.session_id, failure)

    # -- sealing --------------------------------------------------------------------------

    def seal(self, complete: bool, reason: str, now: float) -> Seal:
        """Write what is left, sign, and close. After a write failure the seal always says
        ``complete: false`` with the failure as its reason ("disk full", "write error")."""
        check_reason(reason)
        with self._io_lock:
            with self._lock:
                if self._seal is not None:
                    raise RecorderClosed(f"the transcript of {self.session_id} is sealed already")
                self._sealing = True
                if self._failure is None:
                    if self._run:
                        self._close_output()
                    tail = self._out_decoder.decode(b"", final=True)
                    if tail:
                        self._append("o", tail, now)
                    if typed := self._in_decoder.decode(b"", final=True):
                        self._append("i", typed, now)
                    if reply := self._reply_decoder.decode(b"", final=True):
                        self._append("a", reply, now)
                    self._take_pending()
            with contextlib.suppress(RecorderError):  # kept in self._failure: the seal says
                self._write_queued()
            if self._failure is not None:
                complete = False
                disk_full = isinstance(self._failure, RecorderDiskFull)
                reason = END_DISK_FULL if disk_full else END_WRITE_ERROR
                self._cut_cast()
            for fd in (self._cast_fd, self._chain_fd):
                try:
                    os.fsync(fd)
                except OSError as exc:
                    logger.error("syncing %s failed: %s", self.session_id, exc.strerror)
            seal = sign_seal(
                session_id=self.session_id,
                event_count=self._durable_count,
                final_hash=self._durable_head,
                complete=complete,
                end_reason=reason,
                now=now,
                key=self._key,
            )
            try:
                write_seal(self._seal_fd, seal)
            except RecorderWriteError as exc:
                self._fail(exc)  # nothing more can be written: recovery seals it later
                raise
            finally:
                self._close_fds()
            sync_directory(self.paths.cast.parent)
            with self._lock:
                self._seal = seal
                self._commands = self._tracker.finish(now)
            return seal
