"""Interactive shells through the gateway to the real agent SSH server: commands and their
exit status, hidden passwords, consent, the agent going away, kills and limits."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from broker.keys import public_pem
from broker.transcript import load_public_key, transcript_paths, verify_transcript
from tests.component.test_sessions_harness import WAIT, World, world

pytestmark = [
    pytest.mark.postgres,
    # broker.agents.tokens (another part, in progress) still calls Result.tuples().
    pytest.mark.filterwarnings("ignore:The Result.tuples:DeprecationWarning"),
]


class Shell:
    """An interactive session seen from the staff member's asyncssh client."""

    def __init__(self, process: asyncssh.SSHClientProcess[bytes]) -> None:
        self.process = process
        self.out = bytearray()
        self.err = bytearray()

    async def expect(self, pattern: bytes) -> None:
        async with asyncio.timeout(WAIT):
            while pattern not in self.out:
                chunk = await self.process.stdout.read(65536)
                if not chunk:
                    raise AssertionError(f"EOF before {pattern!r}: {bytes(self.out)[-300:]!r}")
                self.out += chunk

    async def expect_err(self, pattern: bytes) -> None:
        async with asyncio.timeout(WAIT):
            while pattern not in self.err:
                chunk = await self.process.stderr.read(65536)
                if not chunk:
                    raise AssertionError(f"EOF before {pattern!r}: {bytes(self.err)!r}")
                self.err += chunk

    def type(self, text: str) -> None:
        self.process.stdin.write(text.encode())

    async def finish(self) -> int | None:
        async with asyncio.timeout(WAIT):
            self.out += await self.process.stdout.read()
            self.err += await self.process.stderr.read()
            await self.process.wait()
        return self.process.exit_status


async def open_shell(conn: asyncssh.SSHClientConnection) -> Shell:
    process = await conn.create_process(
        term_type="xterm-256color", term_size=(100, 30), encoding=None
    )
    return Shell(process)


async def session_of(w: World, ref: str) -> dict[str, Any]:
    _, sessions = await w.call("GET", f"/sessions?ticket={ref}", expect=200)
    assert sessions, "no session recorded"
    _, detail = await w.call("GET", f"/sessions/{sessions[0]['id']}", expect=200)
    return dict(detail)


async def wait_state(w: World, ref: str, *states: str) -> dict[str, Any]:
    found: dict[str, Any] = {}

    async def ended() -> bool:
        _, sessions = await w.call("GET", f"/sessions?ticket={ref}", expect=200)
        if sessions and sessions[0]["state"] in states:
            found.update(await session_of(w, ref))
            return True
        return False

    await w.wait_for(ended, f"a session in state {states}")
    return found


def verify(w: World, session_id: str) -> tuple[str, str | None]:
    key = load_public_key(public_pem(w.services.keys.transcript_key))
    paths = transcript_paths(w.services.config.transcripts_dir, session_id)
    result = verify_transcript(paths.cast, key, paths.seal, paths.chain)
    return result.status, result.seal.end_reason if result.seal else None


async def test_shell_lists_commands_with_exit_status(data_dir: Path, tmp_path: Path) -> None:
    """Two commands in a PTY shell are in the session's command list with their status."""
    async with world(data_dir, tmp_path) as w:
        async with await w.ssh() as conn:
            shell = await open_shell(conn)
            shell.type("echo one-$((0+1))\n")
            await shell.expect(b"one-1")
            shell.process.change_terminal_size(120, 40)
            shell.type("false\n")
            shell.type("exit\n")
            assert await shell.finish() == 1
        detail = await wait_state(w, w.ticket, "ended")
        commands = [(c["command"], c["exit_status"]) for c in detail["commands"]]
        assert commands == [("echo one-$((0+1))", 0), ("false", 1), ("exit", 1)]
        assert detail["participants"][0]["role"] == "owner"
        assert verify(w, detail["id"]) == ("valid", "ended")
        cast = transcript_paths(w.services.config.transcripts_dir, detail["id"]).cast
        assert '"r", "120x40"' in cast.read_text()


async def test_password_at_read_s_is_not_recorded(data_dir: Path, tmp_path: Path) -> None:
    """What is typed while the terminal does not echo is kept out of transcript and note."""
    async with world(data_dir, tmp_path) as w:
        async with await w.ssh() as conn:
            shell = await open_shell(conn)
            # The prompt is built at run time, so its echo cannot match before it is shown.
            shell.type('w=word; read -s -p "Pass$w: " pw; echo "length ${#pw}"\n')
            await shell.expect(b"Password: ")
            shell.type("hunter2-secret\n")
            await shell.expect(b"length 14")
            shell.type("exit 0\n")
            assert await shell.finish() == 0
        detail = await wait_state(w, w.ticket, "ended")
        cast = transcript_paths(w.services.config.transcripts_dir, detail["id"]).cast
        recorded = cast.read_text()
        assert "hunter2" not in recorded
        assert "input hidden (echo off)" in recorded
        _, ticket = await w.call("GET", f"/tickets/{w.ticket}", expect=200)
        assert all("hunter2" not in n["text"] for n in ticket["notes"])
        assert verify(w, detail["id"])[0] == "valid"


