"""The ticket write-back failing for a long time, with real processes: a real `secondline
serve`, a really enrolled agent, the real OpenSSH client, and a fault made in the database
itself. The test opens its own connection to the broker's database and breaks the ticket
store's note write there (a trigger on ``ticket_notes`` that fails every insert, or a lock
that makes it hang); later it mends it ("the ticket system is back"). Whatever happens in
between, each session's transcript verifies and its note arrives exactly once.

Ten minutes of outage at the default retry schedule are compressed: the broker runs with the
schedule scaled down by :data:`SCALE`, and the fault lasts until the outbox has made as many
tries as ten minutes at the defaults can hold (computed from the defaults below)."""

from __future__ import annotations

import asyncio
import re
import signal
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from broker.config import BrokerConfig
from broker.tickets.outbox import retry_delay
from tests.support.broker import BrokerProcess, start_broker
from tests.support.database import Backend, plain_dsn
from tests.support.site import (
    Site,
    new_ticket,
    sessions_of,
    start_agent,
    ticket_json,
)

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

DEFAULT_FIRST = BrokerConfig(data_dir=Path()).ticket_retry_first_seconds
DEFAULT_CAP = BrokerConfig(data_dir=Path()).ticket_retry_max_seconds
OUTAGE = 600.0  # the "failing for 10 minutes", at the default schedule
SCALE = 0.01  # the broker here retries 100 times faster: the same doublings, up to the cap
FIRST = DEFAULT_FIRST * SCALE
CAP = DEFAULT_CAP * SCALE
NOTE_KEY = "secondline-session-note:"  # broker.tickets.outbox.note_key


def attempts_within(seconds: float, first: float, cap: float) -> int:
    """The most tries an outage of ``seconds`` can hold: the first at once, every next one
    after the shortest delay the jitter allows."""
    at, tries = 0.0, 1
    while (at := at + retry_delay(tries, 0.0, first=first, cap=cap)) <= seconds:
        tries += 1
    return tries


TEN_MINUTES_OF_TRIES = attempts_within(OUTAGE, DEFAULT_FIRST, DEFAULT_CAP)


def ceiling(attempts: int) -> float:
    """The longest delay the compressed schedule may choose after ``attempts`` failures."""
    return retry_delay(attempts, 1.0, first=FIRST, cap=CAP)


@dataclass
class BrokerDatabase:
    """The test's own connection to the broker's database: the SQLite file, or the test's
    PostgreSQL database. Statements are constants of this module; nothing is interpolated."""

    backend: Backend
    data_dir: Path

    async def execute(self, *statements: str) -> None:
        if self.backend.kind == "sqlite":
            await asyncio.to_thread(self._sqlite, statements)
            return
        conn = await asyncpg.connect(plain_dsn(self.backend.url))
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    async def rows(self, query: str) -> list[tuple[object, ...]]:
        if self.backend.kind == "sqlite":
            return await asyncio.to_thread(self._sqlite, (query,))
        conn = await asyncpg.connect(plain_dsn(self.backend.url))
        try:
            return [tuple(r) for r in await conn.fetch(query)]
        finally:
            await conn.close()

    def _sqlite(self, statements: tuple[str, ...]) -> list[tuple[object, ...]]:
        conn = sqlite3.connect(self.data_dir / "secondline.db", timeout=30, isolation_level=None)
        try:
            found: list[tuple[object, ...]] = []
            for statement in statements:
                found = list(conn.execute(statement).fetchall())
            return found
        finally:
            conn.close()

    async def outbox(self) -> dict[str, tuple[str, int, str | None]]:
        """Session id -> (state, attempts, last error) of every outbox row."""
        rows = await self.rows("SELECT session_id, state, attempts, last_error FROM session_outbox")
        return {
            str(r[0]): (str(r[1]), int(str(r[2])), None if r[3] is None else str(r[3]))
            for r in rows
        }

    async def note_keys(self) -> list[str]:
        """The idempotency keys of every note of every ticket (a key once per note)."""
        rows = await self.rows("SELECT idempotency_key FROM ticket_notes")
        return [str(r[0]) for r in rows if r[0] is not None]


