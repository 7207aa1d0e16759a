"""PostgreSQL stopped for real while sessions run: a real `secondline serve` on a private
PostgreSQL cluster (tests/support/private_pg.py; the machine's shared one is never
stopped), a really enrolled `python -m agent run`, and the real OpenSSH client.

While the database is down, new sessions are refused with "audit store unavailable" (a new
SSH connection, a new session on a signed-in connection, a session whose end user approves
only now, and the HTTP API) and nothing runs on the agent; a session that was live goes on,
since its transcript is on disk, and its end, participants, audit events and ticket note
are written once the database is back, each exactly once. A broker stopped while the
database is down still exits; started while it is down, it refuses with one clear line.
"""

from __future__ import annotations

import asyncio
import signal
import ssl
from pathlib import Path
from unittest.mock import ANY

import aiohttp
import asyncpg
import pytest

import tests.support.private_pg as private_pg_support
from broker.config import load_config
from broker.transcript import transcript_paths
from tests.support.broker import init_dir, secondline, start_broker
from tests.support.database import run_sync
from tests.support.private_pg import PrivatePostgres
from tests.support.site import (
    Site,
    agent_cli,
    new_ticket,
    ok,
    read_stderr_until,
    run_agent,
    session_ids,
    sessions_of,
    spawn_ssh,
    start_agent,
    stop_agent,
    ticket_json,
)

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

WAIT = 30.0  # failure bound for waits, never a pause
APPROVAL = b"waiting for the end user's approval"
UNAVAILABLE = "audit store unavailable"

# The shared fixtures, here on a data dir in the private cluster: `data_dir` below
# overrides conftest's, and conftest's `broker` and the e2e `site` build on it.
private_pg = private_pg_support.private_pg


@pytest.fixture
def data_dir(private_pg: PrivatePostgres, tmp_path: Path) -> Path:
    """A data dir whose database lives in the private cluster, initialised for real."""
    backend = run_sync(private_pg.backend())
    return init_dir(tmp_path / "data", backend, database_url=backend.url)


async def http(
    site: Site, method: str, path: str, token: str | None = None, body: object | None = None
) -> tuple[int, dict[str, object]]:
    """One HTTPS request to the broker, trusting its certificate; status and JSON body."""
    trust = ssl.create_default_context(cafile=str(load_config(site.data_dir).tls_cert_path))
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT)) as client,
        client.request(
            method, site.broker.url + path, json=body, headers=headers, ssl=trust
        ) as resp,
    ):
        data = await resp.json()
        assert isinstance(data, dict)
        return resp.status, data


async def approve(site: Site, proc: asyncio.subprocess.Process) -> str:
    """The end user approves the session ``proc`` waits for; its id."""
    told = await read_stderr_until(proc, APPROVAL)
    sid = session_ids(told.decode())[0]
    assert site.agent_state is not None
    ok(agent_cli(site.agent_state, "approve", sid))
    return sid


async def run_approved(site: Site, command: str) -> tuple[int, bytes]:
    """Run ``command`` on the attended agent with the end user's approval."""
    proc = await spawn_ssh(site, site.ticket, command)
    await approve(site, proc)
    assert proc.stdout is not None
    async with asyncio.timeout(WAIT):
        out = await proc.stdout.read()
        code = await proc.wait()
    return code, out


async def rows(pg: PrivatePostgres, query: str, *args: object) -> list[asyncpg.Record]:
    """Read the broker's database directly, not through the broker."""
    conn = await asyncpg.connect(pg.plain_dsn("secondline"))
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


async def recorded(pg: PrivatePostgres, sid: str) -> dict[str, object]:
    """What the database holds of one session: its state, its row counts, its audit."""
    session = await rows(pg, "SELECT state FROM sessions WHERE id = $1", sid)
    people = await rows(
        pg, "SELECT name, left_at FROM session_participants WHERE session_id = $1", sid
    )
    outbox = await rows(pg, "SELECT state FROM session_outbox WHERE session_id = $1", sid)
    notes = await rows(pg, "SELECT id FROM ticket_notes WHERE strpos(text, $1) > 0", sid)
    audit = await rows(pg, "SELECT action FROM audit_events WHERE target = $1", sid)
    return {
        "states": [r["state"] for r in session],
        "participants": [(r["name"], r["left_at"] is not None) for r in people],
        "outbox": [r["state"] for r in outbox],
        "notes": len(notes),
        "audit": sorted(r["action"] for r in audit),
    }


