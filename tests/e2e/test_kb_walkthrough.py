"""From a solved ticket to a published article that level 1 finds, against a real
`secondline serve` process over HTTPS, on SQLite and PostgreSQL.

The ticket is created, escalated and resolved through the real ticket CLI and API. The
recorded session and the machine it ran on are written into the sessions and agents tables
as the session recorder and enrollment write them: driving a live agent and SSH session is
the sessions engineer's end-to-end test, and what the knowledge base reads is those rows.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from sqlalchemy import select

from broker.cli.client import ApiClient, Connection
from broker.config import load_config
from broker.db.engine import create_engine, session_factory
from broker.db.models_agents import Agent
from broker.db.models_sessions import RemoteSession
from broker.db.models_staff import Customer
from broker.db.models_tickets import TicketAgent
from tests.support.broker import BrokerProcess, secondline

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

SESSION_ID = "s-" + "K" * 11 + "b" * 11
AGENT_ID = "ag-" + "p" * 16


def run(data_dir: Path, *args: str, token: str | None = None) -> str:
    extra = ("--token", token) if token else ()
    result = secondline(*extra, *args, data_dir=data_dir)
    assert result.code == 0, (args, result.err)
    return result.out.strip()


def client(broker: BrokerProcess, token: str) -> ApiClient:
    cert = str(load_config(broker.data_dir, env={}).tls_cert_path)
    return ApiClient(Connection(broker.url, token, cert))


async def record_session(data_dir: Path, ticket: int) -> None:
    """The machine and the recorded session of the ticket, as enrollment and the recorder
    leave them in the database."""
    config = load_config(data_dir, env={})
    engine = create_engine(config.db_url, schema=config.database_schema or None)
    now = dt.datetime.now(dt.UTC)
    try:
        async with session_factory(engine)() as db, db.begin():
            customer = (
                await db.execute(select(Customer.id).where(Customer.name == "acme"))
            ).scalar_one()
            db.add(
                Agent(
                    id=AGENT_ID,
                    name="print01",
                    customer_id=customer,
                    labels={},
                    facts={
                        "hostname": "print01",
                        "os": "Debian GNU/Linux",
                        "os_version": "12",
                        "kernel": "6.1.0-18-amd64",
                        "arch": "x86_64",
                        "users": ["root"],
                    },
                    consent="unattended",
                    public_key="ssh-ed25519 AAAAe2e",
                    key_fingerprint="SHA256:e2e-print01",
                    enrolled_with="tok",
                    enrolled_at=now,
                )
            )
            await db.flush()
            db.add(TicketAgent(ticket_id=ticket, agent_id=AGENT_ID, linked_by="max", linked_at=now))
            db.add(
                RemoteSession(
                    id=SESSION_ID,
                    ticket_id=ticket,
                    customer="acme",
                    agent_id=AGENT_ID,
                    agent_name="print01",
                    owner="max",
                    owner_level=2,
                    kind="shell",
                    via="ssh",
                    state="ended",
                    created_at=now,
                    started_at=now,
                    ended_at=now,
                    exit_status=0,
                    commands=[
                        {
                            "command_line": "lpstat -t",
                            "start": 1.0,
                            "duration": 0.2,
                            "exit_status": 0,
                        },
                        {
                            "command_line": "cupsenable HP_2OG",
                            "start": 3.0,
                            "duration": 0.1,
                            "exit_status": 1,
                        },
                        {
                            "command_line": "apt-get install --reinstall cups-filters",
                            "start": 5.0,
                            "duration": 9.0,
                            "exit_status": 0,
                        },
                        {
                            "command_line": "systemctl restart cups",
                            "start": 20.0,
                            "duration": 1.0,
                            "exit_status": 0,
                        },
                    ],
                )
            )
    finally:
        await engine.dispose()


async def test_solved_ticket_becomes_an_article_level1_finds(broker: BrokerProcess) -> None:
    """A ticket solved in a recorded session is written up from the pre-filled draft and
    published; new tickets with the same symptoms in other words, in English and German,
    get the article among the top three suggestions; level 1 finds it with `kb search`."""
    d = broker.data_dir
    run(d, "customer", "add", "acme")
    run(d, "user", "add", "lena", "--role", "level1", "--customer", "acme")
    run(d, "user", "add", "max", "--role", "level2", "--customer", "acme")
    lena = run(d, "user", "token", "lena")
    max_ = run(d, "user", "token", "max")

    # Two unrelated published articles, so the ranking has something to beat.
    as_max = client(broker, max_)
    for title, problem, solution in (
        ("Outlook hangs on start", "Outlook freezes at the splash screen", "Start outlook /safe"),
        ("VPN drops every hour", "The VPN disconnects hourly", "Lower the MTU to 1400"),
    ):
        other = as_max.request(
            "POST", "/kb/articles", {"title": title, "problem": problem, "solution": solution}
        )
        assert isinstance(other, dict)
        as_max.request("POST", f"/kb/articles/{other['id']}/publish")

    ticket = run(
        d,
        "ticket",
        "create",
        "--title",
        "Drucker im 2. OG druckt nicht",
        "--customer",
        "acme",
        "--description",
        "Seit heute morgen bleiben alle Druckaufträge in der Warteschlange hängen; "
        "the queue says 'Filter failed'.",
        token=lena,
    )
    run(
        d,
        "ticket",
        "escalate",
        ticket,
        "--to",
        "2",
        "--reason",
        "needs root on the print server",
        token=lena,
    )
    await record_session(d, int(ticket.removeprefix("T-")))
    run(
        d,
        "ticket",
        "resolve",
        ticket,
        "--solution",
        "The cups-filters package was damaged by an interrupted upgrade; reinstalled it "
        "and restarted CUPS, the queue printed.",
        token=max_,
    )

    draft = as_max.request("POST", "/kb/drafts", {"ticket": ticket})
    assert isinstance(draft, dict)
    assert draft["environment"] == "Debian GNU/Linux 12 (kernel 6.1.0-18-amd64, x86_64)"
    assert [c["command"] for c in draft["commands"]] == [
        "lpstat -t",
        "apt-get install --reinstall cups-filters",
        "systemctl restart cups",
    ]
    assert {"kind": "session", "ref": SESSION_ID} in draft["sources"]
    article = as_max.request(
        "PATCH",
        f"/kb/articles/{draft['id']}",
        {
            "title": "Print queue stuck, 'Filter failed' (cups-filters broken)",
            "cause": "An interrupted upgrade left cups-filters half installed.",
            "tags": ["printing", "cups"],
            "base_version": draft["version"],
        },
    )
    assert isinstance(article, dict)
    refused = secondline("--token", lena, "kb", "publish", article["ref"], data_dir=d)
    assert refused.code != 0
    assert "level-1 staff do not publish" in refused.err
    published = json.loads(run(d, "kb", "publish", article["ref"], "--json", token=max_))
    assert published["status"] == "published"
    assert published["reviewer"] == "max"

    english = run(
        d,
        "ticket",
        "create",
        "--title",
        "Printer not printing",
        "--customer",
        "acme",
        "--description",
        "Print jobs are stuck in the printer queue, filter failure",
        token=lena,
    )
    german = run(
        d,
        "ticket",
        "create",
        "--title",
        "Netzwerkdrucker reagiert nicht",
        "--customer",
        "acme",
        "--description",
        "Mein Druckauftrag hängt in der Druckerwarteschlange fest.",
        token=lena,
    )
    as_lena = client(broker, lena)
    for new in (english, german):
        suggestions = as_lena.request("GET", f"/kb/suggestions?ticket={new}")
        assert isinstance(suggestions, dict)
        top = [a["ref"] for a in suggestions["articles"][:3]]
        assert article["ref"] in top, (new, suggestions)
        assert ticket in [t["ref"] for t in suggestions["tickets"]]
    solved = as_lena.request("POST", f"/kb/articles/{article['id']}/solved", {"ticket": german})
    assert isinstance(solved, dict)
    assert solved["article"]["solved_count"] == 1

    found = json.loads(run(d, "kb", "search", "queue stuck filter failed", "--json", token=lena))
    assert found["results"][0]["ref"] == article["ref"]
    text = run(d, "kb", "search", "Drucker Warteschlange", "--os", "debian", token=lena)
    assert text.splitlines()[0].startswith(article["ref"])
    assert "[" in text
    shown = json.loads(run(d, "kb", "show", article["ref"], "--json", token=lena))
    assert shown["solved_count"] == 1
    exported = run(d, "kb", "export", article["ref"], token=lena)
    assert exported.startswith("# Print queue stuck")
    assert "$ systemctl restart cups  # exit 0" in exported
