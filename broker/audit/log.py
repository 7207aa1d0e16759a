"""Appending to and reading the audit log in the database, with a signed head kept both in
the database and in a file of the data dir (a cut tail shows against either)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.audit.chain import (
    GENESIS,
    AuditRecord,
    SignedHead,
    VerifyReport,
    record_digest,
    sign_head,
    verify_chain,
)
from broker.db.models_audit import AuditEvent, AuditHead

log = logging.getLogger(__name__)
_MAX_FIELD = 200


# C0 and C1 controls and DEL, written as \xNN: PostgreSQL's text cannot hold NUL at all (a
# refused sign-in named "a\0b" must be audited, not turn into a 503), and a name with ESC
# must not repaint the terminal of whoever reads the log.
_CONTROLS: Final = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}


def _clip(text: str, limit: int = _MAX_FIELD) -> str:
    text = text.translate(_CONTROLS)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def audit_target(text: str, limit: int = 64) -> str:
    """An outside-supplied name as an audit target: escaped to printable ASCII and clipped,
    so a refused request's path cannot put control characters into the log."""
    return _clip(ascii(text)[1:-1], limit)


def _to_record(row: AuditEvent) -> AuditRecord:
    return AuditRecord(
        seq=row.seq,
        at=row.at,
        actor=row.actor,
        action=row.action,
        target=row.target,
        outcome=row.outcome,
        source=row.source,
        details=row.details,
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


class AuditLog:
    """The one writer of audit events for this broker process."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        key: ed25519.Ed25519PrivateKey,
        head_file: Path,
    ) -> None:
        self._sessions = sessions
        self._key = key
        self._head_file = head_file
        self._lock = asyncio.Lock()
        # Called with (action, outcome, details) after each event is stored: the node's
        # metrics count refusals here, where every refusal is written anyway.
        self.observers: list[Callable[[str, str, Mapping[str, object]], None]] = []

    async def record(
        self,
        *,
        actor: str,
        action: str,
        target: str = "",
        outcome: str = "ok",
        source: str = "",
        details: Mapping[str, object] | None = None,
        now: dt.datetime | None = None,
    ) -> int:
        """Append one event and return its number."""
        at = now or dt.datetime.now(dt.UTC)
        clean = json.loads(json.dumps(dict(details or {}), default=str))
        async with self._lock, self._sessions() as db, db.begin():
            head = await self._locked_head(db)
            seq = (head.seq if head else 0) + 1
            record = AuditRecord(
                seq=seq,
                at=at,
                actor=_clip(actor, 100),
                action=_clip(action, 64),
                target=_clip(target),
                outcome=_clip(outcome, 16),
                source=_clip(source, 64),
                details=clean,
                prev_hash=head.hash if head else GENESIS,
            )
            digest = record_digest(record)
            db.add(
                AuditEvent(
                    seq=seq,
                    at=record.at,
                    actor=record.actor,
                    action=record.action,
                    target=record.target,
                    outcome=record.outcome,
                    source=record.source,
                    details=clean,
                    prev_hash=record.prev_hash,
                    hash=digest,
                )
            )
            signature = sign_head(self._key, seq, digest)
            if head is None:
                db.add(AuditHead(id=1, seq=seq, hash=digest, signature=signature))
            else:
                head.seq, head.hash, head.signature = seq, digest, signature
        self._write_head_file(SignedHead(seq, digest, signature))
        for observer in self.observers:
            observer(record.action, record.outcome, clean)
        return seq

    async def _locked_head(self, db: AsyncSession) -> AuditHead | None:
        stmt = select(AuditHead).where(AuditHead.id == 1)
        if (await db.connection()).dialect.name == "postgresql":
            # Several broker nodes append to one chain: the head row is the lock.
            stmt = stmt.with_for_update()
        return (await db.execute(stmt)).scalar_one_or_none()

    def _write_head_file(self, head: SignedHead) -> None:
        tmp = self._head_file.with_suffix(".tmp")
        data = json.dumps({"seq": head.seq, "hash": head.hash, "signature": head.signature})
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(data)
        os.replace(tmp, self._head_file)

    def _read_head_file(self) -> SignedHead | None:
        try:
            raw = json.loads(self._head_file.read_text())
            return SignedHead(int(raw["seq"]), str(raw["hash"]), str(raw["signature"]))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, OSError):
            return SignedHead(0, "", "unreadable")

    async def list(
        self, *, limit: int = 100, before: int | None = None, action: str | None = None
    ) -> list[AuditRecord]:
        async with self._sessions() as db:
            stmt = select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(limit)
            if before is not None:
                stmt = stmt.where(AuditEvent.seq < before)
            if action is not None:
                stmt = stmt.where(AuditEvent.action == action)
            rows = (await db.execute(stmt)).scalars().all()
        return [_to_record(r) for r in rows]

    async def count(self) -> int:
        async with self._sessions() as db:
            return int((await db.execute(select(func.count(AuditEvent.seq)))).scalar_one())

    async def verify(self) -> VerifyReport:
        async with self._sessions() as db:
            rows = (await db.execute(select(AuditEvent).order_by(AuditEvent.seq))).scalars().all()
            head_row = (
                await db.execute(select(AuditHead).where(AuditHead.id == 1))
            ).scalar_one_or_none()
        heads = []
        if head_row is not None:
            heads.append(SignedHead(head_row.seq, head_row.hash, head_row.signature))
        file_head = self._read_head_file()
        if file_head is not None:
            heads.append(file_head)
        return verify_chain(
            (_to_record(r) for r in rows),
            self._key.public_key(),
            sorted(heads, key=lambda h: -h.seq),
        )
