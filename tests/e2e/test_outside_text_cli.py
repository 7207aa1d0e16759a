"""Raw C1 and bidi controls from outside never reach an admin's terminal: an escalation
reason given through the CLI and the API is cleaned where it enters, and `ticket show` /
`audit list` (tables and JSON) escape what an older row still holds. Checked byte by byte on
what the real `secondline` process writes, against a real `secondline serve`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import update

from broker.cli.client import ApiClient, Connection
from broker.config import load_config
from broker.db.engine import create_engine, session_factory
from broker.db.models_tickets import TicketLevelChange
from tests.support.broker import BrokerProcess, cli_env, secondline
from tests.support.site import ok

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

# U+009B is CSI and U+009D OSC to a terminal: "\x9b2J" clears the screen, "\x9d0;...\x07"
# sets the window title; U+202E turns what follows around.
HOSTILE = "CUPS hangs\x9b2J\x9d0;pwned\x07 \u202egnp.exe"
CLEANED = "CUPS hangs2J0;pwned gnp.exe"
# Raw in UTF-8: C0 but line feed, DEL, C1 (U+0080-U+009F), bidi (U+202A-E, U+2066-9).
RAW_CONTROL = re.compile(
    rb"[\x00-\x09\x0b-\x1f\x7f]|\xc2[\x80-\x9f]|\xe2\x80[\xaa-\xae]|\xe2\x81[\xa6-\xa9]"
)


def raw_cli(data_dir: Path, *args: str) -> bytes:
    """What `secondline` writes to stdout, as bytes (stderr must be clean too)."""
    proc = subprocess.run(
        [sys.executable, "-m", "broker.cli.main", "--data-dir", str(data_dir), *args],
        capture_output=True,
        env=cli_env(data_dir),
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert RAW_CONTROL.search(proc.stderr) is None, proc.stderr
    return proc.stdout


async def store_raw_reason(data_dir: Path, ticket: int, reason: str) -> None:
    """A level change as a broker before the cleaning rule stored it."""
    config = load_config(data_dir, env={})
    engine = create_engine(config.db_url, schema=config.database_schema or None)
    try:
        async with session_factory(engine)() as db, db.begin():
            await db.execute(
                update(TicketLevelChange)
                .where(TicketLevelChange.ticket_id == ticket)
                .values(reason=reason)
            )
    finally:
        await engine.dispose()


async def test_escalation_reason_reaches_no_terminal_raw(broker: BrokerProcess) -> None:
    d = broker.data_dir
    ok(secondline("customer", "add", "acme", data_dir=d))
    ok(secondline("user", "add", "lena", "--role", "level1", "--customer", "acme", data_dir=d))
    ok(secondline("user", "add", "bob", "--role", "level2", "--customer", "acme", data_dir=d))
    lena = ok(secondline("user", "token", "lena", data_dir=d))
    bob = ok(secondline("user", "token", "bob", data_dir=d))
    ref = ok(
        secondline("--token", lena, "ticket", "create", "--title", "Printer queue stuck",
                   "--customer", "acme", data_dir=d)
    )  # fmt: skip
    escalated = secondline(
        "--token", lena, "ticket", "escalate", ref, "--to", "2", "--reason", HOSTILE, data_dir=d
    )
    assert escalated.code == 0, escalated.err
    cert = str(load_config(d, env={}).tls_cert_path)
    ApiClient(Connection(broker.url, bob, cert)).request(
        "POST", f"/tickets/{ref}/hand-back", {"to": 1, "reason": HOSTILE + "\u2066 api"}
    )

    shown = raw_cli(d, "ticket", "show", ref, "--json")
    assert RAW_CONTROL.search(shown) is None
    reasons = [h["reason"] for h in json.loads(shown)["history"]]
    assert reasons == [CLEANED, CLEANED + " api"]  # cleaned where it entered
    audit = raw_cli(d, "audit", "list", "--json")
    assert RAW_CONTROL.search(audit) is None
    assert b"\\u009b" not in audit  # nothing to escape: the audit got the cleaned reason
    assert RAW_CONTROL.search(raw_cli(d, "audit", "list")) is None

    # A row stored raw before the rule: shown escaped in JSON (which still says the same)
    # and in the table, never raw.
    await store_raw_reason(d, int(ref.removeprefix("T-")), HOSTILE)
    shown = raw_cli(d, "ticket", "show", ref, "--json")
    assert RAW_CONTROL.search(shown) is None
    assert b"CUPS hangs\\u009b2J\\u009d0;pwned\\u0007 \\u202egnp.exe" in shown
    assert json.loads(shown)["history"][0]["reason"] == HOSTILE
    table = raw_cli(d, "ticket", "show", ref)
    assert RAW_CONTROL.search(table) is None
    assert b"CUPS hangs\\u009b2J" in table
