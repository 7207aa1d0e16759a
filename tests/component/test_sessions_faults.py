"""Faults that must lose nothing: a ticket system that fails, a full disk while recording,
the database going away, and a broker that crashed with a session live."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from broker.app import create_app
from broker.audit.log import AuditLog
from broker.config import load_config
from broker.db.engine import create_engine, session_factory
from broker.keys import public_pem
from broker.ports import NoteAttachment, TicketInfo, TicketSystem
from broker.sessions import SESSIONS, TICKET_SYSTEM, store
from broker.sessions.facts import SessionFacts
from broker.ssh_gateway.gateway import FAILURES_ALLOWED
from broker.tickets import TICKETS
from broker.tickets.outbox import OutboxWorker
from broker.transcript import (
    MarkParser,
    load_public_key,
    transcript_paths,
    verify_transcript,
)
from tests.component.test_sessions_harness import WAIT, World, world

pytestmark = [
    pytest.mark.postgres,
    # broker.agents.tokens (another part, in progress) still calls Result.tuples().
    pytest.mark.filterwarnings("ignore:The Result.tuples:DeprecationWarning"),
]


def verify(w_services: Any, session_id: str) -> tuple[str, str | None]:
    key = load_public_key(public_pem(w_services.keys.transcript_key))
    paths = transcript_paths(w_services.config.transcripts_dir, session_id)
    result = verify_transcript(paths.cast, key, paths.seal, paths.chain)
    return result.status, result.seal.end_reason if result.seal else None


async def session_notes(w: World) -> list[str]:
    _, ticket = await w.call("GET", f"/tickets/{w.ticket}", expect=200)
    return [n["text"] for n in ticket["notes"] if "Remote session" in n["text"]]


async def notes_of(w: World, session_id: str) -> list[str]:
    """The texts of the notes on the world's ticket that name ``session_id``."""
    _, ticket = await w.call("GET", f"/tickets/{w.ticket}", expect=200)
    return [n["text"] for n in ticket["notes"] if session_id in n["text"]]


async def assert_noted_once(
    outbox: OutboxWorker, notes: Callable[[], Awaitable[list[str]]]
) -> None:
    """One note, and still one after another whole outbox pass (run here, to its end):
    nothing of the session is left due to be sent again."""
    assert len(await notes()) == 1
    await outbox.deliver_due()
    assert len(await notes()) == 1


async def newest_session(w: World) -> str:
    _, sessions = await w.call("GET", f"/sessions?ticket={w.ticket}", expect=200)
    return str(sessions[0]["id"])


class NoJitter(random.Random):
    """Retry delays without jitter, so the test waits the shortest backoff."""

    def random(self) -> float:
        return 0.0


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as fh:
        fh.write(data)


class LostAnswers:
    """A ticket system whose answers get lost: the first notes arrive, the caller is told
    they failed (as when a connection drops after the write)."""

    def __init__(self, inner: TicketSystem, failures: int) -> None:
        self.inner = inner
        self.failures = failures
        self.calls = 0

    async def get(self, ticket_id: int) -> TicketInfo | None:
        return await self.inner.get(ticket_id)

    async def assign(self, ticket_id: int, assignee: str, *, actor: str) -> None:
        await self.inner.assign(ticket_id, assignee, actor=actor)

    async def change_status(self, ticket_id: int, action: str, *, actor: str) -> None:
        await self.inner.change_status(ticket_id, action, actor=actor)

    async def add_note(
        self,
        ticket_id: int,
        *,
        author: str,
        text: str,
        internal: bool,
        attachments: Sequence[NoteAttachment] = (),
        idempotency_key: str | None = None,
        now: Any = None,
    ) -> None:
        self.calls += 1
        await self.inner.add_note(
            ticket_id,
            author=author,
            text=text,
            internal=internal,
            attachments=attachments,
            idempotency_key=idempotency_key,
            now=now,
        )
        if self.calls <= self.failures:
            raise ConnectionResetError("the ticket system's answer was lost")


