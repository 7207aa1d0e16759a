"""Where transcripts are kept for reading: the data dir's files on one node, the database
when it is PostgreSQL, so that every node of a cluster reads every transcript.

The recorder is unchanged either way: it writes the session's files in this node's data
dir (``DATA_DIR/transcripts/``), with its guarantees (hash chain, never a dropped byte,
disk-full handling). On PostgreSQL those files are the node's spool, and
:class:`DatabaseStore` copies them into the database while the session runs (about once
a second: :meth:`TranscriptStore.ship`) and once more when it is sealed, before the
session's end is written. Only whole lines are copied, the same bytes as in the files,
so a transcript put back together from the database verifies like the files, and the
database never holds a torn line.

Readers (playback, downloads, the note's attachments, recovery) ask :meth:`opened` for a
directory holding the session's three files: the data dir when this node has the sealed
transcript or records it now, else a private scratch directory filled from the database
for the time of the read.

Why whenever the database is PostgreSQL, not only in a cluster: a single node on
PostgreSQL can become a cluster without moving transcripts, the PostgreSQL half of the
test suite runs the store every cluster uses, and a transcript outlives the node's disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, Protocol

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.db.models_transcripts import TranscriptChunk, TranscriptKeptFile, TranscriptSeal
from broker.transcript.kept_files import kept_dir
from broker.transcript.paths import TranscriptPaths, transcript_paths
from broker.transcript.seal_file import read_seal_file, read_seal_text

Part = Literal["cast", "chain"]
PARTS: Final[tuple[Part, ...]] = ("cast", "chain")
#: One copy takes at most this much of each file; a session that writes faster is
#: caught up by the next rounds (and at its end, by :meth:`DatabaseStore.ship` looping).
CHUNK_MAX: Final = 8 << 20


class TranscriptStore(Protocol):
    """Where a node finds a session's transcript files, and copies them to be shared."""

    #: True when other nodes read what this one records (the database store).
    shared: bool

    async def ship(self, session_id: str, root: Path | None = None) -> bool:
        """Copy what the files under ``root`` (the data dir's) gained since the last copy;
        True once the sealed transcript is stored whole. Raises the database's errors."""
        ...

    def opened(self, session_id: str) -> contextlib.AbstractAsyncContextManager[Path]:
        """A directory holding the session's files, for the time of the ``async with``."""
        ...

    def recovering(self, session_id: str) -> contextlib.AbstractAsyncContextManager[Path]:
        """A writable directory with the session's files, to seal them after a crash."""
        ...


class FileStore:
    """One node: the transcripts are the data dir's files, read where they are."""

    shared = False

    def __init__(self, root: Path) -> None:
        self.root = root

    async def ship(self, session_id: str, root: Path | None = None) -> bool:
        return True

    @contextlib.asynccontextmanager
    async def opened(self, session_id: str) -> AsyncIterator[Path]:
        yield self.root

    def recovering(self, session_id: str) -> contextlib.AbstractAsyncContextManager[Path]:
        return self.opened(session_id)


@dataclass(frozen=True, slots=True)
class _Delta:
    """What one copy sends: each part's new whole lines from where the database ends."""

    chunks: tuple[tuple[Part, int, bytes], ...]
    kept: tuple[tuple[int, bytes], ...]  # file content an SFTP session kept, complete files
    seal: str | None  # the seal file's text, when it is sealed and every byte is sent
    done: bool  # nothing more to send now (the rest is a line still being written)


