"""The outbox worker: carries each ended session's note to its ticket, once.

A row is claimed (``claimed_until``) before it is sent, so two broker nodes never send it
at the same time; the ticket system gets the same idempotency key on every try, so a note
that arrived but whose answer was lost is not added twice. A ticket system that is down or
slow only delays notes: they are retried with capped exponential backoff and jitter.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from sqlalchemy import or_, select, update

from broker.db.models_sessions import SessionOutbox
from broker.ports import NoteAttachment, TicketSystem
from broker.services import Services
from broker.sessions.note import CAST_CONTENT_TYPE, TEXT_CONTENT_TYPE
from broker.transcript import TranscriptError, text_lines, transcript_paths

log = logging.getLogger(__name__)

BATCH: Final = 20
CLAIM_SECONDS: Final = 120
IDLE_WAKE: Final = 30.0
BACKOFF_BASE: Final = 2.0
BACKOFF_CAP: Final = 300.0


def retry_delay(attempts: int, jitter: float) -> float:
    """Seconds before the next try after ``attempts`` failures; ``jitter`` in [0, 1)."""
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE ** max(1, attempts))
    return ceiling * (0.5 + 0.5 * jitter)


def read_attachments(
    root: Path, session_id: str, names: Sequence[str], max_bytes: int
) -> list[NoteAttachment]:
    """The files a note names, read from the transcript store (blocking: run in a thread)."""
    cast = transcript_paths(root, session_id).cast
    found: list[NoteAttachment] = []
    for name in names:
        if name == f"{session_id}.cast":
            with open(cast, "rb") as fh:
                data = fh.read(max_bytes + 1)
            if len(data) <= max_bytes:
                found.append(NoteAttachment(name, CAST_CONTENT_TYPE, data))
        elif name == f"{session_id}.txt":
            found.append(NoteAttachment(name, TEXT_CONTENT_TYPE, _text(cast, max_bytes)))
    return found


def _text(cast: Path, max_bytes: int) -> bytes:
    out = bytearray()
    cut = b"\n[... cut: the rest is in the .cast transcript]\n"
    for line in text_lines(cast):
        encoded = (line + "\n").encode("utf-8", "replace")
        if len(out) + len(encoded) > max_bytes - len(cut):
            out += cut
            break
        out += encoded
    return bytes(out)


class OutboxWorker:
    """Delivers due notes; woken when a session ends, else every half minute."""

    def __init__(
        self,
        services: Services,
        tickets: Callable[[], TicketSystem | None],
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.services = services
        self._tickets = tickets
        self._wake = asyncio.Event()
        self.rng = rng or random.SystemRandom()
        self.delivered = 0
        self.changed = asyncio.Event()  # set after every delivery attempt (tests wait on it)
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run())

    async def close(self, grace: float = 5.0) -> None:
        """Let the round that runs finish, send what is due once more, and stop; a note
        that does not make it stays in the outbox for the next start."""
        self._stopping = True
        self._wake.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=grace)
            if not done:
                self._task.cancel()
                await asyncio.wait({self._task})
                log.warning("the outbox did not empty before shutdown; the rest goes at start")
                return
        try:
            async with asyncio.timeout(max(0.0, deadline - loop.time())):
                await self.deliver_due()
        except TimeoutError:
            log.warning("the outbox did not empty before shutdown; the rest goes at start")
        except Exception:
            log.exception("delivering the last notes at shutdown failed")

    async def run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                delay = await self.deliver_due()
            except Exception:
                log.exception("the outbox could not be read; retrying")
                delay = 5.0
            if self._stopping:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    async def deliver_due(self) -> float:
        """Send what is due; return the seconds until the next row falls due."""
        now = self.services.clock()
        async with self.services.db() as db:
            ids = (
                (
                    await db.execute(
                        select(SessionOutbox.id)
                        .where(
                            SessionOutbox.state == "pending",
                            SessionOutbox.next_attempt_at <= now,
                            or_(
                                SessionOutbox.claimed_until.is_(None),
                                SessionOutbox.claimed_until < now,
                            ),
                        )
                        .order_by(SessionOutbox.id)
                        .limit(BATCH)
                    )
                )
                .scalars()
                .all()
            )
        for row_id in ids:
            row = await self._claim(row_id, now)
            if row is not None:
                await self._deliver(row)
        return await self._next_due()

    async def _claim(self, row_id: int, now: dt.datetime) -> SessionOutbox | None:
        until = now + dt.timedelta(seconds=CLAIM_SECONDS)
        async with self.services.db() as db, db.begin():
            result = await db.execute(
                update(SessionOutbox)
                .where(
                    SessionOutbox.id == row_id,
                    SessionOutbox.state == "pending",
                    or_(SessionOutbox.claimed_until.is_(None), SessionOutbox.claimed_until < now),
                )
                .values(claimed_until=until)
            )
            if getattr(result, "rowcount", 0) != 1:
                return None  # another node took it
            return (
                await db.execute(select(SessionOutbox).where(SessionOutbox.id == row_id))
            ).scalar_one()

    async def _deliver(self, row: SessionOutbox) -> None:
        config = self.services.config
        error: str | None = None
        tickets = self._tickets()
        if tickets is None:
            error = "the ticket system is not available"
        else:
            try:
                files = await asyncio.to_thread(
                    read_attachments,
                    config.transcripts_dir,
                    row.session_id,
                    row.attachments,
                    config.max_attachment_bytes,
                )
                await tickets.add_note(
                    row.ticket_id,
                    author=row.author,
                    text=row.text,
                    internal=True,
                    attachments=files,
                    idempotency_key=row.idempotency_key,
                )
            except (OSError, TranscriptError) as exc:
                error = f"reading the transcript failed: {type(exc).__name__}"
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"[:300]
        now = self.services.clock()
        async with self.services.db() as db, db.begin():
            if error is None:
                await db.execute(
                    update(SessionOutbox)
                    .where(SessionOutbox.id == row.id)
                    .values(
                        state="delivered", delivered_at=now, claimed_until=None, last_error=None
                    )
                )
            else:
                attempts = row.attempts + 1
                delay = retry_delay(attempts, self.rng.random())
                await db.execute(
                    update(SessionOutbox)
                    .where(SessionOutbox.id == row.id)
                    .values(
                        attempts=attempts,
                        next_attempt_at=now + dt.timedelta(seconds=delay),
                        claimed_until=None,
                        last_error=error,
                    )
                )
        if error is None:
            self.delivered += 1
            log.info("session %s: note delivered to T-%d", row.session_id, row.ticket_id)
        else:
            log.warning(
                "session %s: note for T-%d not delivered yet: %s",
                row.session_id,
                row.ticket_id,
                error,
            )
        self.changed.set()

    async def _next_due(self) -> float:
        async with self.services.db() as db:
            due = (
                await db.execute(
                    select(SessionOutbox.next_attempt_at)
                    .where(SessionOutbox.state == "pending")
                    .order_by(SessionOutbox.next_attempt_at)
                    .limit(1)
                )
            ).scalar_one_or_none()
        if due is None:
            return IDLE_WAKE
        seconds = (due - self.services.clock()).total_seconds()
        return max(0.05, min(IDLE_WAKE, seconds))