# SQLite: a trigger whose body writes to a table that does not exist fails every insert with
# "no such table: main.ticket_system_down" (an OperationalError, as a locked or broken
# database would). RAISE(ABORT, ...) would be the obvious trigger, but SQLite reports it as a
# constraint failure, which the store takes for "this note exists already": see
# test_a_refused_write_is_not_taken_for_a_duplicate below.
SQLITE_DOWN = (
    "CREATE TRIGGER ticket_system_outage BEFORE INSERT ON ticket_notes "
    "BEGIN INSERT INTO ticket_system_down VALUES (1); END",
)
SQLITE_BACK = ("DROP TRIGGER ticket_system_outage",)
PG_DOWN = (
    "CREATE FUNCTION ticket_system_down() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'ticket system down'; END $$",
    "CREATE TRIGGER ticket_system_outage BEFORE INSERT ON ticket_notes "
    "FOR EACH ROW EXECUTE FUNCTION ticket_system_down()",
)
PG_BACK = (
    "DROP TRIGGER ticket_system_outage ON ticket_notes",
    "DROP FUNCTION ticket_system_down()",
)


def schedule(data_dir: Path, **settings: float) -> None:
    """Set outbox settings in the data dir's config file (replacing earlier ones)."""
    path = data_dir / "secondline.toml"
    lines = [line for line in path.read_text().splitlines() if line.split(" = ")[0] not in settings]
    lines += [f"{key} = {value!r}" for key, value in settings.items()]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def outbox_settings() -> dict[str, float]:
    """The outbox settings of the test's broker (tests parametrize this to change them)."""
    return {"ticket_retry_first_seconds": FIRST, "ticket_retry_max_seconds": CAP}


@pytest.fixture
async def broker(data_dir: Path, outbox_settings: dict[str, float]) -> AsyncIterator[BrokerProcess]:
    """A real `secondline serve` whose outbox retries on the compressed schedule."""
    schedule(data_dir, **outbox_settings)
    proc = await start_broker(data_dir)
    try:
        yield proc
    finally:
        await proc.stop()


def failure_line(session_id: str) -> bytes:
    return (
        rb"session "
        + session_id.encode()
        + rb": note for T-\d+ not delivered yet \(attempt (\d+), next in ([0-9.]+) s\): (.*)"
    )


def tries(outputs: list[BrokerProcess], session_id: str) -> list[tuple[int, float, str]]:
    """(attempt, chosen delay, error) of every failed try the brokers logged for a note."""
    pattern = re.compile(failure_line(session_id))
    found = []
    for proc in outputs:
        for line in proc.output:
            if match := pattern.search(line):
                found.append((int(match.group(1)), float(match.group(2)), match.group(3).decode()))
    return found


def delivered_lines(outputs: list[BrokerProcess], session_id: str) -> int:
    needle = b"session " + session_id.encode() + b": note delivered to T-"
    return sum(needle in line for proc in outputs for line in proc.output)


async def wait_for_attempt(proc: BrokerProcess, session_id: str, wanted: int) -> None:
    """Wait until ``proc`` logs a failed try of the note numbered ``wanted`` or more."""
    index = 0
    while True:
        line = await proc.wait_for_line(failure_line(session_id), index)
        index = next(i for i in range(index, len(proc.output)) if proc.output[i] is line) + 1
        match = re.search(failure_line(session_id), line)
        assert match is not None
        if int(match.group(1)) >= wanted:
            return


async def sigterm(proc: BrokerProcess) -> None:
    """Stop the broker with SIGTERM; it drains and exits with 0."""
    code = await proc.stop(signal.SIGTERM)
    assert code == 0, b"".join(proc.output[-40:]).decode(errors="replace")


