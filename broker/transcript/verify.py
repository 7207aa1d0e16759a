"""Offline verification of a transcript: the ``.cast``, its seal and its chain file.

:func:`verify_transcript` reads the files and returns a :class:`VerifyResult`; it raises
only :class:`TranscriptNotFound` (no ``.cast`` file) and never on what the files hold.
Status:

- ``valid``: the seal is signed by the given key and the ``.cast`` is exactly what it
  sealed, and the recording was complete;
- ``valid_cut_short``: the same, but the seal says the recording stopped early (disk full,
  interrupted by a broker crash);
- ``incomplete``: no seal yet (still recording, or a crash not yet recovered); never valid;
- ``invalid``: anything else: a malformed or changed line, a truncated tail, reordered,
  deleted or added lines, a bad signature, a seal made with another key or for another
  session.

``first_bad_event`` (1-based; ``first_bad_line`` is the event's line, the header being line
1 with no event number) names the first event that differs from what was written, when it
can be told: from a line that does not parse, from the chain file's per-event digests, or
from the count in the seal. The verdict itself rests only on the ``.cast`` and the signed
seal; the chain file only locates.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, Literal, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from broker.transcript.asciicast import (
    MAX_LINE_BYTES,
    CastReader,
    RawLine,
    encode_event_line,
    encode_header_line,
    header_from_json,
    read_lines,
)
from broker.transcript.chain import (
    MAX_SEAL_FILE,
    ChainFileReader,
    DigestChain,
    Seal,
    parse_seal,
)
from broker.transcript.errors import (
    CastFormatError,
    InvalidValue,
    SealFormatError,
    TranscriptNotFound,
)
from broker.transcript.kept_files import check_kept
from broker.transcript.keys import public_key_fingerprint
from broker.transcript.paths import sidecar_paths

Status = Literal["valid", "valid_cut_short", "incomplete", "invalid"]
BUNDLE_FORMAT: Final = "secondline-transcript-bundle"
BUNDLE_VERSION: Final = 1
_BUNDLE_KEYS: Final = frozenset({"format", "version", "header", "seal", "chain", "events"})


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyResult:
    """What verification found, with one sentence for a person."""

    status: Status
    message: str
    first_bad_event: int | None = None
    first_bad_line: int | None = None
    event_count: int = 0
    session_id: str | None = None
    seal: Seal | None = None

    @property
    def ok(self) -> bool:
        """Whether the transcript is authentic (complete or cut short)."""
        return self.status in ("valid", "valid_cut_short")

    def to_json(self) -> dict[str, object]:
        """JSON-able form for ``--json`` output and the API."""
        return {
            "status": self.status,
            "message": self.message,
            "first_bad_event": self.first_bad_event,
            "first_bad_line": self.first_bad_line,
            "event_count": self.event_count,
            "session_id": self.session_id,
            "digest": self.seal.final_hash if self.seal else None,
            "complete": self.seal.complete if self.seal else None,
            "end_reason": self.seal.end_reason if self.seal else None,
            "sealed_at": self.seal.sealed_at if self.seal else None,
            "key_fingerprint": self.seal.key_fingerprint if self.seal else None,
        }


class DigestSource(Protocol):
    """Recorded digests to compare against: a chain file, or a bundle's chain list."""

    session_id: str | None
    h0: bytes | None

    def next_digest(self) -> bytes | None: ...


@dataclass(slots=True)
class _Spot:
    line: int
    event: int | None
    reason: str


@dataclass(slots=True)
class _Walk:
    """What reading the ``.cast`` once found."""

    session_id: str | None = None
    events: int = 0
    sealed_hash: bytes | None = None  # the chain head after the sealed number of events
    problem: _Spot | None = None  # the first line that does not parse (or is cut off)
    torn: bool = False
    altered: _Spot | None = None  # the first line whose digest differs from the recorded one
    compared: int = 0  # events whose digest was compared with a recorded one

    @property
    def first(self) -> _Spot | None:
        spots = [s for s in (self.problem, self.altered) if s is not None]
        return min(spots, key=lambda s: s.line) if spots else None


