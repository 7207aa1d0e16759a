"""The audit hash chain, pure: each record carries the SHA-256 of the one before it, and
the newest record's hash is signed. ``verify_chain`` names the first bad record."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

GENESIS: Final = "0" * 64


@dataclass(frozen=True, kw_only=True)
class AuditRecord:
    seq: int
    at: dt.datetime
    actor: str
    action: str
    target: str
    outcome: str
    source: str
    details: Mapping[str, object]
    prev_hash: str
    hash: str = ""


def record_digest(record: AuditRecord) -> str:
    """Hash of every field but ``hash`` in a canonical JSON form."""
    body = {
        "seq": record.seq,
        "at": record.at.astimezone(dt.UTC).isoformat(timespec="microseconds"),
        "actor": record.actor,
        "action": record.action,
        "target": record.target,
        "outcome": record.outcome,
        "source": record.source,
        "details": record.details,
        "prev": record.prev_hash,
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def head_message(seq: int, digest: str) -> bytes:
    return f"secondline-audit-head\n{seq}\n{digest}".encode()


def sign_head(key: ed25519.Ed25519PrivateKey, seq: int, digest: str) -> str:
    return base64.b64encode(key.sign(head_message(seq, digest))).decode()


def head_signature_ok(key: ed25519.Ed25519PublicKey, seq: int, digest: str, sig: str) -> bool:
    try:
        key.verify(base64.b64decode(sig, validate=True), head_message(seq, digest))
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class SignedHead:
    seq: int
    hash: str
    signature: str


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    records: int
    first_bad_seq: int | None
    message: str


def verify_chain(
    records: Iterable[AuditRecord],
    public_key: ed25519.Ed25519PublicKey,
    heads: Iterable[SignedHead],
) -> VerifyReport:
    """Check every link, then that the log reaches the newest signed head.

    ``heads`` are the signed heads kept in places apart from the table (the head row and
    the head file); a log shorter than any of them lost its tail.
    """
    prev = GENESIS
    expected_seq = 1
    count = 0
    last_hash = GENESIS
    for rec in records:
        if rec.seq != expected_seq:
            return VerifyReport(
                False,
                count,
                expected_seq,
                f"record {expected_seq} is missing or out of order (found {rec.seq} in its place)",
            )
        if rec.prev_hash != prev:
            return VerifyReport(
                False, count, rec.seq, f"record {rec.seq} does not link to record {rec.seq - 1}"
            )
        if record_digest(rec) != rec.hash:
            return VerifyReport(False, count, rec.seq, f"record {rec.seq} was changed")
        prev = rec.hash
        last_hash = rec.hash
        expected_seq += 1
        count += 1
    for head in heads:
        if not head_signature_ok(public_key, head.seq, head.hash, head.signature):
            return VerifyReport(False, count, None, "the signed head of the log is not valid")
        if head.seq > count:
            return VerifyReport(
                False,
                count,
                count + 1,
                f"the log ends at record {count} but record {head.seq} was signed: "
                f"records {count + 1}..{head.seq} were deleted",
            )
        if head.seq == count and head.hash != last_hash:
            return VerifyReport(False, count, count, f"record {count} differs from the signed head")
    return VerifyReport(True, count, None, f"audit log intact: {count} records verified")
