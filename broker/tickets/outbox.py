"""The session outbox: each ended session's note, enqueued with its end, carried to its ticket once.

A row is claimed (``claimed_until``) before it is sent, so two broker nodes never send it
at the same time; the ticket system gets the same idempotency key on every try, so a note
that arrived but whose answer was lost is not added twice. A ticket system that is down or
slow only delays notes: they are retried with capped exponential backoff and jitter, on the
schedule of ``BrokerConfig.ticket_retry_first_seconds`` and ``ticket_retry_max_seconds``.

One try is cut off after ``ticket_send_timeout_seconds`` and holds its row for twice that
(:attr:`Schedule.claim_seconds`): a try always ends, and its result is recorded, while its
claim still stands, so no other node and no later pass sends the same note beside it. A try
cut short by shutdown gives its row back at once, for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sqlalchemy import or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from broker.config import BrokerConfig
from broker.db.models_sessions import SessionOutbox
from broker.log_context import context_logger
from broker.ports import NoteAttachment, TicketSystem
from broker.services import Services
from broker.supervision import OnFailure, Supervisor
from broker.transcript import (
    OutputBudget,
    TranscriptError,
    playable_cast,
    text_blocks,
    transcript_paths,
)

log = logging.getLogger(__name__)

BATCH: Final = 20
IDLE_WAKE: Final = 30.0
MIN_WAKE: Final = 0.05
# The defaults of the schedule settings, read from BrokerConfig so they are stated once.
_DEFAULTS: Final = BrokerConfig(data_dir=Path())
BACKOFF_FIRST: Final = _DEFAULTS.ticket_retry_first_seconds
BACKOFF_CAP: Final = _DEFAULTS.ticket_retry_max_seconds
SEND_TIMEOUT: Final = float(_DEFAULTS.ticket_send_timeout_seconds)
# Past 2**62 times the first delay every allowed schedule sits at its cap, so the exponent
# stops there. Unbounded, 2.0 ** 1024 raised OverflowError from the 1024th failure on (two
# to four days of outage at the defaults): no failure was recorded any more, the note was
# tried only when its claim ran out, and each time the rest of its batch waited a round.
DOUBLINGS_MAX: Final = 62
# The attempts column is a 32-bit integer on PostgreSQL; the count stops there.
ATTEMPTS_MAX: Final = 2**31 - 1


def retry_delay(
    attempts: int, jitter: float, *, first: float = BACKOFF_FIRST, cap: float = BACKOFF_CAP
) -> float:
    """Seconds before the next try after ``attempts`` failures; ``jitter`` in [0, 1)."""
    doublings = min(max(1, attempts), DOUBLINGS_MAX) - 1
    ceiling = min(cap, first * 2.0**doublings)
    return ceiling * (0.5 + 0.5 * jitter)


def wake_in(
    now: dt.datetime, times: Sequence[dt.datetime | None], idle: float = IDLE_WAKE
) -> float:
    """Seconds to wait for the earliest of ``times`` (a row falling due, another worker's
    claim running out), at least :data:`MIN_WAKE`, at most ``idle``."""
    known = [t for t in times if t is not None]
    if not known:
        return idle
    return max(MIN_WAKE, min(idle, (min(known) - now).total_seconds()))


@dataclass(frozen=True)
class Schedule:
    """When a note is tried again, and how long one try may take."""

    first: float = BACKOFF_FIRST
    cap: float = BACKOFF_CAP
    send_timeout: float = SEND_TIMEOUT

    @classmethod
    def from_config(cls, config: BrokerConfig) -> Schedule:
        return cls(
            first=config.ticket_retry_first_seconds,
            cap=config.ticket_retry_max_seconds,
            send_timeout=float(config.ticket_send_timeout_seconds),
        )

    @property
    def claim_seconds(self) -> float:
        """How long a try holds its row: twice the send timeout, so the try (cut off at the
        timeout) and the recording of its result end while the claim still stands."""
        return 2.0 * self.send_timeout

    def delay(self, attempts: int, jitter: float) -> float:
        return retry_delay(attempts, jitter, first=self.first, cap=self.cap)


# The rendered text on the ticket is for reading: 1 MiB is some 20,000 lines. Rendering
# 10 MiB of a streamed session cost seconds of broker CPU per note, which a broker stopping
# after many such sessions spent past its shutdown bound; the .cast stays the full record.
TEXT_ATTACHMENT_MAX: Final = 1 << 20
# And at most this many lines, what 1 MiB of typical lines holds: a session of short lines
# (`yes`, a counter, a log of ids) took half a million lines to fill the megabyte, and
# rendering and scrubbing them one by one cost 0.3 s of broker CPU per note; fifty such
# sessions ending together kept the broker busy for 14 s beside the live ones.
TEXT_ATTACHMENT_LINES: Final = 20_000
# And the output read to make it: a session that printed a gigabyte of zeros or escape
# sequences renders to almost no text, and the rendering read all of it (25-35 s of broker
# CPU per GB, beside the next session's relay). 16 MiB of output is far more than any 1 MiB
# of readable text takes.
TEXT_OUTPUT_MAX: Final = 16 << 20
CAST_CONTENT_TYPE: Final = "application/x-asciicast"
TEXT_CONTENT_TYPE: Final = "text/plain; charset=utf-8"


def read_attachments(
    root: Path, session_id: str, names: Sequence[str], max_bytes: int
) -> list[NoteAttachment]:
    """The files a note names, read from the transcript store (blocking: run in a thread)."""
    cast = transcript_paths(root, session_id).cast
    found: list[NoteAttachment] = []
    for name in names:
        if name == f"{session_id}.cast":
            # asciicast v2, for asciinema in the ticket system (a format 2 file converted).
            data = playable_cast(cast, max_bytes)
            if data is not None:
                found.append(NoteAttachment(name, CAST_CONTENT_TYPE, data))
        elif name == f"{session_id}.txt":
            text = _text(cast, min(max_bytes, TEXT_ATTACHMENT_MAX))
            found.append(NoteAttachment(name, TEXT_CONTENT_TYPE, text))
    return found


def _text(cast: Path, max_bytes: int) -> bytes:
    """The text rendering, whole lines up to ``max_bytes`` and :data:`TEXT_ATTACHMENT_LINES`,
    with a note where it was cut."""
    cut = b"\n[... cut: the rest is in the .cast transcript]\n"
    budget = max_bytes - len(cut)
    lines: list[str] = []
    chars = 0  # never more than the encoded size: stop reading once that is over budget
    over = False
    output = OutputBudget(TEXT_OUTPUT_MAX)
    # Measured and joined a block at a time, never a Python step per line: a session of
    # millions of short lines (`yes`) cost seconds of broker CPU per note otherwise.
    for block in text_blocks(cast, budget=output):
        size = sum(map(len, block)) + len(block)
        if chars + size > budget or len(lines) + len(block) > TEXT_ATTACHMENT_LINES:
            for line in block:
                chars += len(line) + 1
                if chars > budget or len(lines) >= TEXT_ATTACHMENT_LINES:
                    break
                lines.append(line)
            over = True
            break
        chars += size
        lines.extend(block)
    over = over or output.spent
    data = ("\n".join(lines) + "\n").encode("utf-8", "replace") if lines else b""
    if len(data) > budget:
        data, over = data[: data.rfind(b"\n", 0, budget) + 1], True
    return data + cut if over else data


def note_key(session_id: str) -> str:
    """The idempotency key of a session's note: the same on every retry and every node."""
    return f"secondline-session-note:{session_id}"