async def no_duplicates(pg: PrivatePostgres) -> None:
    """No session, participation, outbox row, note or session audit event is there twice."""
    for query in (
        "SELECT id FROM sessions GROUP BY id HAVING count(*) > 1",
        "SELECT session_id, name, role, joined_at FROM session_participants"
        " GROUP BY session_id, name, role, joined_at HAVING count(*) > 1",
        "SELECT session_id FROM session_outbox GROUP BY session_id HAVING count(*) > 1",
        "SELECT ticket_id, idempotency_key FROM ticket_notes WHERE idempotency_key IS NOT NULL"
        " GROUP BY ticket_id, idempotency_key HAVING count(*) > 1",
        "SELECT ticket_id, text FROM ticket_notes GROUP BY ticket_id, text HAVING count(*) > 1",
        "SELECT target, action FROM audit_events WHERE target LIKE 's-%'"
        " GROUP BY target, action, details::text HAVING count(*) > 1",
    ):
        assert await rows(pg, query) == [], query


def audit_verifies(site: Site) -> None:
    verdict = site.admin("audit", "verify")
    assert verdict.code == 0, verdict
    assert verdict.out.startswith("audit log intact"), verdict


async def test_database_stopped_under_live_sessions(
    site: Site, private_pg: PrivatePostgres
) -> None:
    """With PostgreSQL stopped, new sessions are refused over SSH and HTTP with "audit store
    unavailable" and nothing runs; the live session goes on and, once PostgreSQL is back,
    its end, participants, audit events and note are recorded exactly once, a refused
    session's row is closed, new sessions work without a broker restart, and the audit
    log verifies."""
    await start_agent(site, "web01", "attended")
    site.ticket = new_ticket(site, "web01")
    bob = ok(site.admin("user", "token", "bob", "--scope", "read", "--scope", "session"))
    control = site.tmp / "ctl"
    over_control = ("-o", "ControlMaster=no", "-o", f"ControlPath={control}")
    term = await site.interactive(
        site.ticket, "-o", "ControlMaster=yes", "-o", f"ControlPath={control}"
    )
    sid = await approve(site, term.proc)
    term.type("echo alive-$((6*7))\n")
    await term.expect(b"alive-42")
    marker = site.tmp / "ran-while-the-database-was-down"
    pending = await spawn_ssh(site, site.ticket, f"touch {marker}")
    pending_told = await read_stderr_until(pending, APPROVAL)
    pending_sid = session_ids(pending_told.decode())[0]

    await private_pg.stop()
    fresh = await site.ssh(site.ticket, f"touch {marker}")
    assert fresh.code == 255
    assert UNAVAILABLE in fresh.err, fresh.err  # the key cannot be checked: sign-in refused
    muxed = await site.ssh(site.ticket, f"touch {marker}", options=over_control)
    assert muxed.code == 255
    assert UNAVAILABLE in muxed.err, muxed.err  # signed in already: the session is refused
    assert APPROVAL.decode() not in muxed.err
    assert site.agent_state is not None
    ok(agent_cli(site.agent_state, "approve", pending_sid))
    assert pending.stderr is not None
    async with asyncio.timeout(WAIT):
        pending_err = (await pending.stderr.read()).decode()
        assert await pending.wait() == 255
    assert UNAVAILABLE in pending_err, pending_err  # approved, but its start is unrecorded
    for method, path, body in (
        ("GET", f"/api/v1/tickets/{site.ticket}", None),
        ("POST", "/api/v1/sessions/terminal-tickets", {"ticket_id": site.ticket, "mode": "open"}),
    ):
        status, data = await http(site, method, path, bob, body)
        assert status == 503, (path, data)
        error = data["error"]
        assert isinstance(error, dict)
        assert error["code"] == "store_unavailable"
        assert UNAVAILABLE in str(error["message"])
    assert await http(site, "GET", "/healthz") == (
        503,
        {"status": "unavailable", "database": "down"},
    )
    assert not marker.exists()  # nothing ran on the agent

    # The live session goes on: every byte still reaches its transcript on disk.
    term.type("echo still-$((40+2))\n")
    await term.expect(b"still-42")
    term.type("exit\n")
    code, _ = await term.finish()
    assert code == 0
    verdict = site.admin("transcript", "verify", sid)
    assert verdict.code == 0, verdict
    assert verdict.out.startswith("valid:"), verdict
    # Refused before its recorder existed: it has no transcript because nothing ran.
    transcripts = load_config(site.data_dir).transcripts_dir
    assert not transcript_paths(transcripts, pending_sid).cast.exists()

    mark = len(site.broker.output)
    await private_pg.start()
    await site.broker.wait_for_line(b"session " + sid.encode() + b": note delivered", mark)
    await site.broker.wait_for_line(
        b"session " + pending_sid.encode() + b": recorded its refusal after", mark
    )
    code, out = await run_approved(site, "echo after-$((1+1))")
    assert (code, out) == (0, b"after-2\n")  # no broker restart
    assert await http(site, "GET", "/healthz") == (200, {"status": "ok", "version": ANY})

    assert await recorded(private_pg, sid) == {
        "states": ["ended"],
        "participants": [("bob", True)],
        "outbox": ["delivered"],
        "notes": 1,
        "audit": [
            "session.consent",
            "session.end",
            "session.participant_joined",
            "session.participant_left",
            "session.start",
        ],
    }
    never_ran = await recorded(private_pg, pending_sid)
    # Not left "waiting_consent", where it would count against bob's limit until a restart.
    assert never_ran["states"] == ["refused"]
    assert (never_ran["participants"], never_ran["outbox"], never_ran["notes"]) == ([], [], 0)
    assert "session.start" not in str(never_ran["audit"])
    why = await rows(private_pg, "SELECT end_reason FROM sessions WHERE id = $1", pending_sid)
    assert UNAVAILABLE in str(why[0]["end_reason"])
    notes = ticket_json(site, site.ticket)["notes"]
    assert isinstance(notes, list)
    assert sum(sid in str(n["text"]) for n in notes) == 1
    assert not any(pending_sid in str(n["text"]) for n in notes)
    await no_duplicates(private_pg)
    audit_verifies(site)
    assert not marker.exists()


