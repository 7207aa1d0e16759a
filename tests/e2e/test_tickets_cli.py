"""The ticket walkthrough with the `secondline` CLI against a real `secondline serve`, with a
really enrolled and connected `secondline-agent`."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.broker import BrokerProcess, CliResult, cli_env, secondline
from tests.support.processes import stop_process
from tests.support.site import agent_cli, ok

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]


@pytest.fixture
async def web01(broker: BrokerProcess, tmp_path: Path) -> AsyncIterator[Path]:
    """Agent web01 of acme: enrolled with a token from `secondline token create`, running."""
    d = broker.data_dir
    ok(secondline("customer", "add", "acme", data_dir=d))
    ok(secondline("customer", "add", "globex", data_dir=d))
    token = ok(
        secondline("token", "create", "--customer", "acme", "--consent", "unattended", data_dir=d)
    )
    state = tmp_path / "agent-web01"
    ok(agent_cli(state, "enroll", broker.url, token, "--name", "web01"))
    mark = len(broker.output)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent",
        "run",
        "--state-dir",
        str(state),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env=cli_env(state),
    )
    try:
        await broker.wait_for_line(rb"agent ag-[a-z0-9]{16} \(web01\) online", mark)
        yield state
    finally:
        await stop_process(process, signal.SIGTERM, 30)


def staff(d: Path, name: str, role: str, customer: str) -> str:
    ok(secondline("user", "add", name, "--role", role, "--customer", customer, data_dir=d))
    return ok(secondline("user", "token", name, data_dir=d))


async def test_ticket_walkthrough(broker: BrokerProcess, web01: Path) -> None:
    """Level 1 creates and escalates; level 2 takes it; the session check answers each person
    with the rules' reason; show --json carries the history."""
    d = broker.data_dir
    lena = staff(d, "lena", "level1", "acme")
    bob = staff(d, "bob", "level2", "acme")
    gina = staff(d, "gina", "level2", "globex")

    def as_(token: str, *args: str) -> CliResult:
        return secondline("--token", token, *args, data_dir=d)

    ref = ok(
        as_(
            lena,
            "ticket",
            "create",
            "--title",
            "Printer down",
            "--customer",
            "acme",
            "--agent",
            "web01",
            "--description",
            "Jams on every page.",
        )
    )
    assert ref == "T-1001"
    escalated = as_(lena, "ticket", "escalate", ref, "--to", "2", "--reason", "needs a shell")
    assert "level" in ok(escalated)
    refused = as_(lena, "ticket", "escalate", ref, "--to", "3", "--reason", "again")
    assert refused.code == 1
    assert "level-2 staff handle it" in refused.err
    ok(as_(bob, "ticket", "take", ref))

    allowed = as_(bob, "ticket", "session-check", ref)
    assert allowed.code == 0
    assert "allowed" in allowed.out
    checked = as_(bob, "ticket", "session-check", ref, "--agent", "web01", "--json").json()
    assert isinstance(checked, dict)
    assert checked["allowed"] is True
    low = as_(lena, "ticket", "session-check", ref, "--json")
    assert low.code == 1
    assert low.json()["code"] == "level_too_low"  # type: ignore[index]
    assert "you work at level 1" in low.json()["reason"]  # type: ignore[index]
    other = as_(gina, "ticket", "session-check", ref)
    assert other.code == 1
    assert f"there is no ticket {ref} that you may see" in other.err

    ok(as_(bob, "ticket", "note", ref, "Cleaned the fuser; testing."))
    ok(as_(bob, "ticket", "resolve", ref, "--solution", "Replaced the fuser unit."))
    for token in (bob, lena):
        after = as_(token, "ticket", "session-check", ref, "--json")
        assert after.code == 1
        assert after.json()["code"] == "ticket_not_open"  # type: ignore[index]
        assert "resolved; reopen it first" in after.json()["reason"]  # type: ignore[index]

    shown = as_(bob, "ticket", "show", ref, "--json").json()
    assert isinstance(shown, dict)
    assert (shown["status"], shown["level"], shown["assignee"]) == ("resolved", 2, "bob")
    [step] = shown["history"]
    assert (step["kind"], step["from_level"], step["to_level"]) == ("escalate", 1, 2)
    assert (step["actor"], step["reason"]) == ("lena", "needs a shell")
    assert step["at"]
    assert [n["text"] for n in shown["notes"]] == ["Cleaned the fuser; testing."]
    assert [a["name"] for a in shown["linked_agents"]] == ["web01"]
    assert shown["sessions"] == []
    assert shown["solution"] == "Replaced the fuser unit."
    human = ok(as_(bob, "ticket", "show", ref))
    assert "lena escalated 1 -> 2: needs a shell" in human
    assert "web01" in human

    # The rest of the commands, on the same ticket: back to work, down to level 1, and done.
    assert "open" in ok(as_(bob, "ticket", "reopen", ref))
    ok(as_(bob, "ticket", "hand-back", ref, "--to", "1", "--reason", "user training left"))
    ok(secondline("ticket", "assign", ref, "lena", data_dir=d))
    ok(as_(lena, "ticket", "link", ref, "web01"))
    ok(as_(lena, "ticket", "pending", ref))
    again = as_(lena, "ticket", "open", ref)
    assert again.code == 1
    assert "pending; resume it instead" in again.err
    ok(as_(lena, "ticket", "resume", ref))
    ok(as_(lena, "ticket", "note", ref, "Showed Ann the tray.", "--public"))
    ok(as_(lena, "ticket", "resolve", ref, "--solution", "Fuser replaced; user trained."))
    closed = as_(lena, "ticket", "close", ref, "--json").json()
    assert isinstance(closed, dict)
    assert (closed["status"], closed["level"], closed["assignee"]) == ("closed", 1, "lena")
    final = as_(lena, "ticket", "show", ref, "--json").json()
    assert isinstance(final, dict)
    assert [h["kind"] for h in final["history"]] == ["escalate", "hand_back"]
    assert [n["internal"] for n in final["notes"]] == [True, False]

    listed = as_(lena, "ticket", "list", "--level", "1", "--json").json()
    assert isinstance(listed, list)
    assert [t["id"] for t in listed] == [ref]
    assert as_(gina, "ticket", "list", "--json").json() == []
    audit = ok(secondline("audit", "list", "--action", "ticket.escalate", "--json", data_dir=d))
    assert '"denied"' in audit
    assert '"ok"' in audit