async def test_lost_answers_delay_the_note_but_never_double_it(
    data_dir: Path, tmp_path: Path
) -> None:
    """A ticket system that fails after writing gets the note retried, and keeps one; the
    transcript verifies."""
    flaky: list[LostAnswers] = []

    def install(app: web.Application) -> None:
        async def wrap(app: web.Application) -> Any:
            flaky.append(LostAnswers(app[TICKETS], failures=1))
            app[TICKET_SYSTEM] = flaky[0]
            yield

        app.cleanup_ctx.append(wrap)

    async with world(data_dir, tmp_path, extra=install) as w:
        w.runtime.outbox.rng = NoJitter()
        async with await w.ssh() as conn:
            assert (await conn.run("echo once", timeout=WAIT)).stdout == "once\n"

        async def delivered() -> bool:
            return flaky[0].calls >= 2 and len(await session_notes(w)) == 1

        await w.wait_for(delivered, "the note after a lost answer")
        assert len(await session_notes(w)) == 1
        async with w.services.db() as db:
            rows = await store.list_sessions(
                db, live=False, ticket_id=None, customers=None, limit=5
            )
        assert rows[0].state == "ended"
        sid = rows[0].id
        assert verify(w.services, sid) == ("valid", "ended")
        await assert_noted_once(w.runtime.outbox, lambda: notes_of(w, sid))
        assert flaky[0].calls == 2  # the extra pass did not even ask the ticket system


