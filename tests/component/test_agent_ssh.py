"""Component tests of the agent's SSH server over a real tunnel on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest

from agent.runner import AgentRunner
from tests.component.test_agent_harness import (
    WAIT,
    FakeBroker,
    enroll_state_dir,
    make_cert,
    read_until,
    runner_settings,
    running_agent,
    session_env,
    tunnelled_agent,
    wait_gone,
)


@dataclass
class Setup:
    broker: FakeBroker
    agent: AgentRunner
    conn: asyncssh.SSHClientConnection


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    async with tunnelled_agent(tmp_path) as t:
        yield Setup(t.broker, t.agent, t.conn)


async def test_shell_with_pty_shows_marks_and_exit_status(setup: Setup) -> None:
    """A PTY shell runs `echo hi`, prints the OSC 133/633 marks, and exits with status 3."""
    process = await setup.conn.create_process(
        term_type="xterm-256color", term_size=(80, 24), env=session_env(), encoding=None
    )
    seen = bytearray()
    await read_until(process.stdout, b"\x1b]133;B\x07", seen)
    process.stdin.write(b"echo hi\n")
    out = await read_until(process.stdout, b"\x1b]133;D;0\x07", seen)
    assert b"\x1b]633;E;echo hi\x07\x1b]133;C\x07" in out
    assert b"hi\r\n" in out
    process.stdin.write(b"exit 3\n")
    async with asyncio.timeout(WAIT):
        result = await process.wait()
    assert result.exit_status == 3


async def test_exec_without_pty_returns_status_and_separate_stderr(setup: Setup) -> None:
    """An exec without PTY returns exit status 3, stdout and stderr apart."""
    async with asyncio.timeout(WAIT):
        result = await setup.conn.run(
            "echo out; echo err >&2; exit 3", env=session_env(), encoding=None
        )
    assert result.exit_status == 3
    assert result.stdout == b"out\n"
    assert result.stderr == b"err\n"


async def test_facts_command_answers_json(setup: Setup) -> None:
    """`sl:facts` writes the machine's facts as JSON and exits 0."""
    from agent.facts import Facts

    async with asyncio.timeout(WAIT):
        result = await setup.conn.run("sl:facts", encoding=None)
    assert result.exit_status == 0
    assert isinstance(result.stdout, bytes)
    assert Facts.parse(result.stdout).hostname


async def test_consent_not_required_when_unattended(setup: Setup) -> None:
    """An unattended agent answers `sl:consent` with not_required at once."""
    from agent.protocol import ConsentAnswer

    async with asyncio.timeout(WAIT):
        result = await setup.conn.run("sl:consent", env=session_env(), encoding=None)
    assert result.exit_status == 0
    assert isinstance(result.stdout, bytes)
    assert ConsentAnswer.parse(result.stdout).decision == "not_required"


async def test_port_forwarding_is_refused(setup: Setup) -> None:
    """A direct-tcpip channel is refused as administratively prohibited."""
    with pytest.raises(asyncssh.ChannelOpenError) as info:
        await setup.conn.open_connection("127.0.0.1", 22)
    assert info.value.code == asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED


async def test_remote_forwarding_is_refused(setup: Setup) -> None:
    """A tcpip-forward request is refused."""
    with pytest.raises(asyncssh.ChannelListenError):
        await setup.conn.forward_remote_port("127.0.0.1", 0, "127.0.0.1", 22)


async def test_subsystems_other_than_sftp_and_sftp_without_env_are_refused(setup: Setup) -> None:
    """Only the sftp subsystem is served, and only with the session's SL_* environment."""
    with pytest.raises(asyncssh.ChannelOpenError, match="Session request failed"):
        await setup.conn.create_process(subsystem="netconf", env=session_env())
    with pytest.raises(asyncssh.ChannelOpenError, match="Session request failed"):
        await setup.conn.create_process(subsystem="sftp")


async def test_sftp_is_served_as_the_login_account(setup: Setup, tmp_path: Path) -> None:
    """With the session environment, sftp works: a file written arrives, owned by the login
    account (the agent's SFTP server is a process of that account)."""
    path = str(tmp_path / "sent.txt")
    async with (
        setup.conn.start_sftp_client(env=session_env()) as sftp,
        sftp.open(path, "w") as fh,
    ):
        await fh.write("arrived\n")
    assert (tmp_path / "sent.txt").read_text() == "arrived\n"
    assert (tmp_path / "sent.txt").stat().st_uid == os.getuid()