def _walk(lines: Iterable[RawLine], recorded: DigestSource | None, seal: Seal | None) -> _Walk:
    count = seal.event_count if seal else None
    walk = _Walk()
    reader = CastReader()
    chain: DigestChain | None = None
    for raw in lines:
        line_no = 1 if chain is None else chain.count + 2
        event = None if chain is None else chain.count + 1
        if raw.too_long:
            walk.problem = _Spot(line_no, event, f"the line is longer than {MAX_LINE_BYTES} bytes")
            break
        if not raw.terminated:
            walk.problem = _Spot(line_no, event, "the line is cut off")
            walk.torn = True
            break
        if chain is None:
            chain = DigestChain(raw.data)
            digest, expected = chain.h0, recorded.h0 if recorded else None
        else:
            digest = chain.add(raw.data)
            expected = recorded.next_digest() if recorded else None
        if expected is not None and event is not None:
            walk.compared += 1
        if expected is not None and expected != digest and walk.altered is None:
            walk.altered = _Spot(line_no, event, "it differs from the digest recorded with it")
        if count is not None and chain.count == count:
            walk.sealed_hash = chain.head
        try:
            reader.feed_line(raw.data)
        except CastFormatError as exc:
            walk.problem = _Spot(exc.line, exc.event, exc.reason)
            break
        if event is None:
            assert reader.header is not None
            walk.session_id = reader.header.session.session_id
            # The chain file belongs to the session the seal names (else the header's); one
            # of another session is of no use for locating.
            owner = seal.session_id if seal else walk.session_id
            if recorded is not None and recorded.session_id not in (None, owner):
                recorded, walk.altered = None, None
        walk.events = reader.events
    if chain is None:
        walk.problem = _Spot(1, None, "the file is empty")
    return walk


def _where(spot: _Spot) -> str:
    return "the header (line 1)" if spot.event is None else f"event {spot.event} (line {spot.line})"


def _judge(
    walk: _Walk,
    seal: Seal | None,
    seal_error: str | None,
    public_key: Ed25519PublicKey,
) -> VerifyResult:
    first = walk.first

    def result(status: Status, message: str, spot: _Spot | None = None) -> VerifyResult:
        return VerifyResult(
            status=status,
            message=message,
            first_bad_event=spot.event if spot else None,
            first_bad_line=spot.line if spot else None,
            event_count=walk.events,
            session_id=walk.session_id,
            seal=seal,
        )

    def altered(intro: str) -> VerifyResult:
        if first is None:
            return result("invalid", intro + ".")
        detail = "was altered" if first is walk.altered else f"is malformed: {first.reason}"
        return result(
            "invalid", f"{intro}; the first bad record is {_where(first)}: it {detail}.", first
        )

    if seal_error is not None:
        return altered(f"The seal file is not a valid seal ({seal_error})")
    if seal is None:
        if (first is not None and not walk.torn) or walk.altered is not None:
            return altered("The transcript is not sealed and was changed after it was written")
        if walk.torn:
            return result(
                "incomplete",
                "The transcript is not sealed and its last line is cut off, as after a broker "
                "crash: run recovery to seal it.",
            )
        return result(
            "incomplete",
            f"The transcript ({walk.events} events) is not sealed: the session is still being "
            "recorded, or the broker stopped before sealing it (run recovery).",
        )
    given = public_key_fingerprint(public_key)
    if seal.key_fingerprint != given:
        return altered(f"The seal was made with another key ({seal.key_fingerprint}), not {given}")
    if not seal.signature_valid(public_key):
        return altered("The seal's signature does not verify: the seal was altered or forged")
    if walk.session_id is not None and seal.session_id != walk.session_id:
        return altered(f"The seal is for session {seal.session_id}, not {walk.session_id}")
    if first is not None and (walk.problem is not None or walk.sealed_hash != _hex(seal)):
        if walk.torn and first is walk.problem:
            return result(
                "invalid",
                f"The transcript was cut: {_where(first)} is incomplete and later events are "
                f"missing (the seal covers {seal.event_count} events).",
                first,
            )
        return altered("The transcript does not match its seal")
    if walk.events < seal.event_count:
        if walk.compared < walk.events:  # no record of the events present: cut or removed?
            return result(
                "invalid",
                f"The transcript holds {walk.events} events but its seal covers "
                f"{seal.event_count}: events were removed, and without its chain file the "
                "first one cannot be named.",
            )
        spot = _Spot(walk.events + 2, walk.events + 1, "missing")
        return result(
            "invalid",
            f"The transcript ends after event {walk.events} but its seal covers "
            f"{seal.event_count} events: event {walk.events + 1} onwards is missing.",
            spot,
        )
    if walk.sealed_hash != _hex(seal):
        return result(
            "invalid",
            "The transcript does not match its seal, and no chain file shows where: it is "
            "missing or was rewritten as well.",
        )
    if walk.events > seal.event_count:
        extra = seal.event_count + 1
        return result(
            "invalid",
            f"Events from {extra} on were added after the transcript was sealed "
            f"({seal.event_count} events).",
            _Spot(extra + 1, extra, "added"),
        )
    if seal.complete:
        return result(
            "valid",
            f"The transcript is authentic and complete: {walk.events} events, "
            f"ended ({seal.end_reason}), sealed {seal.sealed_at} by {seal.key_fingerprint}.",
        )
    return result(
        "valid_cut_short",
        f"The transcript is authentic but was cut short ({seal.end_reason}): it holds the "
        f"first {walk.events} events, sealed {seal.sealed_at} by {seal.key_fingerprint}.",
    )


