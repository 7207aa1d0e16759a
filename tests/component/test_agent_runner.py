"""Component tests of `run`: reconnects, refusals, dead connections, status, a real process."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from pathlib import Path

import asyncssh
import pytest

from agent.state import StatePaths
from tests.component.test_agent_harness import (
    AGENT_ID,
    WAIT,
    FakeBroker,
    SelfSignedCert,
    enroll_state_dir,
    make_cert,
    runner_settings,
    running_agent,
    session_env,
    wait_status,
)
from tests.support.processes import communicate


class Keys:
    def __init__(self) -> None:
        self.cert = make_cert()
        self.agent = asyncssh.generate_private_key("ssh-ed25519")
        self.broker = asyncssh.generate_private_key("ssh-ed25519")

    def fake_broker(self, refuse_status: int | None = None) -> FakeBroker:
        return FakeBroker(self.cert, self.broker, self.agent.convert_to_public(), refuse_status)

    def state_dir(
        self, root: Path, tunnel_url: str, cert: SelfSignedCert | None = None
    ) -> StatePaths:
        return enroll_state_dir(
            root,
            tunnel_url=tunnel_url,
            cert=cert or self.cert,
            agent_key=self.agent,
            broker_key=self.broker,
        )


async def test_reconnects_after_the_broker_drops_the_connection(tmp_path: Path) -> None:
    """When the broker closes the tunnel, the agent dials again and serves again."""
    keys = Keys()
    broker = keys.fake_broker()
    async with broker.running(tmp_path):
        paths = keys.state_dir(tmp_path / "state", broker.tunnel_url)
        async with running_agent(runner_settings(paths, keys.agent)) as agent:
            first = await broker.next_connection()
            await wait_status(agent, lambda status: status["connected"] is True)
            first.close()
            second = await broker.next_connection()
            async with asyncio.timeout(WAIT):
                result = await second.run("sl:facts", encoding=None)
            assert result.exit_status == 0
            second.close()
    assert await broker.attempts.get() == AGENT_ID


async def test_a_dead_connection_is_detected_and_replaced(tmp_path: Path) -> None:
    """A broker that stops answering (no pongs) is given up, and the agent dials again."""
    keys = Keys()
    broker = keys.fake_broker()
    async with broker.running(tmp_path):
        paths = keys.state_dir(tmp_path / "state", broker.tunnel_url)
        settings = runner_settings(paths, keys.agent, ping_interval=0.05, ping_timeout=0.2)
        async with running_agent(settings):
            first = await broker.next_connection()
            broker.websockets[0].transport.pause_reading()  # the broker goes silent
            second = await broker.next_connection()
            assert second is not first
            second.close()
            first.abort()


async def test_revoked_agent_is_told_and_keeps_retrying(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """HTTP 403 on the upgrade is logged as a refusal and retried at the backoff cap."""
    keys = Keys()
    broker = keys.fake_broker(refuse_status=403)
    caplog.set_level(logging.INFO, logger="agent")
    async with broker.running(tmp_path):
        paths = keys.state_dir(tmp_path / "state", broker.tunnel_url)
        async with running_agent(runner_settings(paths, keys.agent)) as agent:
            async with asyncio.timeout(WAIT):
                assert await broker.attempts.get() == AGENT_ID
                assert await broker.attempts.get() == AGENT_ID  # it retried
            await wait_status(agent, lambda status: status["last_error"] is not None)
            status = agent.status()
            assert status["connected"] is False
            assert "refused this agent (HTTP 403)" in str(status["last_error"])
    assert any("enroll again" in record.getMessage() for record in caplog.records)


async def test_a_certificate_other_than_the_pinned_one_is_refused(tmp_path: Path) -> None:
    """A broker presenting a certificate other than broker.pem never gets the upgrade."""
    keys = Keys()
    broker = keys.fake_broker()
    async with broker.running(tmp_path):
        paths = keys.state_dir(tmp_path / "state", broker.tunnel_url, cert=make_cert())
        async with running_agent(runner_settings(paths, keys.agent)) as agent:
            await wait_status(agent, lambda status: status["last_error"] is not None)
            assert "does not match the pinned broker.pem" in str(agent.status()["last_error"])
    assert broker.attempts.empty()


async def test_status_json_follows_the_connection(tmp_path: Path) -> None:
    """status.json says connected while the tunnel is up and not running after stop."""
    keys = Keys()
    broker = keys.fake_broker()
    async with broker.running(tmp_path):
        paths = keys.state_dir(tmp_path / "state", broker.tunnel_url)
        async with running_agent(runner_settings(paths, keys.agent)) as agent:
            conn = await broker.next_connection()
            await wait_status(agent, lambda status: status["connected"] is True)
            written = json.loads(paths.status_json.read_text())
            assert (written["running"], written["connected"]) == (True, True)
            conn.close()
    written = json.loads(paths.status_json.read_text())
    assert (written["running"], written["connected"]) == (False, False)
    assert paths.status_json.stat().st_mode & 0o777 == 0o600
    assert not paths.control_sock.exists()


async def _cli(paths: StatePaths, *args: str) -> tuple[int | None, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent",
        *args,
        "--state-dir",
        str(paths.root),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await communicate(process, WAIT)
    return process.returncode, out.decode(), err.decode()


async def test_run_as_a_real_process(tmp_path: Path) -> None:
    """`secondline-agent run` connects, serves a command, answers `status`, and stops on TERM."""
    keys = Keys()
    broker = keys.fake_broker()
    async with broker.running(tmp_path):
        paths = keys.state_dir(tmp_path / "state", broker.tunnel_url)
        agent = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agent",
            "run",
            "--state-dir",
            str(paths.root),
            stdin=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            conn = await broker.next_connection()
            async with asyncio.timeout(WAIT):
                result = await conn.run("echo $SL_TICKET", env=session_env(), encoding=None)
            assert result.stdout == b"T-1042\n"
            code, out, _ = await _cli(paths, "status", "--json")
            assert code == 0
            status = json.loads(out)
            assert (status["running"], status["connected"]) == (True, True)
            code, out, _ = await _cli(paths, "status")
            assert "connected since" in out
            code, out, _ = await _cli(paths, "sessions")
            assert out.strip() == "no sessions are running or waiting for approval"
        finally:
            agent.send_signal(signal.SIGTERM)
            _, log = await communicate(agent, WAIT)
        assert agent.returncode == 0, log
        assert b"connected to the broker" in log
        conn.close()
    code, out, _ = await _cli(paths, "status")
    assert code == 0
    assert "not running" in out
    code, _, err = await _cli(paths, "sessions")
    assert code == 1
    assert err.startswith("secondline-agent: the agent is not running")