async def test_broker_restarted_while_the_database_is_down(
    site: Site, private_pg: PrivatePostgres
) -> None:
    """A broker stopped while PostgreSQL is down drains its live session and exits; started
    while it is down, it refuses with one clear line; started once it is back, it records
    the session as interrupted, sends its note once, runs new sessions, and the audit log
    verifies."""
    state = await start_agent(site, "web01", "unattended")
    site.ticket = new_ticket(site, "web01")
    term = await site.interactive(site.ticket)
    term.type("echo alive-$((6*7))\n")
    await term.expect(b"alive-42")
    sid = str(sessions_of(site, site.ticket)[0]["id"])

    await private_pg.stop()
    assert await site.broker.stop(signal.SIGTERM) == 0  # bounded: it used to hang here
    # Within its bounds, not cut short: the presence it could not write is given up (the
    # next start marks every agent offline anyway).
    assert b"secondline: stopped\n" in site.broker.output
    assert any(
        b"presence of 1 agents not written at shutdown" in line for line in site.broker.output
    )
    code, err = await term.finish()
    assert code == 255
    assert "the broker is shutting down" in err
    verdict = site.admin("transcript", "verify", sid)
    assert verdict.code == 0, verdict
    assert verdict.out.startswith("valid:"), verdict  # sealed by the drain, complete

    refused = secondline("serve", data_dir=site.data_dir)
    assert refused.code == 1, refused
    assert "secondline: the database is unavailable" in refused.err, refused
    assert "Traceback" not in refused.err + refused.out, refused
    assert "secondline: serving" not in refused.out

    await private_pg.start()
    mark = 0
    site.broker = await start_broker(site.data_dir)
    try:
        await site.broker.wait_for_line(b"session " + sid.encode() + b": note delivered", mark)
        # The agent gave up on the stopped broker for a backoff delay; start it afresh.
        await stop_agent(site)
        await run_agent(site, state, "web01")
        after = await site.ssh(site.ticket, "echo after-$((1+1))")
        assert (after.code, after.out) == (0, "after-2\n"), after.err
        found = await recorded(private_pg, sid)
        assert found["states"] == ["interrupted"]
        assert found["participants"] == [("bob", True)]
        assert found["outbox"] == ["delivered"]
        assert found["notes"] == 1
        audit = found["audit"]
        assert isinstance(audit, list)
        assert audit.count("session.start") == audit.count("session.interrupted") == 1
        assert "session.end" not in audit
        verdict = site.admin("transcript", "verify", sid)
        assert verdict.code == 0, verdict
        await no_duplicates(private_pg)
        audit_verifies(site)
    finally:
        await site.broker.stop()