def _read_whole_lines(path: Path, offset: int) -> tuple[bytes, bool]:
    """Bytes of ``path`` from ``offset`` up to its last line end (about CHUNK_MAX at most,
    more for one longer line), and whether no whole line is left after them."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return b"", True
    with os.fdopen(fd, "rb") as fh:
        fh.seek(offset)
        data = fh.read(CHUNK_MAX)
        while data and b"\n" not in data:
            more = fh.read(CHUNK_MAX)  # one line longer than a chunk: copied whole
            if not more:
                break
            data += more
        rest = fh.read(1)
    # A line not yet ended is the recorder's write in progress (or a torn one it will cut
    # back, or recovery will drop): never copied, so the database holds only what the
    # recorder keeps.
    whole = data[: data.rfind(b"\n") + 1]
    return whole, not rest


def sealed_here(root: Path, session_id: str) -> bool:
    """Whether ``root`` holds the session's sealed files (its seal, not the placeholder)."""
    return read_seal_file(transcript_paths(root, session_id).seal) is not None


def _kept_numbers(paths: TranscriptPaths) -> list[int]:
    """The complete kept files beside the ``.cast`` (``N``; a ``N.part`` still grows)."""
    try:
        names = os.listdir(kept_dir(paths.cast))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(int(n) for n in names if n.isascii() and n.isdigit() and len(n) <= 9)