async def enqueue_note(
    db: AsyncSession,
    *,
    session_id: str,
    ticket_id: int,
    author: str,
    text: str,
    attachments: Sequence[str],
    now: dt.datetime,
) -> None:
    """Put the session's note in the outbox (once: a second call changes nothing)."""
    exists = (
        await db.execute(select(SessionOutbox.id).where(SessionOutbox.session_id == session_id))
    ).scalar_one_or_none()
    if exists is not None:
        return
    db.add(
        SessionOutbox(
            session_id=session_id,
            ticket_id=ticket_id,
            idempotency_key=note_key(session_id),
            author=author,
            text=text,
            attachments=list(attachments),
            state="pending",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )


class OutboxWorker:
    """Delivers due notes; woken when a session ends, else every half minute."""

    def __init__(
        self,
        services: Services,
        tickets: Callable[[], TicketSystem | None],
        *,
        rng: random.Random | None = None,
        schedule: Schedule | None = None,
    ) -> None:
        self.services = services
        self.schedule = schedule or Schedule.from_config(services.config)
        self._tickets = tickets
        self._wake = asyncio.Event()
        self.rng = rng or random.SystemRandom()
        self.delivered = 0
        self.changed = asyncio.Event()  # set after every delivery attempt (tests wait on it)
        self._stopping = False
        self._tasks = Supervisor("outbox")
        self._started = False
        self._finished = False  # the loop ended by itself, its round done

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        # RESTART: every note waits in the outbox table, not in the loop, so a new loop
        # sends them; stopped, notes would pile up until the next broker start.
        self._tasks.keep("note delivery", self._run_to_end, on_failure=OnFailure.RESTART)
        self._started = True

    async def _run_to_end(self) -> None:
        await self.run()
        self._finished = True

    async def close(self, grace: float = 5.0) -> None:
        """Let the round that runs finish, send what is due once more, and stop; a note
        that does not make it stays in the outbox for the next start."""
        # Once: the app calls this at shutdown and again in its clean-up; with a ticket
        # system that hangs, the second last round took another grace period out of the
        # clean-up's bound, and the clean-up after it (tunnels, presence) was cut short.
        if self._stopping:
            return
        self._stopping = True
        self._wake.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        if self._started:
            await self._tasks.stop(grace=grace)
            if not self._finished:  # cut off mid-round after the grace period
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
            claimed = await self._claim(row_id)
            if claimed is not None:
                await self._deliver(*claimed)
        return await self._next_due()

    async def _claim(self, row_id: int) -> tuple[SessionOutbox, dt.datetime] | None:
        # The claim starts now, not when the pass began: tries earlier in the batch may have
        # taken up to a send timeout each, and a claim dated from the start of the pass could
        # run out while this row is still being sent.
        now = self.services.clock()
        until = now + dt.timedelta(seconds=self.schedule.claim_seconds)
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
            row = (
                await db.execute(select(SessionOutbox).where(SessionOutbox.id == row_id))
            ).scalar_one()
            return row, until

    async def _deliver(self, row: SessionOutbox, until: dt.datetime) -> None:
        try:
            # Cut off, so a try always ends within its claim (see Schedule.claim_seconds).
            async with asyncio.timeout(self.schedule.send_timeout):
                error = await self._send(row)
        except TimeoutError:
            error = f"the ticket system did not answer within {self.schedule.send_timeout:g} s"
        except asyncio.CancelledError:
            # Stopped mid-send (shutdown): give the row back now, or the next start would
            # wait out the claim before sending it. The ticket system may have taken the note
            # already; its idempotency key makes the next try add nothing then.
            try:
                async with asyncio.timeout(5.0):
                    await self._release(row.id, until)
            except Exception as exc:  # the row still goes, once its claim runs out
                context_logger(__name__, session=row.session_id).warning(
                    "the note for T-%d could not be given back at shutdown (%s); it goes "
                    "when its claim runs out",
                    row.ticket_id,
                    type(exc).__name__,
                )
            raise
        now = self.services.clock()
        async with self.services.db() as db, db.begin():
            if error is None:
                # Recorded even if the claim ran out meanwhile: the note is there.
                await db.execute(
                    update(SessionOutbox)
                    .where(SessionOutbox.id == row.id)
                    .values(
                        state="delivered", delivered_at=now, claimed_until=None, last_error=None
                    )
                )
            else:
                attempts = min(row.attempts + 1, ATTEMPTS_MAX)
                delay = self.schedule.delay(attempts, self.rng.random())
                # Only while this claim stands: a row another worker has claimed since is
                # theirs to schedule, and clearing their claim would let a third send it.
                result = await db.execute(
                    update(SessionOutbox)
                    .where(SessionOutbox.id == row.id, SessionOutbox.claimed_until == until)
                    .values(
                        attempts=attempts,
                        next_attempt_at=now + dt.timedelta(seconds=delay),
                        claimed_until=None,
                        last_error=error,
                    )
                )
                if getattr(result, "rowcount", 0) != 1:
                    log.error(
                        "session %s: a try of the note for T-%d outlived its claim (%s)",
                        row.session_id,
                        row.ticket_id,
                        error,
                    )
                    self.changed.set()
                    return
        if error is None:
            self.delivered += 1
            log.info("session %s: note delivered to T-%d", row.session_id, row.ticket_id)
        else:
            log.warning(
                "session %s: note for T-%d not delivered yet (attempt %d, next in %.3f s): %s",
                row.session_id,
                row.ticket_id,
                attempts,
                delay,
                error,
            )
        self.changed.set()

    async def _send(self, row: SessionOutbox) -> str | None:
        """One try: None when the ticket system took the note, else what went wrong."""
        config = self.services.config
        tickets = self._tickets()
        if tickets is None:
            return "the ticket system is not available"
        try:
            # Any node sends any note: the transcript comes from the shared store when
            # another node recorded it.
            async with self.services.transcripts.opened(row.session_id) as root:
                files = await asyncio.to_thread(
                    read_attachments,
                    root,
                    row.session_id,
                    row.attachments,
                    config.max_attachment_bytes,
                )
        except (OSError, TranscriptError, SQLAlchemyError) as exc:
            return f"reading the transcript failed: {type(exc).__name__}"
        # Separate from the read: a connection error of the ticket system is an OSError too,
        # and was reported as a failed transcript read.
        try:
            await tickets.add_note(
                row.ticket_id,
                author=row.author,
                text=row.text,
                internal=True,
                attachments=files,
                idempotency_key=row.idempotency_key,
            )
        except Exception as exc:  # the send timeout is no Exception here: it cancels
            return f"{type(exc).__name__}: {exc}"[:300]
        return None

    async def _release(self, row_id: int, until: dt.datetime) -> None:
        async with self.services.db() as db, db.begin():
            await db.execute(
                update(SessionOutbox)
                .where(SessionOutbox.id == row_id, SessionOutbox.claimed_until == until)
                .values(claimed_until=None)
            )

    async def _next_due(self) -> float:
        # A row another worker holds is not due until its claim runs out: counting it as due
        # by its next_attempt_at alone made this worker poll every 50 ms for the whole claim
        # (other nodes' sends, or a claim a killed process left behind).
        now = self.services.clock()
        pending = SessionOutbox.state == "pending"
        free = or_(SessionOutbox.claimed_until.is_(None), SessionOutbox.claimed_until < now)
        async with self.services.db() as db:
            due = (
                await db.execute(
                    select(SessionOutbox.next_attempt_at)
                    .where(pending, free)
                    .order_by(SessionOutbox.next_attempt_at)
                    .limit(1)
                )
            ).scalar_one_or_none()
            held = (
                await db.execute(
                    select(SessionOutbox.claimed_until)
                    .where(pending, SessionOutbox.claimed_until >= now)
                    .order_by(SessionOutbox.claimed_until)
                    .limit(1)
                )
            ).scalar_one_or_none()
        return wake_in(now, [due, held])
