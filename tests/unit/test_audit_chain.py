"""The audit hash chain: intact logs verify; changed, deleted and reordered records are named."""

from __future__ import annotations

import dataclasses
import datetime as dt

from cryptography.hazmat.primitives.asymmetric import ed25519

from broker.audit.chain import (
    GENESIS,
    AuditRecord,
    SignedHead,
    record_digest,
    sign_head,
    verify_chain,
)

KEY = ed25519.Ed25519PrivateKey.generate()
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def make_chain(n: int) -> list[AuditRecord]:
    out: list[AuditRecord] = []
    prev = GENESIS
    for i in range(1, n + 1):
        rec = AuditRecord(
            seq=i,
            at=T0 + dt.timedelta(seconds=i),
            actor="admin",
            action="user.add",
            target=f"u{i}",
            outcome="ok",
            source="127.0.0.1",
            details={"i": i},
            prev_hash=prev,
        )
        rec = dataclasses.replace(rec, hash=record_digest(rec))
        out.append(rec)
        prev = rec.hash
    return out


def head_of(chain: list[AuditRecord]) -> SignedHead:
    last = chain[-1]
    return SignedHead(last.seq, last.hash, sign_head(KEY, last.seq, last.hash))


def test_intact_chain_verifies() -> None:
    """An untouched log with its signed head verifies."""
    chain = make_chain(5)
    report = verify_chain(chain, KEY.public_key(), [head_of(chain)])
    assert report.ok
    assert report.records == 5
    assert report.first_bad_seq is None


def test_changed_record_is_named() -> None:
    """Changing one field of record 3 names record 3."""
    chain = make_chain(5)
    chain[2] = dataclasses.replace(chain[2], actor="mallory")
    report = verify_chain(chain, KEY.public_key(), [head_of(make_chain(5))])
    assert not report.ok
    assert report.first_bad_seq == 3
    assert "changed" in report.message


def test_deleted_record_is_named() -> None:
    """Deleting record 2 names record 2 as missing."""
    chain = make_chain(5)
    del chain[1]
    report = verify_chain(chain, KEY.public_key(), [])
    assert not report.ok
    assert report.first_bad_seq == 2


def test_reordered_records_are_named() -> None:
    """Swapping records 2 and 3 names the first position out of order."""
    chain = make_chain(5)
    chain[1], chain[2] = chain[2], chain[1]
    report = verify_chain(chain, KEY.public_key(), [])
    assert not report.ok
    assert report.first_bad_seq == 2


def test_relinked_record_is_named() -> None:
    """A record rehashed after a change still breaks the link of the next one."""
    chain = make_chain(4)
    forged = dataclasses.replace(chain[1], actor="mallory")
    chain[1] = dataclasses.replace(forged, hash=record_digest(forged))
    report = verify_chain(chain, KEY.public_key(), [])
    assert not report.ok
    assert report.first_bad_seq == 3
    assert "link" in report.message


def test_cut_tail_is_reported() -> None:
    """A log shorter than its signed head lost its tail, and says which records."""
    chain = make_chain(6)
    report = verify_chain(chain[:4], KEY.public_key(), [head_of(chain)])
    assert not report.ok
    assert report.first_bad_seq == 5
    assert "5..6 were deleted" in report.message


def test_forged_head_is_refused() -> None:
    """A head signed by another key does not verify."""
    chain = make_chain(3)
    other = ed25519.Ed25519PrivateKey.generate()
    head = SignedHead(3, chain[-1].hash, sign_head(other, 3, chain[-1].hash))
    assert not verify_chain(chain, KEY.public_key(), [head]).ok
    garbage = SignedHead(3, chain[-1].hash, "not base64!")
    assert not verify_chain(chain, KEY.public_key(), [garbage]).ok


def test_head_mismatch_at_end() -> None:
    """A last record that differs from the signed head of the same number is refused."""
    chain = make_chain(3)
    head = SignedHead(3, "f" * 64, sign_head(KEY, 3, "f" * 64))
    report = verify_chain(chain, KEY.public_key(), [head])
    assert not report.ok
    assert report.first_bad_seq == 3


def test_empty_log_verifies() -> None:
    """A log with no records and no head is intact."""
    assert verify_chain([], KEY.public_key(), []).ok