def _read_kept(paths: TranscriptPaths, number: int) -> bytes:
    fd = os.open(kept_dir(paths.cast) / str(number), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


def read_delta(paths: TranscriptPaths, sizes: dict[Part, int], stored: set[int]) -> _Delta:
    """What the files hold beyond ``sizes`` and the kept files not ``stored`` yet
    (blocking: run in a thread)."""
    # The seal first: once it is read, the other files are final, so a seal is sent only
    # with (or after) every byte it covers.
    seal = read_seal_text(paths.seal)
    chunks: list[tuple[Part, int, bytes]] = []
    done = True
    files: tuple[tuple[Part, Path], ...] = (("cast", paths.cast), ("chain", paths.chain))
    for part, path in files:
        data, reached_end = _read_whole_lines(path, sizes[part])
        if data:
            chunks.append((part, sizes[part], data))
        done = done and reached_end
    kept = tuple((n, _read_kept(paths, n)) for n in _kept_numbers(paths) if n not in stored)
    return _Delta(tuple(chunks), kept, seal if done else None, done)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


class DatabaseStore:
    """PostgreSQL: every node reads every transcript (see the module's docstring)."""

    shared = True

    def __init__(
        self,
        root: Path,
        scratch: Path,
        db: async_sessionmaker[AsyncSession],
        node: str,
    ) -> None:
        self.root = root
        self.scratch = scratch
        self._db = db
        self.node = node
        self._locks: dict[str, asyncio.Lock] = {}

    # -- copying ---------------------------------------------------------------------------

    async def ship(self, session_id: str, root: Path | None = None) -> bool:
        paths = transcript_paths(root or self.root, session_id)
        lock = self._locks.setdefault(session_id, asyncio.Lock())
        async with lock:
            while True:
                async with self._db() as db, db.begin():
                    if await self._sealed(db, session_id):
                        self._locks.pop(session_id, None)
                        return True
                    sizes = await self._sizes(db, session_id)
                    stored = await self._kept_stored(db, session_id)
                    delta = await asyncio.to_thread(read_delta, paths, sizes, stored)
                    for number, data in delta.kept:
                        db.add(TranscriptKeptFile(session_id=session_id, number=number, data=data))
                    for part, offset, data in delta.chunks:
                        db.add(
                            TranscriptChunk(
                                session_id=session_id, part=part, offset=offset, data=data
                            )
                        )
                    if delta.seal is not None:
                        db.add(
                            TranscriptSeal(
                                session_id=session_id,
                                seal=delta.seal,
                                node=self.node,
                                stored_at=dt.datetime.now(dt.UTC),
                            )
                        )
                if delta.seal is not None:
                    self._locks.pop(session_id, None)
                    return True
                if delta.done:
                    return False

    async def _sealed(self, db: AsyncSession, session_id: str) -> bool:
        stmt = select(TranscriptSeal.session_id).where(TranscriptSeal.session_id == session_id)
        return (await db.execute(stmt)).first() is not None

    async def _kept_stored(self, db: AsyncSession, session_id: str) -> set[int]:
        stmt = select(TranscriptKeptFile.number).where(TranscriptKeptFile.session_id == session_id)
        return set((await db.execute(stmt)).scalars().all())

    async def _sizes(self, db: AsyncSession, session_id: str) -> dict[Part, int]:
        # Read back each time rather than remembered: a copy whose commit failed (or another
        # node that took the session over) leaves the database the only truth.
        stmt = (
            select(TranscriptChunk.part, func.sum(func.length(TranscriptChunk.data)))
            .where(TranscriptChunk.session_id == session_id)
            .group_by(TranscriptChunk.part)
        )
        sizes: dict[Part, int] = {"cast": 0, "chain": 0}
        for part, size in (await db.execute(stmt)).all():
            if part in sizes:
                sizes[part] = int(size or 0)
        return sizes

    # -- reading ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def opened(self, session_id: str) -> AsyncIterator[Path]:
        local = transcript_paths(self.root, session_id)
        if sealed_here(self.root, session_id):
            yield self.root  # recorded and sealed here: the same bytes as the database's
            return
        async with self._db() as db:
            stored = await self._sealed(db, session_id)
        if not stored and local.cast.exists():
            yield self.root  # recording here now: the files are ahead of the database
            return
        async with self._materialized(session_id) as root:
            yield root

    @contextlib.asynccontextmanager
    async def recovering(self, session_id: str) -> AsyncIterator[Path]:
        # This node's spool holds at least what the database does (it was copied from it);
        # a session of another node exists only in the database.
        if transcript_paths(self.root, session_id).cast.exists():
            yield self.root
            return
        async with self._materialized(session_id) as root:
            yield root

    @contextlib.asynccontextmanager
    async def _materialized(self, session_id: str) -> AsyncIterator[Path]:
        """The database's copy as files in a private scratch directory, removed after."""
        paths = transcript_paths(self.root, session_id)  # validates the id
        async with self._db() as db:
            rows = (
                await db.execute(
                    select(TranscriptChunk.part, TranscriptChunk.data)
                    .where(TranscriptChunk.session_id == session_id)
                    .order_by(TranscriptChunk.part, TranscriptChunk.offset)
                )
            ).all()
            seal = (
                await db.execute(
                    select(TranscriptSeal.seal).where(TranscriptSeal.session_id == session_id)
                )
            ).scalar_one_or_none()
            kept = (
                await db.execute(
                    select(TranscriptKeptFile.number, TranscriptKeptFile.data).where(
                        TranscriptKeptFile.session_id == session_id
                    )
                )
            ).all()
        if not rows:
            yield self.root  # nowhere: the reader says the transcript is not found
            return
        self.scratch.mkdir(mode=0o700, parents=True, exist_ok=True)
        where = Path(tempfile.mkdtemp(prefix="read-", dir=self.scratch))
        try:
            files = transcript_paths(where, paths.session_id)
            parts: dict[str, list[bytes]] = {"cast": [], "chain": []}
            for part, data in rows:
                parts.setdefault(part, []).append(data)

            def write() -> None:
                _write_private(files.cast, b"".join(parts["cast"]))
                if parts["chain"]:
                    _write_private(files.chain, b"".join(parts["chain"]))
                if seal is not None:
                    _write_private(files.seal, seal.encode("utf-8"))
                if kept:
                    directory = kept_dir(files.cast)
                    directory.mkdir(mode=0o700)
                    for number, data in kept:
                        _write_private(directory / str(number), data)

            await asyncio.to_thread(write)
            yield where
        finally:
            await asyncio.to_thread(shutil.rmtree, where, True)


def transcript_store(
    root: Path, scratch: Path, db_url: str, db: async_sessionmaker[AsyncSession], node: str
) -> TranscriptStore:
    """The store of a node: the database's on PostgreSQL, the data dir's files otherwise."""
    if db_url.startswith("postgresql"):
        return DatabaseStore(root, scratch, db, node)
    return FileStore(root)