def verifies(site: Site, session_id: str) -> None:
    verdict = site.admin("transcript", "verify", session_id)
    assert verdict.code == 0, verdict
    assert verdict.out.startswith("valid"), verdict


def notes_naming(site: Site, session_id: str) -> int:
    notes = ticket_json(site, site.ticket)["notes"]
    assert isinstance(notes, list)
    return sum(session_id in str(n["text"]) for n in notes)


async def command_and_shell_sessions(site: Site) -> list[str]:
    """A command session and an interactive one on the site's ticket, both ended by
    themselves; their ids."""
    result = await site.ssh(site.ticket, "echo during-outage; exit 3")
    assert (result.code, result.out) == (3, "during-outage\n"), result.err
    term = await site.interactive(site.ticket)
    term.type("echo shell-$((6*7))\n")
    await term.expect(b"shell-42")
    term.type("exit\n")
    code, _ = await term.finish()
    assert code == 0
    ids = [str(s["id"]) for s in sessions_of(site, site.ticket)]
    assert len(ids) == 2
    return ids


def test_ten_minutes_of_tries_at_the_defaults() -> None:
    """Ten minutes at the default schedule (2 s doubling to 300 s) hold eleven tries."""
    assert (DEFAULT_FIRST, DEFAULT_CAP) == (2.0, 300.0)
    assert TEN_MINUTES_OF_TRIES == 11
    assert attempts_within(0.5, DEFAULT_FIRST, DEFAULT_CAP) == 1
    # By the eleventh try the delays have doubled up to the cap.
    assert ceiling(TEN_MINUTES_OF_TRIES - 2) == CAP > ceiling(TEN_MINUTES_OF_TRIES - 4)


async def test_ticket_write_back_down_ten_minutes_then_each_note_once(
    site: Site, backend: Backend
) -> None:
    """Notes of a command and a shell session that end while the ticket store's note write
    fails stay pending through as many tries as ten minutes hold and a SIGTERM restart; the
    transcripts verify; when the write works again each note arrives exactly once."""
    db = BrokerDatabase(backend, site.data_dir)
    sqlite = backend.kind == "sqlite"
    await start_agent(site, "web01", "unattended")
    site.ticket = new_ticket(site, "web01")
    await db.execute(*(SQLITE_DOWN if sqlite else PG_DOWN))
    first = site.broker
    shell, command = await command_and_shell_sessions(site)  # newest first
    for sid in (command, shell):
        await wait_for_attempt(first, sid, 1)
        verifies(site, sid)
    pending = await db.outbox()
    for sid in (command, shell):
        state, attempts, error = pending[sid]
        assert (state, attempts >= 1) == ("pending", True), pending[sid]
        assert error is not None
        assert ("ticket_system_down" if sqlite else "ticket system down") in error
        assert notes_naming(site, sid) == 0

    await sigterm(first)
    again = await start_broker(site.data_dir)
    brokers = [first, again]
    try:
        for sid in (command, shell):
            await wait_for_attempt(again, sid, TEN_MINUTES_OF_TRIES)
            assert notes_naming(site, sid) == 0
            assert delivered_lines(brokers, sid) == 0
        outage = await db.outbox()
        assert {s for s, row in outage.items() if row[0] == "pending"} == {command, shell}

        mark = len(again.output)
        await db.execute(*(SQLITE_BACK if sqlite else PG_BACK))
        for sid in (command, shell):
            await again.wait_for_line(b"session " + sid.encode() + b": note delivered to T-", mark)

        for sid in (command, shell):
            assert notes_naming(site, sid) == 1
            assert delivered_lines(brokers, sid) == 1
            verifies(site, sid)
            logged = tries(brokers, sid)
            numbers = [n for n, _, _ in logged]
            # Every try was made once, in order, across both processes: none was sent twice.
            assert numbers == list(range(1, len(numbers) + 1)), numbers
            assert len(numbers) >= TEN_MINUTES_OF_TRIES
            for attempt, delay, _ in logged:
                top = ceiling(attempt)
                assert top / 2 - 0.001 <= delay <= top + 0.001, (attempt, delay)
        keys = await db.note_keys()
        assert len(keys) == len(set(keys)), keys
        for sid in (command, shell):
            assert keys.count(NOTE_KEY + sid) == 1
        final = await db.outbox()
        for sid in (command, shell):
            state, attempts, error = final[sid]
            assert (state, error) == ("delivered", None)
            assert attempts >= TEN_MINUTES_OF_TRIES
    finally:
        await again.stop()