def _hex(seal: Seal) -> bytes:
    return bytes.fromhex(seal.final_hash)


def _read_seal(data: bytes | None) -> tuple[Seal | None, str | None]:
    if data is None:
        return None, None
    try:
        return parse_seal(data), None
    except SealFormatError as exc:
        return None, str(exc)


def _verify(
    lines: Iterable[RawLine],
    public_key: Ed25519PublicKey,
    seal_bytes: bytes | None,
    recorded: DigestSource | None,
) -> VerifyResult:
    seal, seal_error = _read_seal(seal_bytes)
    walk = _walk(lines, recorded, seal)
    return _judge(walk, seal, seal_error, public_key)


def verify_transcript_bytes(
    cast: bytes,
    public_key: Ed25519PublicKey,
    *,
    seal: bytes | None = None,
    chain: bytes | None = None,
) -> VerifyResult:
    """Verify a transcript held in memory (the file contents as bytes)."""
    recorded = ChainFileReader(io.BytesIO(chain)) if chain is not None else None
    return _verify(read_lines(io.BytesIO(cast)), public_key, seal, recorded)


def _read_optional(path: Path, limit: int | None = None) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read(limit) if limit is not None else fh.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def verify_transcript(
    cast_path: Path,
    public_key: Ed25519PublicKey,
    seal_path: Path | None = None,
    chain_path: Path | None = None,
) -> VerifyResult:
    """Verify ``FILE.cast`` with ``FILE.cast.seal.json`` and ``FILE.cast.chain`` beside it."""
    default_chain, default_seal = sidecar_paths(Path(cast_path))
    seal_bytes = _read_optional(Path(seal_path or default_seal), MAX_SEAL_FILE + 1)
    try:
        cast = open(cast_path, "rb")  # noqa: SIM115 - closed below, with the chain file
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise TranscriptNotFound(f"there is no transcript file at {cast_path}") from None
    chain_file: BinaryIO | None = None
    try:
        try:
            chain_file = open(chain_path or default_chain, "rb")  # noqa: SIM115
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            chain_file = None
        recorded = ChainFileReader(chain_file) if chain_file is not None else None
        result = _verify(read_lines(cast), public_key, seal_bytes, recorded)
    finally:
        cast.close()
        if chain_file is not None:
            chain_file.close()
    return _with_kept_files(Path(cast_path), result)