async def test_attended_agent_waits_for_approval(data_dir: Path, tmp_path: Path) -> None:
    """Nothing runs before the end user approves; the staff member is told they wait."""
    async with world(data_dir, tmp_path, attended=True) as w:
        assert w.agent is not None
        async with await w.ssh() as conn:
            shell = await open_shell(conn)
            request = await w.agent.next_request()
            await shell.expect_err(b"waiting for the end user's approval")
            assert request.env.staff == "bob"
            assert request.env.ticket == w.ticket
            assert shell.out == b""
            _, live = await w.call("GET", "/sessions?live=1", expect=200)
            assert live[0]["state"] == "waiting_consent"
            w.agent.consent.decide(request.key, approved=True, by="alice")
            shell.type("echo approved-$((40+2))\n")
            await shell.expect(b"approved-42")
            shell.type("exit\n")
            assert await shell.finish() == 0
        detail = await wait_state(w, w.ticket, "ended")
        assert (detail["consent"], detail["consent_by"]) == ("approved", "alice")
        _, audit = await w.call("GET", "/audit?limit=200", expect=200)
        consent = [e for e in audit if e["action"] == "session.consent"]
        assert consent[0]["details"]["decision"] == "approved"


@pytest.mark.parametrize("answer", ["deny", "timeout"])
async def test_denied_or_unanswered_consent_refuses(
    data_dir: Path, tmp_path: Path, answer: str
) -> None:
    """A denial or no answer in time refuses the session with the reason, exit 255."""
    async with world(data_dir, tmp_path, attended=True) as w:
        assert w.agent is not None
        if answer == "timeout":
            await w.agent.close()
            w.agent = await w.enroll("web02", attended=True)
            w.agent.consent.book.timeout = 0.3
            w.ticket = await w.new_ticket(w.agent)
        async with await w.ssh() as conn:
            shell = await open_shell(conn)
            request = await w.agent.next_request()
            if answer == "deny":
                w.agent.consent.decide(request.key, approved=False, by="alice")
            assert await shell.finish() == 255
        expected = b"denied the session" if answer == "deny" else b"did not answer in time"
        assert expected in shell.err
        assert shell.out == b""
        detail = await wait_state(w, w.ticket, "refused")
        assert detail["consent"] == ("denied" if answer == "deny" else "timeout")
        assert detail["started_at"] is None


async def test_agent_disconnect_ends_the_session(data_dir: Path, tmp_path: Path) -> None:
    """An agent that goes away ends the session as "agent disconnected", sealed and noted."""
    async with world(data_dir, tmp_path) as w:
        assert w.agent is not None
        async with await w.ssh() as conn:
            shell = await open_shell(conn)
            shell.type("echo ready-$((1+1))\n")
            await shell.expect(b"ready-2")
            await w.agent.close()
            assert await shell.finish() == 255
        assert b"the agent disconnected" in shell.err
        detail = await wait_state(w, w.ticket, "ended")
        assert detail["end_reason"] == "agent disconnected"
        assert verify(w, detail["id"]) == ("valid", "agent disconnected")

        async def noted() -> bool:
            _, t = await w.call("GET", f"/tickets/{w.ticket}", expect=200)
            return any("agent disconnected" in n["text"] for n in t["notes"])

        await w.wait_for(noted, "the note")


@pytest.mark.serial
async def test_kill_ends_within_two_seconds_and_seals(data_dir: Path, tmp_path: Path) -> None:
    """An admin's kill ends a busy session at once; the transcript is sealed as killed."""
    async with world(data_dir, tmp_path) as w:
        async with await w.ssh() as conn:
            shell = await open_shell(conn)
            shell.type("echo started-$((2+2)); sleep 600\n")
            await shell.expect(b"started-4")
            _, live = await w.call("GET", "/sessions?live=1", expect=200)
            sid = live[0]["id"]
            begun = time.monotonic()
            _, killed = await w.call("POST", f"/sessions/{sid}/kill", expect=200)
            assert time.monotonic() - begun < 2.0
            assert killed["state"] == "ended"
            assert await shell.finish() == 255
        assert b"ended by admin" in shell.err
        assert verify(w, sid) == ("valid", "killed")
        await w.call("POST", f"/sessions/{sid}/kill", expect=409)


async def test_session_limit_per_staff(data_dir: Path, tmp_path: Path) -> None:
    """A staff member at the session limit is refused another, with the limit named."""
    env = {"SECONDLINE_MAX_SESSIONS_PER_STAFF": "1"}
    async with world(data_dir, tmp_path, env=env) as w, await w.ssh() as conn:
        first = await open_shell(conn)
        first.type("echo one-$((0+1))\n")
        await first.expect(b"one-1")
        second = await open_shell(conn)
        assert await second.finish() == 255
        assert b"the limit is 1" in second.err
        first.type("exit\n")
        assert await first.finish() == 0


async def test_idle_session_ends(data_dir: Path, tmp_path: Path) -> None:
    """A session without input or output for the idle timeout ends and says why."""
    env = {"SECONDLINE_SESSION_IDLE_TIMEOUT_SECONDS": "1"}
    async with world(data_dir, tmp_path, env=env) as w:
        async with await w.ssh() as conn:
            shell = await open_shell(conn)
            assert await shell.finish() == 255
        assert b"idle too long" in shell.err
        detail = await wait_state(w, w.ticket, "ended")
        assert detail["end_reason"] == "idle timeout"


async def test_kill_while_waiting_for_consent(data_dir: Path, tmp_path: Path) -> None:
    """A session still waiting for the end user can be ended; it never starts."""
    async with world(data_dir, tmp_path, attended=True) as w:
        assert w.agent is not None
        async with await w.ssh() as conn:
            shell = await open_shell(conn)
            request = await w.agent.next_request()
            await w.call("POST", f"/sessions/{request.env.session}/kill", expect=200)
            assert await shell.finish() == 255
        assert b"ended by admin before it started" in shell.err
        detail = await wait_state(w, w.ticket, "refused")
        assert detail["started_at"] is None