PG_WATCH_CLAIMS = (
    "CREATE FUNCTION outbox_claimed() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN PERFORM pg_notify('outbox_claims', NEW.session_id || ' ' || NEW.attempts); "
    "RETURN NEW; END $$",
    "CREATE TRIGGER outbox_claimed AFTER UPDATE OF claimed_until ON session_outbox "
    "FOR EACH ROW WHEN (NEW.claimed_until IS NOT NULL) EXECUTE FUNCTION outbox_claimed()",
)
# Inserts into ticket_notes waiting for a lock, also of a client that has gone away.
PG_WAITING_INSERTS = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
    "AND wait_event_type = 'Lock' AND query ILIKE 'INSERT INTO ticket_notes%'"
)
SLOW = {
    "ticket_retry_first_seconds": FIRST,
    "ticket_retry_max_seconds": CAP,
    "ticket_send_timeout_seconds": 1,
}


class Claims:
    """Every claim of an outbox row, as PostgreSQL notifications (an event, not a poll):
    "<session id> <attempts so far>"."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.seen: asyncio.Queue[str] = asyncio.Queue()

    async def start(self) -> None:
        await self.conn.add_listener("outbox_claims", self._heard)

    def _heard(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self.seen.put_nowait(payload)

    async def claimed(self, session_id: str, attempts: int) -> None:
        """Wait for a claim of the note after ``attempts`` failed tries."""
        async with asyncio.timeout(30):
            while await self.seen.get() != f"{session_id} {attempts}":
                pass


@pytest.mark.parametrize("outbox_settings", [SLOW], ids=["slow"])
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_ticket_write_back_hanging_then_the_note_once(site: Site, backend: Backend) -> None:
    """A note write that hangs on a lock is cut off after the send timeout and tried again,
    one try at a time; a SIGTERM during a hanging try frees the row for the next start; when
    the lock goes, the note arrives exactly once and its transcript verifies."""
    db = BrokerDatabase(backend, site.data_dir)
    await start_agent(site, "web01", "unattended")
    site.ticket = new_ticket(site, "web01")
    await db.execute(*PG_WATCH_CLAIMS)
    dsn = plain_dsn(backend.url)
    listener = await asyncpg.connect(dsn)
    holder = await asyncpg.connect(dsn)
    brokers = [site.broker]
    try:
        claims = Claims(listener)
        await claims.start()
        hold = holder.transaction()
        await hold.start()
        await holder.execute("LOCK TABLE ticket_notes IN EXCLUSIVE MODE")
        result = await site.ssh(site.ticket, "echo slow-ticket-system")
        assert result.code == 0, result.err
        sid = str(sessions_of(site, site.ticket)[0]["id"])
        # Three tries cut off after a second each span longer than one claim (two seconds).
        await wait_for_attempt(site.broker, sid, 3)
        assert all("did not answer within 1 s" in e for _, _, e in tries(brokers, sid))
        assert notes_naming(site, sid) == 0
        verifies(site, sid)

        await sigterm(site.broker)
        # A try cut off really stopped at the database: the broker's inserts do not pile up
        # behind the lock (one may still wait whose cancel the exit overtook).
        assert (await db.rows(PG_WAITING_INSERTS))[0][0] in (0, 1)

        # Tries now hang longer than the SIGTERM grace; a restart cuts one off mid-send and
        # gives the row back, so the next start sends it at once, not after the claim.
        _, failed, _ = (await db.outbox())[sid]
        schedule(site.data_dir, ticket_send_timeout_seconds=30)
        brokers.append(await start_broker(site.data_dir))
        await claims.claimed(sid, failed)
        await sigterm(brokers[-1])
        assert any(
            b"the outbox did not empty before shutdown" in line for line in brokers[-1].output
        )
        claimed = await db.rows("SELECT state, attempts, claimed_until FROM session_outbox")
        assert claimed == [("pending", failed, None)]
        brokers.append(await start_broker(site.data_dir))
        await claims.claimed(sid, failed)
        mark = len(brokers[-1].output)
        await hold.rollback()
        await brokers[-1].wait_for_line(
            b"session " + sid.encode() + b": note delivered to T-", mark
        )
        assert notes_naming(site, sid) == 1
        assert delivered_lines(brokers, sid) == 1
        numbers = [n for n, _, _ in tries(brokers, sid)]
        assert numbers == list(range(1, len(numbers) + 1)), numbers
        assert (await db.note_keys()).count(NOTE_KEY + sid) == 1
        verifies(site, sid)
    finally:
        await holder.close()
        await listener.close()
        for proc in brokers[1:]:
            await proc.stop()


# A refusal of the constraint class: what a CHECK constraint, a foreign key or a trigger's
# RAISE(ABORT) answers. PostgreSQL: SQLSTATE 23514 (check_violation).
SQLITE_REFUSE = (
    "CREATE TRIGGER ticket_system_refuses BEFORE INSERT ON ticket_notes "
    "BEGIN SELECT RAISE(ABORT, 'ticket system down'); END",
)
SQLITE_ACCEPT = ("DROP TRIGGER ticket_system_refuses",)
PG_REFUSE = (
    "CREATE FUNCTION ticket_system_refuses() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'ticket system down' USING ERRCODE = 'check_violation'; END $$",
    "CREATE TRIGGER ticket_system_refuses BEFORE INSERT ON ticket_notes "
    "FOR EACH ROW EXECUTE FUNCTION ticket_system_refuses()",
)
PG_ACCEPT = (
    "DROP TRIGGER ticket_system_refuses ON ticket_notes",
    "DROP FUNCTION ticket_system_refuses()",
)


async def test_a_refused_write_is_not_taken_for_a_duplicate(site: Site, backend: Backend) -> None:
    """A note write the database refuses with a constraint error is retried, not counted as
    delivered; when the refusal goes, the note arrives exactly once."""
    db = BrokerDatabase(backend, site.data_dir)
    sqlite = backend.kind == "sqlite"
    await start_agent(site, "web01", "unattended")
    site.ticket = new_ticket(site, "web01")
    await db.execute(*(SQLITE_REFUSE if sqlite else PG_REFUSE))
    result = await site.ssh(site.ticket, "echo refused-write")
    assert result.code == 0, result.err
    sid = str(sessions_of(site, site.ticket)[0]["id"])
    outcome = await site.broker.wait_for_line(
        b"session " + sid.encode() + b": note (delivered|for)"
    )
    assert b"not delivered yet" in outcome, (outcome, notes_naming(site, sid))
    await wait_for_attempt(site.broker, sid, 2)
    mark = len(site.broker.output)
    assert (await db.outbox())[sid][0] == "pending"
    await db.execute(*(SQLITE_ACCEPT if sqlite else PG_ACCEPT))
    await site.broker.wait_for_line(b"session " + sid.encode() + b": note delivered to T-", mark)
    assert notes_naming(site, sid) == 1
    assert (await db.note_keys()).count(NOTE_KEY + sid) == 1
    verifies(site, sid)