@pytest.fixture
def tiny_transcripts(data_dir: Path) -> Iterator[Path]:
    """The data dir's transcript directory on a 64 KiB tmpfs, unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    root = data_dir / "transcripts"
    root.mkdir(mode=0o700, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(root)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace')}")
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], check=True)


async def test_full_disk_ends_the_session_and_keeps_a_verifiable_part(
    data_dir: Path, tmp_path: Path, tiny_transcripts: Path
) -> None:
    """A full disk ends the session with a clear message; what was recorded verifies and
    says it was cut short, and the ticket still gets its note."""
    async with world(data_dir, tmp_path) as w:
        async with await w.ssh() as conn:
            result = await conn.run(
                "echo first-line; head -c 3000000 /dev/zero | tr '\\0' y; sleep 30",
                timeout=WAIT,
            )
        assert result.exit_status == 255
        assert "the broker's disk is full" in str(result.stderr)
        _, sessions = await w.call("GET", f"/sessions?ticket={w.ticket}", expect=200)
        sid = sessions[0]["id"]
        status, reason = verify(w.services, sid)
        assert (status, reason) == ("valid_cut_short", "disk full")
        cast = transcript_paths(tiny_transcripts, sid).cast
        assert "first-line" in cast.read_text()

        async def noted() -> bool:
            return any("cut short" in text for text in await notes_of(w, sid))

        await w.wait_for(noted, "the note of the cut-short session")
        await assert_noted_once(w.runtime.outbox, lambda: notes_of(w, sid))


async def test_database_down_refuses_new_sessions(data_dir: Path, tmp_path: Path) -> None:
    """Without its database the broker starts no session and says "audit store
    unavailable"; nothing reaches the agent, nothing is recorded or noted. With the
    database back, a session runs, verifies and is noted once."""
    async with world(data_dir, tmp_path) as w:
        conn = await w.ssh()
        broken = create_engine(f"sqlite+aiosqlite:///{tmp_path}/no-such-dir/secondline.db")
        good_db, good_audit = w.services.db, w.services.audit
        w.services.db = session_factory(broken)
        w.services.audit = AuditLog(
            w.services.db, w.services.keys.audit_key, tmp_path / "audit.head"
        )
        try:
            async with conn:
                result = await conn.run("echo should-not-run", timeout=WAIT)
            assert result.exit_status == 255
            assert "audit store unavailable" in str(result.stderr)
            assert result.stdout == ""
            assert not w.runtime.manager.live
            client_banners: list[str] = []

            class Banners(asyncssh.SSHClient):
                def auth_banner_received(self, msg: str, lang: str) -> None:
                    client_banners.append(msg)

            # More tries than the sign-in throttle allows: a refusal that is the broker's
            # fault must not count against the staff member's address.
            for _ in range(FAILURES_ALLOWED + 1):
                with pytest.raises(asyncssh.PermissionDenied):
                    await asyncssh.connect(
                        "127.0.0.1",
                        w.gateway_port,
                        username=w.ticket,
                        client_keys=[w.staff_key],
                        known_hosts=([w.services.keys.ssh_host_key.convert_to_public()], [], []),
                        client_factory=Banners,
                        config=None,
                        agent_path=None,
                    )
            assert "audit store unavailable" in "".join(client_banners)
            gateway = w.runtime.gateway

            async def all_gone() -> bool:
                return gateway.signing_in() == 0

            await w.wait_for(all_gone, "the refused connections to close")
            assert gateway.retry_after("source:127.0.0.1") == 0
        finally:
            w.services.db, w.services.audit = good_db, good_audit
            await broken.dispose()
        transcripts = w.services.config.transcripts_dir
        assert not (transcripts.exists() and any(transcripts.iterdir()))
        _, sessions = await w.call("GET", f"/sessions?ticket={w.ticket}", expect=200)
        assert sessions == []
        async with await w.ssh() as conn:
            assert (await conn.run("echo back", timeout=WAIT)).stdout == "back\n"
        sid = await newest_session(w)
        assert verify(w.services, sid) == ("valid", "ended")

        async def noted() -> bool:
            return len(await notes_of(w, sid)) == 1

        await w.wait_for(noted, "the note of the session after the outage")
        await assert_noted_once(w.runtime.outbox, lambda: notes_of(w, sid))
        assert len(await session_notes(w)) == 1  # and none of the refused attempt


async def test_sessions_left_live_by_a_crash_are_recovered(data_dir: Path, tmp_path: Path) -> None:
    """On start, a session a crash left live is marked interrupted, its transcript sealed
    as cut short and verifiable, and its note reaches the ticket once."""
    async with world(data_dir, tmp_path) as w:
        assert w.agent is not None
        manager = w.runtime.manager
        facts = SessionFacts(
            session_id="s-" + "C" * 22,
            ticket_id=int(w.ticket.removeprefix("T-")),
            ticket_title="Printer queue stuck",
            customer="acme",
            agent_id=w.agent.agent_id,
            agent_name=w.agent.name,
            owner="bob",
            owner_level=2,
            kind="shell",
            command=None,
            via="ssh",
            source="127.0.0.1",
            term="xterm",
            cols=80,
            rows=24,
        )
        # What a broker killed mid-session leaves: a live row and an unsealed transcript.
        async with w.services.db() as db, db.begin():
            await store.insert_session(
                db, facts, state="live", now=w.services.clock(), node=manager.node
            )
            await store.add_participant(
                db, facts.session_id, name="bob", role="owner", via="ssh", now=w.services.clock()
            )
        recorder = manager._recorder(facts)
        parser = MarkParser()
        stream = b"\x1b]133;A\x07$ \x1b]133;B\x07uptime\r\n\x1b]133;C\x07up 3 days\r\n"
        stream += b"\x1b]133;D;0\x07\x1b]133;A\x07$ "
        forward, marks = parser.feed(stream)
        recorder.output(forward, time.time(), marks)
        recorder.flush()
        await asyncio.to_thread(append, recorder.paths.cast, b'[1.5, "o", "half a li')
    # The broker starts again on the same data dir.
    app = create_app(load_config(data_dir, env={}))
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    try:
        services = app[SESSIONS].manager.services
        async with services.db() as db:
            row = await store.get_session(db, facts.session_id)
        assert row is not None
        assert row.state == "interrupted"
        assert verify(services, facts.session_id) == ("valid_cut_short", "interrupted")
        tickets = app[TICKETS]
        outbox = app[SESSIONS].outbox
        async with asyncio.timeout(WAIT):
            while True:
                delivered = outbox.delivered
                if delivered:
                    break
                outbox.changed.clear()
                await outbox.changed.wait()
        assert await tickets.get(facts.ticket_id) is not None
        headers = {"Authorization": f"Bearer {w.admin_token}"}

        async def notes() -> list[str]:
            resp = await client.get(f"/api/v1/tickets/{w.ticket}", headers=headers)
            texts = [str(n["text"]) for n in (await resp.json())["notes"]]
            return [text for text in texts if facts.session_id in text]

        note = (await notes())[0]
        assert "interrupted" in note
        assert "[exit 0" in note
        assert "uptime" in note
        await assert_noted_once(outbox, notes)
    finally:
        await client.close()