async def test_exec_without_session_env_is_refused(setup: Setup) -> None:
    """A command without the SL_* environment is refused."""
    with pytest.raises(asyncssh.ChannelOpenError, match="Session request failed"):
        await setup.conn.create_process("true")


async def test_x11_forwarding_is_refused(setup: Setup) -> None:
    """An X11 forwarding request on a session fails."""
    with pytest.raises(asyncssh.ChannelOpenError, match="X11 forwarding request failed"):
        await setup.conn.create_process(
            "true", env=session_env(), x11_forwarding=True, x11_display="127.0.0.1:0"
        )


async def test_closing_the_channel_kills_the_command(setup: Setup) -> None:
    """When the broker closes a channel, the command's whole session is killed."""
    process = await setup.conn.create_process(
        "sleep 1000 & echo $!; wait", env=session_env(), encoding=None
    )
    async with asyncio.timeout(WAIT):
        line = await process.stdout.readline()
    background = int(line)
    process.close()
    await wait_gone(background)


async def test_signal_reaches_the_command(setup: Setup) -> None:
    """A signal request interrupts the command, whose exit signal comes back."""
    process = await setup.conn.create_process(
        "echo ready; exec sleep 1000", env=session_env(), encoding=None
    )
    async with asyncio.timeout(WAIT):
        assert await process.stdout.readline() == b"ready\n"
        process.send_signal("INT")
        result = await process.wait()
    assert result.exit_signal is not None
    assert result.exit_signal[0] == "INT"


async def test_window_change_resizes_the_pty(setup: Setup) -> None:
    """A window-change request resizes the PTY the shell sees."""
    process = await setup.conn.create_process(
        term_type="xterm", term_size=(80, 24), env=session_env(), encoding=None
    )
    seen = bytearray()
    await read_until(process.stdout, b"\x1b]133;B\x07", seen)
    process.change_terminal_size(132, 43)
    process.stdin.write(b"stty size\n")
    await read_until(process.stdout, b"43 132\r\n", seen)
    process.close()


async def test_input_is_reported_out_of_band_with_the_echo_flag(setup: Setup) -> None:
    """Each piece of input is reported on the PTY channel's stderr with the ECHO flag read
    when it was written; what the session prints (a forged report on its stderr, the former
    in-band echo marker) reaches stdout only and changes no report."""
    from agent.input_reports import InputReportReader

    process = await setup.conn.create_process(
        "printf 'sl:input 99 on\\n' >&2; printf '\\033]6973;echo;on\\007'; "
        "stty -echo; echo ready-now; read a; stty echo; echo visible-now; read b; echo done",
        term_type="xterm",
        env=session_env(),
        encoding=None,
    )
    seen = bytearray()
    await read_until(process.stdout, b"ready-now", seen)
    process.stdin.write(b"hunter2\n")
    await read_until(process.stdout, b"visible-now", seen)
    process.stdin.write(b"shown\n")
    async with asyncio.timeout(WAIT):
        output = bytes(seen) + await process.stdout.read()
        reports, other = InputReportReader().feed(await process.stderr.read())
        await process.wait()
    assert b"sl:input 99 on" in output  # the forgery went to stdout, as printed
    assert other == b""
    flags = [flag for report in reports for flag in [report.echo] * report.count]
    assert flags == [False] * len(b"hunter2\n") + [True] * len(b"shown\n")
    assert b"hunter2" not in output
    assert output.index(b"shown") > output.index(b"visible-now")


async def test_exec_with_pty_returns_status(setup: Setup) -> None:
    """A command in a PTY returns its exit status and its output."""
    async with asyncio.timeout(WAIT):
        result = await setup.conn.run(
            "echo in-pty; exit 5", term_type="xterm", env=session_env(), encoding=None
        )
    assert result.exit_status == 5
    assert isinstance(result.stdout, bytes)
    assert b"in-pty\r\n" in result.stdout


