"""Recovery after a broker crash: seal what an interrupted session's recorder wrote.

On restart the broker calls :func:`find_unsealed` on the transcript root (or takes the
interrupted sessions from its database) and :func:`recover` on each: the transcript is
checked line by line against the chain file written with it, a torn last line (the write
the crash cut) is dropped, the chain file is completed, and the seal is written as
``complete: false``, reason "interrupted". A complete line that does not parse, or a digest
that does not match the chain file, means the file changed after it was written: recovery
refuses (:class:`RecoveryError`) and leaves it unsealed ("incomplete" to ``verify``) for a
person to look at, rather than sign over an alteration.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.transcript.asciicast import CastReader, read_lines
from broker.transcript.chain import (
    CHAIN_ENTRY_BYTES,
    END_INTERRUPTED,
    ChainFileReader,
    DigestChain,
    Seal,
    chain_entry,
    chain_header_line,
    sign_seal,
)
from broker.transcript.errors import (
    CastFormatError,
    InvalidSessionId,
    RecoveryError,
    TranscriptNotFound,
)
from broker.transcript.paths import session_id_of, transcript_paths
from broker.transcript.seal_file import read_seal_file, sync_directory, write_seal

logger = logging.getLogger(__name__)


def _open(path: Path, flags: int) -> BinaryIO | None:
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileNotFoundError:
        return None
    return os.fdopen(fd, "r+b" if flags & os.O_RDWR else "rb")


@dataclass(slots=True)
class _Scan:
    """What a read-only pass over an interrupted transcript found."""

    chain: DigestChain
    good_size: int  # bytes up to the end of the last complete line
    recorded: int  # events the chain file already holds, all matching
    chain_header_ok: bool
    chain_entries_at: int  # offset of the first entry in the chain file


def _scan(cast: BinaryIO, chain_file: BinaryIO | None, session_id: str) -> _Scan:
    reader = CastReader()
    recorded = ChainFileReader(chain_file) if chain_file is not None else None
    if recorded is not None and recorded.session_id is None:
        recorded = None  # torn first line: the chain file is rewritten
    chain: DigestChain | None = None
    good_size = 0
    matched = 0
    exhausted = recorded is None
    for raw in read_lines(cast):
        if not raw.terminated and not raw.too_long:
            break  # torn by the crash: dropped
        try:
            reader.feed_line(raw.data)
        except CastFormatError as exc:
            raise RecoveryError(f"the transcript cannot be sealed: {exc}") from None
        if chain is None:
            chain = DigestChain(raw.data)
            assert reader.header is not None
            if reader.header.session.session_id != session_id:
                raise RecoveryError("the transcript header names another session")
            if recorded is not None and (
                recorded.session_id != session_id or recorded.h0 != chain.h0
            ):
                raise RecoveryError("the transcript header does not match its chain file")
        else:
            digest = chain.add(raw.data)
            expected = None if exhausted or recorded is None else recorded.next_digest()
            if expected is None:
                exhausted = True
            elif expected != digest:
                raise RecoveryError(f"event {chain.count} does not match its chain file")
            else:
                matched += 1
        good_size += raw.size
    if chain is None:
        raise RecoveryError("the transcript has no complete header: nothing to seal")
    if recorded is not None and not exhausted and recorded.next_digest() is not None:
        raise RecoveryError("the chain file lists events the transcript lacks")
    return _Scan(
        chain=chain,
        good_size=good_size,
        recorded=matched,
        chain_header_ok=recorded is not None,
        chain_entries_at=recorded.header_size if recorded is not None else 0,
    )


def _complete_chain(cast: BinaryIO, path: Path, session_id: str, scan: _Scan) -> None:
    """Write the chain file entries the crash kept out (all of them if it was lost)."""
    chain_file = _open(path, os.O_RDWR | os.O_CREAT)
    assert chain_file is not None
    with chain_file:
        if scan.chain_header_ok:
            chain_file.seek(scan.chain_entries_at + scan.recorded * CHAIN_ENTRY_BYTES)
        else:
            chain_file.seek(0)
            chain_file.write(chain_header_line(session_id, scan.chain.h0))
        chain_file.truncate()
        cast.seek(0)
        chain: DigestChain | None = None
        for raw in read_lines(cast):
            if chain is None:
                chain = DigestChain(raw.data)
                continue
            if chain.count == scan.chain.count:
                break
            digest = chain.add(raw.data)
            if chain.count > scan.recorded:
                chain_file.write(chain_entry(digest))
        chain_file.flush()
        os.fsync(chain_file.fileno())


def recover(cast_path: Path, key: Ed25519PrivateKey, now: float) -> Seal:
    """Seal the transcript of a session a broker crash interrupted.

    Seals what was fully written (a torn last line is cut off) as ``complete: false``,
    reason "interrupted", after checking every event against the chain file written with
    it, and completes the chain file. A transcript that is sealed already is left as it is
    and its seal returned. Raises :class:`RecoveryError`, leaving every file untouched, when
    the header is missing, a complete line is malformed, or the file does not match its
    chain file.
    """
    session_id = session_id_of(cast_path)
    paths = transcript_paths(Path(cast_path).parent, session_id)
    existing = read_seal_file(paths.seal)
    if existing is not None:
        return existing
    cast = _open(paths.cast, os.O_RDWR)
    if cast is None:
        raise TranscriptNotFound(f"there is no transcript for session {session_id}")
    with cast:
        chain_file = _open(paths.chain, os.O_RDONLY)
        try:
            scan = _scan(cast, chain_file, session_id)
        finally:
            if chain_file is not None:
                chain_file.close()
        _complete_chain(cast, paths.chain, session_id, scan)
        cast.truncate(scan.good_size)
        cast.flush()
        os.fsync(cast.fileno())
    seal = sign_seal(
        session_id=session_id,
        event_count=scan.chain.count,
        final_hash=scan.chain.head,
        complete=False,
        end_reason=END_INTERRUPTED,
        now=now,
        key=key,
    )
    fd = os.open(paths.seal, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        write_seal(fd, seal)
    finally:
        os.close(fd)
    sync_directory(paths.cast.parent)
    logger.info("recovered the interrupted transcript of %s", session_id)
    return seal


def find_unsealed(root: Path) -> list[Path]:
    """Every ``.cast`` under ``root`` without a valid-looking seal: what recovery is for."""
    found = []
    for path in sorted(Path(root).glob("s-*.cast")):
        try:
            paths = transcript_paths(root, session_id_of(path))
        except InvalidSessionId:
            continue
        if read_seal_file(paths.seal) is None:
            found.append(paths.cast)
    return found