def _with_kept_files(cast_path: Path, result: VerifyResult) -> VerifyResult:
    """A sealed transcript whose kept file content (``FILE.cast.files/``) does not match
    the signed markers is invalid, named at the marker's event."""
    if not result.ok:
        return result
    bad = check_kept(cast_path)
    if bad is None:
        return result
    event, sentence = bad
    return dataclasses.replace(
        result,
        status="invalid",
        message=f"The transcript's events match its seal, but {sentence}.",
        first_bad_event=event,
        first_bad_line=event + 1,
    )


# -- export bundles ---------------------------------------------------------------------


class _ListDigests:
    """A bundle's chain list as a digest source; malformed entries end it."""

    def __init__(self, chain: list[object], session_id: str | None) -> None:
        self.session_id = session_id
        self._items: Iterator[object] = iter(chain)
        self.h0 = self.next_digest()

    def next_digest(self) -> bytes | None:
        item = next(self._items, None)
        if isinstance(item, str) and len(item) == 64:
            try:
                return bytes.fromhex(item)
            except ValueError:
                pass
        self._items = iter(())
        return None


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(", ", ": ")).encode("utf-8", "replace")


def _bundle_header_line(obj: object) -> bytes:
    try:
        return encode_header_line(header_from_json(obj))
    except InvalidValue:
        return _dumps(obj)  # the strict parser names what is wrong with it


def _bundle_event_line(obj: object) -> bytes:
    if isinstance(obj, list) and len(obj) == 3:
        time, code, data = obj
        if type(time) in (int, float) and isinstance(code, str) and isinstance(data, str):
            try:
                # Only a time that six decimals represent exactly stands for the signed line.
                if float(f"{time:.6f}") == time:
                    return encode_event_line(float(time), code, data)
            except (InvalidValue, OverflowError, ValueError):
                pass
    return _dumps(obj)


def _bundle_lines(header: object, events: list[object]) -> Iterator[RawLine]:
    yield RawLine(_bundle_header_line(header), True)
    for event in events:
        line = _bundle_event_line(event)
        yield RawLine(line[: MAX_LINE_BYTES + 1], True, len(line) > MAX_LINE_BYTES)


def verify_bundle_bytes(data: bytes, public_key: Ed25519PublicKey) -> VerifyResult:
    """Verify an export bundle (one JSON document) held in memory."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        doc = None
    if (
        not isinstance(doc, dict)
        or set(doc) != _BUNDLE_KEYS
        or doc["format"] != BUNDLE_FORMAT
        or doc["version"] != BUNDLE_VERSION
        or not isinstance(doc["events"], list)
        or not isinstance(doc["chain"], list)
    ):
        return VerifyResult(status="invalid", message="This is not a transcript bundle we read.")
    header, seal = doc["header"], doc["seal"]
    meta = header.get("secondline") if isinstance(header, dict) else None
    session_id = meta.get("session_id") if isinstance(meta, dict) else None
    recorded = _ListDigests(doc["chain"], session_id if isinstance(session_id, str) else None)
    seal_bytes = None if seal is None else _dumps(seal)
    return _verify(_bundle_lines(header, doc["events"]), public_key, seal_bytes, recorded)


def verify_bundle(path: Path, public_key: Ed25519PublicKey) -> VerifyResult:
    """Verify an export bundle file (``--format json``)."""
    try:
        data = Path(path).read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise TranscriptNotFound(f"there is no bundle file at {path}") from None
    return verify_bundle_bytes(data, public_key)


def verify_path(path: Path, public_key: Ed25519PublicKey) -> VerifyResult:
    """Verify a ``.cast`` (with its seal beside it) or a bundle (a ``.json`` file, or one
    starting as :func:`~broker.transcript.export.export_bundle` writes it)."""
    try:
        with open(path, "rb") as fh:
            start = fh.read(64)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise TranscriptNotFound(f"there is no transcript file at {path}") from None
    if Path(path).suffix == ".json" or start.startswith(b'{"format": "' + BUNDLE_FORMAT.encode()):
        return verify_bundle(path, public_key)
    return verify_transcript(path, public_key)