async def test_stdin_and_eof_reach_the_command(setup: Setup) -> None:
    """Input and EOF from the client reach a command on pipes."""
    async with asyncio.timeout(WAIT):
        result = await setup.conn.run(
            "cat", input=b"line one\nline two\n", env=session_env(), encoding=None
        )
    assert result.stdout == b"line one\nline two\n"
    assert result.exit_status == 0


async def test_large_output_arrives_whole(setup: Setup) -> None:
    """Megabytes of output cross the tunnel intact, with flow control on both ends."""
    size = 24 * 1024 * 1024
    async with asyncio.timeout(WAIT):
        result = await setup.conn.run(
            f"head -c {size} /dev/urandom | tee /dev/stderr | sha256sum",
            env=session_env(),
            encoding=None,
        )
    assert isinstance(result.stderr, bytes)
    assert isinstance(result.stdout, bytes)
    assert len(result.stderr) == size
    assert result.stdout.split()[0].decode() == hashlib.sha256(result.stderr).hexdigest()


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another user needs root")
async def test_login_user_switch(tmp_path: Path) -> None:
    """With login_user set, commands run as that user, with its groups and environment."""
    config = 'login_user = "nobody"\nshell = "/bin/sh"\n'
    async with tunnelled_agent(tmp_path, config_toml=config) as t:
        async with asyncio.timeout(WAIT):
            result = await t.conn.run(
                'id -un; echo "$USER $SL_TICKET"; pwd', env=session_env(), encoding=None
            )
    assert result.stdout == b"nobody\nnobody T-1042\n/\n"


async def test_wrong_broker_key_is_refused(tmp_path: Path) -> None:
    """A client holding any key but the pinned broker key cannot log in."""
    cert = make_cert()
    agent_key = asyncssh.generate_private_key("ssh-ed25519")
    pinned = asyncssh.generate_private_key("ssh-ed25519")
    impostor = asyncssh.generate_private_key("ssh-ed25519")
    broker = FakeBroker(cert, impostor, agent_key.convert_to_public())
    async with broker.running(tmp_path):
        paths = enroll_state_dir(
            tmp_path / "state",
            tunnel_url=broker.tunnel_url,
            cert=cert,
            agent_key=agent_key,
            broker_key=pinned,
        )
        async with running_agent(runner_settings(paths, agent_key)) as agent:
            async with asyncio.timeout(WAIT):
                error = await broker.handshake_errors.get()
            assert isinstance(error, asyncssh.PermissionDenied)
            assert not agent.connected.is_set()
            assert broker.connections.empty()


# In CI (.ci/run installs zsh) a missing zsh fails the test instead of skipping it.
@pytest.mark.skipif(
    shutil.which("zsh") is None and not os.environ.get("CI"),
    reason="zsh is not installed on this machine",
)
async def test_zsh_shows_the_marks(tmp_path: Path) -> None:
    """A zsh login shell prints the same marks as bash, with the command line and status."""
    cert = make_cert()
    agent_key = asyncssh.generate_private_key("ssh-ed25519")
    broker_key = asyncssh.generate_private_key("ssh-ed25519")
    broker = FakeBroker(cert, broker_key, agent_key.convert_to_public())
    async with broker.running(tmp_path):
        paths = enroll_state_dir(
            tmp_path / "state",
            tunnel_url=broker.tunnel_url,
            cert=cert,
            agent_key=agent_key,
            broker_key=broker_key,
            config_toml=f'shell = "{shutil.which("zsh")}"\n',
        )
        async with running_agent(runner_settings(paths, agent_key)):
            conn = await broker.next_connection()
            process = await conn.create_process(term_type="xterm", env=session_env(), encoding=None)
            seen = bytearray()
            await read_until(process.stdout, b"\x1b]133;B\x07", seen)
            process.stdin.write(b"echo 'a;b'; false\n")
            out = await read_until(process.stdout, b"\x1b]133;D;1\x07", seen)
            assert b"\x1b]633;E;echo 'a\\x3bb'\\x3b false\x07\x1b]133;C\x07" in out
            process.stdin.write(b"exit 4\n")
            async with asyncio.timeout(WAIT):
                result = await process.wait()
            assert result.exit_status == 4
            conn.close()
