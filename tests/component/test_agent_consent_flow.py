"""Component tests of attended consent and of ending sessions through the control socket."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest

from agent.consent import ConsentRequest, Decision
from agent.control import ControlRequest, call_agent
from agent.errors import ControlError
from agent.protocol import END_BY_USER_MESSAGE, ConsentAnswer
from agent.runner import AgentRunner
from agent.state import StatePaths
from tests.component.test_agent_harness import (
    WAIT,
    read_until,
    session_env,
    tunnelled_agent,
    wait_gone,
)
from tests.support.processes import communicate

SESSION = "s-" + "B" * 22


@dataclass
class Attended:
    paths: StatePaths
    agent: AgentRunner
    conn: asyncssh.SSHClientConnection
    requests: asyncio.Queue[ConsentRequest]
    decisions: asyncio.Queue[Decision]


async def _attended(tmp_path: Path, consent_timeout: float) -> AsyncIterator[Attended]:
    config = f'shell = "/bin/bash"\nconsent_timeout_seconds = {consent_timeout}\n'
    async with tunnelled_agent(tmp_path, consent="attended", config_toml=config) as t:
        requests: asyncio.Queue[ConsentRequest] = asyncio.Queue()
        decisions: asyncio.Queue[Decision] = asyncio.Queue()

        def sort(event: ConsentRequest | Decision) -> None:
            if isinstance(event, ConsentRequest):
                requests.put_nowait(event)
            else:
                decisions.put_nowait(event)

        t.agent.consent.add_listener(sort)
        yield Attended(t.paths, t.agent, t.conn, requests, decisions)


@pytest.fixture
async def attended(tmp_path: Path) -> AsyncIterator[Attended]:
    async for value in _attended(tmp_path, consent_timeout=60):
        yield value


@pytest.fixture
async def attended_quick_timeout(tmp_path: Path) -> AsyncIterator[Attended]:
    async for value in _attended(tmp_path, consent_timeout=0.05):
        yield value


async def _control(paths: StatePaths, op: str, session: str | None = None) -> dict[str, object]:
    request = ControlRequest(op, session)  # type: ignore[arg-type]
    return await asyncio.to_thread(call_agent, paths.control_sock, request)


async def _ask(setup: Attended) -> asyncssh.SSHClientProcess[bytes]:
    process = await setup.conn.create_process("sl:consent", env=session_env(SESSION), encoding=None)
    async with asyncio.timeout(WAIT):
        request = await setup.requests.get()
    assert request.env.session == SESSION
    return process


async def _answer(process: asyncssh.SSHClientProcess[bytes]) -> tuple[ConsentAnswer, int | None]:
    async with asyncio.timeout(WAIT):
        output = await process.stdout.read()
        result = await process.wait()
    return ConsentAnswer.parse(output), result.exit_status


async def test_shell_refused_before_approval(attended: Attended) -> None:
    """On an attended agent a command without an approval is refused."""
    with pytest.raises(asyncssh.ChannelOpenError):
        await attended.conn.create_process("true", env=session_env(SESSION))


async def test_approve_through_control_socket_lets_the_session_start(attended: Attended) -> None:
    """`approve` answers the waiting sl:consent with approved, and commands may then run."""
    process = await _ask(attended)
    listed = await _control(attended.paths, "sessions")
    pending = listed["pending"]
    assert isinstance(pending, list)
    assert [item["session"] for item in pending] == [SESSION]
    result = await _control(attended.paths, "approve", SESSION)
    assert result["decision"] == "approved"
    answer, status = await _answer(process)
    assert (answer.decision, status) == ("approved", 0)
    assert answer.by is not None
    async with asyncio.timeout(WAIT):
        run = await attended.conn.run("echo ok", env=session_env(SESSION), encoding=None)
    assert run.stdout == b"ok\n"


async def test_deny_refuses_the_session(attended: Attended) -> None:
    """`deny` answers denied with exit 1, and the session's commands stay refused."""
    process = await _ask(attended)
    await _control(attended.paths, "deny", SESSION)
    answer, status = await _answer(process)
    assert (answer.decision, status) == ("denied", 1)
    with pytest.raises(asyncssh.ChannelOpenError):
        await attended.conn.create_process("true", env=session_env(SESSION))


async def test_no_answer_times_out(attended_quick_timeout: Attended) -> None:
    """Without an answer within consent_timeout_seconds the request is a timeout."""
    process = await _ask(attended_quick_timeout)
    answer, status = await _answer(process)
    assert (answer.decision, answer.by, status) == ("timeout", None, 1)


async def test_approving_an_unknown_request_says_what_to_do(attended: Attended) -> None:
    """Approving a session nobody asked for is refused with a sentence naming `sessions`."""
    with pytest.raises(ControlError, match="secondline-agent sessions"):
        await _control(attended.paths, "approve", SESSION)


async def test_cli_approve_in_a_real_process(attended: Attended) -> None:
    """`secondline-agent approve` run as a process approves the waiting request."""
    process = await _ask(attended)
    cli = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent",
        "approve",
        SESSION,
        "--state-dir",
        str(attended.paths.root),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await communicate(cli, WAIT)
    assert cli.returncode == 0, err
    assert out.decode().strip() == f"session {SESSION}: alice (owner) approved"
    answer, _ = await _answer(process)
    assert answer.decision == "approved"


async def test_end_closes_the_channel_with_term_and_kills_the_shell(attended: Attended) -> None:
    """`end` closes the session's channel with exit signal TERM and the shell dies."""
    process = await _ask(attended)
    await _control(attended.paths, "approve", SESSION)
    await _answer(process)
    shell = await attended.conn.create_process(
        term_type="xterm", env=session_env(SESSION), encoding=None
    )
    seen = bytearray()
    await read_until(shell.stdout, b"\x1b]133;B\x07", seen)
    shell.stdin.write(b"printf 'P%sD\\n' $$\n")
    out = await read_until(shell.stdout, b"D\r\n", seen)
    match = re.search(rb"P([0-9]+)D\r\n", out)
    assert match is not None
    pid = int(match.group(1))
    live = (await _control(attended.paths, "sessions"))["live"]
    assert isinstance(live, list)
    assert [item["session"] for item in live] == [SESSION]
    result = await _control(attended.paths, "end", SESSION)
    assert result["ended"] == 1
    async with asyncio.timeout(WAIT):
        completed = await shell.wait()
    assert completed.exit_signal is not None
    assert completed.exit_signal[:3] == ("TERM", False, END_BY_USER_MESSAGE)
    await wait_gone(pid)
    records = attended.paths.sessions_log.read_text()
    assert '"ended_by":"end_user"' in records