async def test_end_user_help_opens_a_ticket(broker: BrokerProcess, web01: Path) -> None:
    """`secondline-agent help` opens a level-1 ticket of the agent's customer, agent linked."""
    d = broker.data_dir
    said = agent_cli(web01, "help", "Mail does not arrive")
    assert said.code == 0, said.err
    assert "T-1001" in said.out
    shown = secondline("ticket", "show", "T-1001", "--json", data_dir=d).json()
    assert isinstance(shown, dict)
    assert (shown["level"], shown["customer"], shown["agents"]) == (1, "acme", ["web01"])
    assert shown["title"] == "Help request from web01: Mail does not arrive"
    assert "--- machine web01 ---" in shown["description"]


def test_cli_refuses_bad_ids_and_options(tmp_path: Path) -> None:
    """Malformed ticket ids and levels are refused locally with a sentence, exit non-zero."""
    env = {**cli_env(tmp_path), "SECONDLINE_URL": "https://127.0.0.1:9", "SECONDLINE_TOKEN": "x"}
    bad = secondline("ticket", "show", "T-01", env=env)
    assert bad.code == 1
    assert "invalid ticket id" in bad.err
    level = secondline("ticket", "escalate", "T-1", "--to", "4", "--reason", "x", env=env)
    assert level.code == 2
    assert "invalid choice" in level.err
    assert os.environ.get("SECONDLINE_TOKEN") != "x"
