"""The digest chain over a transcript's lines, the seal that signs it, and the chain file.

Chain: ``h0 = SHA-256(header line)``, ``h_i = SHA-256(h_{i-1} || line of event i)``, where
a line is its bytes without the ``\\n``. The final hash ``h_n`` commits to every byte and
to the order of every line.

Seal: a JSON object (``<session>.cast.seal.json``) naming the session, the event count, the
final hash, whether the recording is complete and why it ended, when it was sealed, and the
fingerprint of the signing key, plus an Ed25519 signature over the canonical encoding of all
of these (:meth:`Seal.signed_message`: a fixed prefix, then the fields as JSON with sorted
keys, no spaces, ASCII only). The seal file is :data:`SEAL_SIZE` bytes reserved up front,
holding a *pending* placeholder until the session is sealed, so sealing never needs new
disk space.

Chain file (``<session>.cast.chain``): ``secondline-chain 1 <session> <h0 hex>\\n`` and then
one line per event, ``<h_i hex>\\n`` (65 bytes). It is a *locator*, not evidence: verify
trusts only the ``.cast`` and the signed seal, and uses the chain file to name the first
event whose digest differs from the one recorded while writing.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import re
from dataclasses import asdict, dataclass, replace
from typing import BinaryIO, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from broker.transcript.asciicast import SESSION_ID_PATTERN, check_session_id
from broker.transcript.errors import InvalidValue, SealFormatError
from broker.transcript.keys import public_key_fingerprint

SEAL_FORMAT: Final = "secondline-seal"
SEAL_VERSION: Final = 1
SEAL_SIZE: Final = 4096
MAX_SEAL_FILE: Final = 65536
_SIGNING_PREFIX: Final = b"secondline-transcript-seal-v1\n"

END_ENDED: Final = "ended"
END_AGENT_DISCONNECTED: Final = "agent disconnected"
END_KILLED: Final = "killed"
END_INTERRUPTED: Final = "interrupted"
END_DISK_FULL: Final = "disk full"
END_WRITE_ERROR: Final = "write error"

REASON_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ,.:()'_-]{0,119}")
_HASH_PATTERN: Final = re.compile(r"[0-9a-f]{64}")
_TIME_PATTERN: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
_FINGERPRINT_PATTERN: Final = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")
_SIGNATURE_PATTERN: Final = re.compile(r"[A-Za-z0-9+/]{86}==")

CHAIN_MAGIC: Final = b"secondline-chain 1 "
CHAIN_ENTRY_BYTES: Final = 65
_CHAIN_HEADER: Final = re.compile(rb"secondline-chain 1 (s-[A-Za-z0-9]{22}) ([0-9a-f]{64})")


class DigestChain:
    """The running chain: start it with the header line, add each event line in order."""

    def __init__(self, header_line: bytes) -> None:
        self.h0 = hashlib.sha256(header_line).digest()
        self.head = self.h0
        self.count = 0

    def add(self, event_line: bytes | memoryview) -> bytes:
        """Chain the next event line (without ``\\n``); return its digest ``h_i``."""
        h = hashlib.sha256(self.head)
        h.update(event_line)
        self.head = h.digest()
        self.count += 1
        return self.head

    def add_parts(self, *parts: bytes) -> bytes:
        """Chain the next event line given in parts (joined, without ``\\n``): the same
        digest as :meth:`add` of the joined line, without joining it."""
        h = hashlib.sha256(self.head)
        for part in parts:
            h.update(part)
        self.head = h.digest()
        self.count += 1
        return self.head


def format_utc(now: float) -> str:
    """``now`` (seconds since 1970) as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return dt.datetime.fromtimestamp(now, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_reason(reason: str) -> str:
    """Return ``reason`` if it is a short plain sentence fragment, else refuse."""
    if not isinstance(reason, str) or not REASON_PATTERN.fullmatch(reason):
        raise InvalidValue("an end reason is 1 to 120 plain characters")
    return reason


@dataclass(frozen=True, slots=True, kw_only=True)
class Seal:
    """A signed statement of what a transcript holds; ``signature`` is base64."""

    session_id: str
    event_count: int
    final_hash: str
    complete: bool
    end_reason: str
    sealed_at: str
    key_fingerprint: str
    signature: str

    def body(self) -> dict[str, object]:
        """Every signed field, with the format and version."""
        fields = asdict(self)
        del fields["signature"]
        return {"format": SEAL_FORMAT, "version": SEAL_VERSION, **fields}

    def signed_message(self) -> bytes:
        """The exact bytes the signature covers."""
        canonical = json.dumps(self.body(), sort_keys=True, separators=(",", ":"))
        return _SIGNING_PREFIX + canonical.encode("ascii")

    def encode(self) -> bytes:
        """The seal file's content (without the reservation's padding)."""
        doc = {**self.body(), "signature": self.signature}
        return json.dumps(doc, indent=2).encode("ascii") + b"\n"

    def signature_valid(self, public_key: Ed25519PublicKey) -> bool:
        """Whether ``signature`` is ``public_key``'s signature over :meth:`signed_message`."""
        try:
            public_key.verify(base64.b64decode(self.signature), self.signed_message())
        except (InvalidSignature, binascii.Error, ValueError):
            return False
        return True

    def to_json(self) -> dict[str, object]:
        """The seal as a JSON object (what the seal file holds)."""
        return {**self.body(), "signature": self.signature}


def sign_seal(
    *,
    session_id: str,
    event_count: int,
    final_hash: bytes,
    complete: bool,
    end_reason: str,
    now: float,
    key: Ed25519PrivateKey,
) -> Seal:
    """Build and sign a seal."""
    unsigned = Seal(
        session_id=check_session_id(session_id),
        event_count=event_count,
        final_hash=final_hash.hex(),
        complete=complete,
        end_reason=check_reason(end_reason),
        sealed_at=format_utc(now),
        key_fingerprint=public_key_fingerprint(key.public_key()),
        signature="",
    )
    signature = base64.b64encode(key.sign(unsigned.signed_message())).decode("ascii")
    return replace(unsigned, signature=signature)


def pending_placeholder() -> bytes:
    """The reserved seal file before sealing: a pending marker padded to :data:`SEAL_SIZE`."""
    doc = json.dumps({"format": SEAL_FORMAT, "version": SEAL_VERSION, "pending": True})
    return doc.encode("ascii").ljust(SEAL_SIZE - 1, b" ") + b"\n"


def padded_seal(seal: Seal) -> bytes:
    """The seal's bytes padded with spaces (JSON whitespace) to :data:`SEAL_SIZE`."""
    data = seal.encode()
    if len(data) > SEAL_SIZE:  # cannot happen: every field is length-capped
        raise InvalidValue("the seal does not fit its reserved space")
    return data.ljust(SEAL_SIZE, b" ")


def _field(doc: dict[str, object], name: str, kind: type) -> object:
    value = doc[name]
    if type(value) is not kind:
        raise SealFormatError(f"the seal's {name} is not a {kind.__name__}")
    return value


def parse_seal(data: bytes) -> Seal | None:
    """Parse a seal file strictly; ``None`` for the pending placeholder."""
    if len(data) > MAX_SEAL_FILE:
        raise SealFormatError("the seal file is too large")
    try:
        doc = json.loads(data.decode("utf-8"), parse_constant=_reject)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise SealFormatError("the seal file is not JSON") from None
    if not isinstance(doc, dict):
        raise SealFormatError("the seal file is not a JSON object")
    if doc == {"format": SEAL_FORMAT, "version": SEAL_VERSION, "pending": True}:
        return None
    expected = {"format", "version", "signature", *Seal.__dataclass_fields__}
    if set(doc) != expected:
        raise SealFormatError("the seal file does not have the fields of a seal")
    if doc["format"] != SEAL_FORMAT or doc["version"] != SEAL_VERSION:
        raise SealFormatError("this is not a version 1 Secondline seal")
    checks = (
        ("session_id", SESSION_ID_PATTERN),
        ("final_hash", _HASH_PATTERN),
        ("end_reason", REASON_PATTERN),
        ("sealed_at", _TIME_PATTERN),
        ("key_fingerprint", _FINGERPRINT_PATTERN),
        ("signature", _SIGNATURE_PATTERN),
    )
    for name, pattern in checks:
        value = _field(doc, name, str)
        assert isinstance(value, str)
        if not pattern.fullmatch(value):
            raise SealFormatError(f"the seal's {name} is malformed")
    count = _field(doc, "event_count", int)
    assert isinstance(count, int)
    if not 0 <= count < 2**53:
        raise SealFormatError("the seal's event_count is out of range")
    _field(doc, "complete", bool)
    return Seal(
        session_id=doc["session_id"],
        event_count=count,
        final_hash=doc["final_hash"],
        complete=doc["complete"],
        end_reason=doc["end_reason"],
        sealed_at=doc["sealed_at"],
        key_fingerprint=doc["key_fingerprint"],
        signature=doc["signature"],
    )


def _reject(name: str) -> object:
    raise ValueError(f"{name} is not allowed")


def chain_header_line(session_id: str, h0: bytes) -> bytes:
    """The chain file's first line, with its ``\\n``."""
    return CHAIN_MAGIC + f"{check_session_id(session_id)} {h0.hex()}\n".encode("ascii")


def parse_chain_header(line: bytes) -> tuple[str, bytes] | None:
    """``(session_id, h0)`` from a chain file's first line (without ``\\n``), or ``None``."""
    m = _CHAIN_HEADER.fullmatch(line)
    if m is None:
        return None
    return m.group(1).decode("ascii"), bytes.fromhex(m.group(2).decode("ascii"))


def chain_entry(digest: bytes) -> bytes:
    """One event's line in the chain file."""
    return digest.hex().encode("ascii") + b"\n"


def parse_chain_entry(line: bytes) -> bytes | None:
    """The digest in one chain file line (without ``\\n``), or ``None`` if malformed."""
    if len(line) != CHAIN_ENTRY_BYTES - 1 or not _HASH_PATTERN.fullmatch(line.decode("latin-1")):
        return None
    return bytes.fromhex(line.decode("ascii"))


class ChainFileReader:
    """Read a chain file's digests in order; it ends at the first malformed entry."""

    def __init__(self, fh: BinaryIO) -> None:
        first = fh.readline(len(CHAIN_MAGIC) + 24 + 1 + 64 + 1)
        parsed = parse_chain_header(first[:-1]) if first.endswith(b"\n") else None
        self.session_id: str | None = parsed[0] if parsed else None
        self.h0: bytes | None = parsed[1] if parsed else None
        self.header_size = len(first) if parsed else 0
        self.entries = 0
        self._fh = fh
        self._done = parsed is None

    def next_digest(self) -> bytes | None:
        """The next event's recorded digest, or ``None`` once the file has no more."""
        if self._done:
            return None
        raw = self._fh.read(CHAIN_ENTRY_BYTES)
        digest = parse_chain_entry(raw[:-1]) if raw.endswith(b"\n") else None
        if digest is None:
            self._done = True
            return None
        self.entries += 1
        return digest
