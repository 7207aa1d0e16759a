"""Real processes on loopback: `secondline serve`, the `secondline` CLI and real
`secondline-agent` processes enrolling, connecting, surviving a SIGKILLed broker, being
impersonated and revoked; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.support import site
from tests.support.broker import BrokerProcess, CliResult, cli_env, secondline, start_broker

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

TOKEN_RE = re.compile(r"^sle1\.[a-z0-9]{12}\.[A-Za-z0-9]{32}\.[0-9a-f]{64}$")


async def cli(data_dir: Path, *args: str) -> CliResult:
    """The admin CLI as a process (in a thread, so broker output keeps being read)."""
    return await asyncio.to_thread(secondline, *args, data_dir=data_dir)


async def agent_cli(state_dir: Path, *args: str) -> CliResult:
    """The agent CLI as a process (in a thread, so broker output keeps being read)."""
    return await asyncio.to_thread(site.agent_cli, state_dir, *args)


async def start_agent(state_dir: Path) -> BrokerProcess:
    """`secondline-agent run` as a process whose output lines can be awaited."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent", "run", "--state-dir", str(state_dir),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=cli_env(state_dir),
    )  # fmt: skip
    agent = BrokerProcess(state_dir, proc)
    agent.start_reading()
    return agent


async def agents_json(data_dir: Path) -> dict[str, dict[str, object]]:
    result = await cli(data_dir, "agent", "list", "--json")
    assert result.code == 0, result.err
    data = result.json()
    assert isinstance(data, list)
    return {str(a["name"]): a for a in data}


async def test_agents_enroll_connect_survive_a_broker_kill_and_are_revoked(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    """The whole life of an agent, with real processes and real TLS on loopback."""
    data_dir = broker.data_dir
    assert (await cli(data_dir, "customer", "add", "acme")).code == 0
    created = await cli(
        data_dir, "token", "create", "--customer", "acme", "--label", "env=prod",
        "--consent", "unattended",
    )  # fmt: skip
    assert created.code == 0, created.err
    token = created.out.strip()
    assert TOKEN_RE.fullmatch(token)

    web01 = tmp_path / "web01"
    enrolled = await agent_cli(web01, "enroll", broker.url, token, "--name", "web01")
    assert enrolled.code == 0, enrolled.err
    agent_id = json.loads((web01 / "state.json").read_text())["agent_id"]

    # The same single-use token again: refused with a clear message, nothing added.
    reused = await agent_cli(tmp_path / "web02", "enroll", broker.url, token, "--name", "web02")
    assert reused.code != 0
    assert "used already" in reused.err
    assert set(await agents_json(data_dir)) == {"web01"}

    agent = await start_agent(web01)
    try:
        await broker.wait_for_line(rb"agent %s \(web01\) online" % agent_id.encode())
        listed = (await agents_json(data_dir))["web01"]
        assert (listed["status"], listed["labels"]) == ("online", {"env": "prod"})
        facts = listed["facts"]
        assert isinstance(facts, dict)
        assert facts["hostname"]
        assert facts["kernel"]

        # SIGKILL the broker, start it again: the agent comes back by itself.
        assert await broker.stop(signal.SIGKILL) == -signal.SIGKILL
        restarted = await start_broker(data_dir)
        try:
            await restarted.wait_for_line(rb"agent %s \(web01\) online" % agent_id.encode())
            assert (await agents_json(data_dir))["web01"]["status"] == "online"

            # An enrolled agent claiming web01's id fails the host-key check.
            token2 = (await cli(data_dir, "token", "create", "--customer", "acme")).out.strip()
            mallory = tmp_path / "mallory"
            assert (
                await agent_cli(mallory, "enroll", broker.url, token2, "--name", "mallory")
            ).code == 0
            state = json.loads((mallory / "state.json").read_text())
            state["agent_id"] = agent_id
            (mallory / "state.json").write_text(json.dumps(state))
            impostor = await start_agent(mallory)
            try:
                await restarted.wait_for_line(
                    rb"tunnel of agent %s .* refused: the SSH host key is not" % agent_id.encode()
                )
            finally:
                await impostor.stop()
            assert (await agents_json(data_dir))["web01"]["status"] == "online"

            # Revocation closes the tunnel within 5 s; the agent's reconnects get 403.
            start = len(restarted.output)
            began = time.monotonic()
            revoked = await cli(data_dir, "agent", "revoke", "web01")
            assert revoked.code == 0, revoked.err
            await restarted.wait_for_line(
                rb"agent %s offline: the agent was revoked" % agent_id.encode(), start
            )
            assert time.monotonic() - began <= 5.0
            await agent.wait_for_line(rb"the broker refused this agent \(HTTP 403\)")
            assert (await agents_json(data_dir))["web01"]["status"] == "revoked"
            audit = await cli(data_dir, "audit", "list", "--json", "--action", "agent.tunnel")
            reasons = [e["details"]["reason"] for e in json.loads(audit.out)]
            assert "revoked agent" in reasons
        finally:
            await restarted.stop()
    finally:
        await agent.stop()
