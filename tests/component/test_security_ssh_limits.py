"""The SSH gateway's limits, each tried at the limit: sessions per connection, connections
still signing in (per source and overall) and the login timeout. They are settings of
``BrokerConfig`` (``ssh_max_channels``, ``ssh_max_preauth_per_source``, ``ssh_max_preauth``,
``ssh_login_timeout_seconds``), so the tests set them small instead of waiting."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh
import pytest

from broker.config import load_config
from broker.errors import ConfigError
from tests.component.test_sessions_harness import World, world
from tests.support.raw_ssh import (
    MSG_SERVICE_REQUEST,
    MSG_USERAUTH_FAILURE,
    MSG_USERAUTH_REQUEST,
    RawSshClient,
    client_kexinit,
    keyed_connection,
    message,
    string,
)

pytestmark = pytest.mark.postgres

BOUND = 30.0  # failure bound for every wait here (the machines are shared), never a pause

# Long enough that only the limit under test closes a connection while a test runs.
NO_TIMEOUT = {"SECONDLINE_SSH_LOGIN_TIMEOUT_SECONDS": "600"}


async def sessions_started(w: World) -> int:
    _, events = await w.call("GET", "/audit?limit=1000&action=session.start", expect=200)
    return len(events)


async def released(w: World, count: int = 0) -> None:
    """Wait until the gateway counts ``count`` connections as signing in."""

    async def settled() -> bool:
        return w.runtime.gateway.signing_in() == count

    await w.wait_for(settled, f"{count} connections signing in")


@contextlib.asynccontextmanager
async def raw_connections() -> AsyncIterator[list[RawSshClient]]:
    """Raw TCP connections a test opens; all closed at the end."""
    opened: list[RawSshClient] = []
    try:
        yield opened
    finally:
        for client in opened:
            await client.close()


async def admitted(w: World, opened: list[RawSshClient], source: str) -> RawSshClient:
    """A new connection from ``source`` that the gateway counts as signing in."""
    client = await RawSshClient.connect("127.0.0.1", w.gateway_port, source=source)
    opened.append(client)
    async with asyncio.timeout(BOUND):
        # The version line comes after the gateway decided on the connection.
        await client.server_version()
    return client


async def served(client: RawSshClient) -> None:
    """The gateway answers this connection's KEXINIT: it is being served, not refused."""
    async with asyncio.timeout(BOUND):
        kexinit = await client.start(client_kexinit())
    assert kexinit.kex_algorithms


async def refused_at_once(w: World, source: str) -> None:
    """A new connection from ``source`` is closed without a word from the client."""
    client = await RawSshClient.connect("127.0.0.1", w.gateway_port, source=source)
    try:
        async with asyncio.timeout(BOUND):
            closed = await client.closed()
    finally:
        await client.close()
    assert closed.disconnect is not None
    assert closed.disconnect.code == asyncssh.DISC_BY_APPLICATION


async def test_eleventh_session_on_a_connection_is_refused(data_dir: Path, tmp_path: Path) -> None:
    """Ten sessions run at once on one connection; the eleventh channel is refused with "at
    most 10 sessions per connection", the ten still work, and once one has ended a new one
    is accepted."""
    env = {"SECONDLINE_MAX_SESSIONS_PER_STAFF": "20"}
    async with world(data_dir, tmp_path, env=env) as w, await w.ssh() as conn:
        processes = [await conn.create_process('read line; echo "got $line"') for _ in range(10)]
        with pytest.raises(asyncssh.ChannelOpenError, match="at most 10 sessions per connection"):
            await conn.create_process("echo eleventh")
        async with asyncio.timeout(BOUND):
            for n, process in enumerate(processes):
                process.stdin.write(f"{n}\n")
                process.stdin.write_eof()
                assert await process.stdout.read() == f"got {n}\n"
                await process.wait()
                assert process.exit_status == 0
        result = await conn.run("echo after", timeout=BOUND)
        assert (result.exit_status, result.stdout) == (0, "after\n")
        assert await sessions_started(w) == 11


async def test_sessions_per_connection_is_a_setting(data_dir: Path, tmp_path: Path) -> None:
    """With ssh_max_channels = 2 the third channel is refused, saying the limit."""
    env = {"SECONDLINE_SSH_MAX_CHANNELS": "2"}
    async with world(data_dir, tmp_path, env=env) as w, await w.ssh() as conn:
        first = await conn.create_process("read line; echo one")
        second = await conn.create_process("read line; echo two")
        with pytest.raises(asyncssh.ChannelOpenError, match="at most 2 sessions per connection"):
            await conn.create_process("echo three")
        async with asyncio.timeout(BOUND):
            for process, expected in ((first, "one\n"), (second, "two\n")):
                process.stdin.write_eof()
                assert await process.stdout.read() == expected
                await process.wait()


async def test_seventeenth_connection_from_a_source_is_closed_at_once(
    data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Sixteen connections from one address that have not signed in are served; the
    seventeenth is closed at once; when they have gone, the address is admitted again, and
    connections that signed in do not count."""
    caplog.set_level(logging.WARNING, logger="broker.ssh_gateway")
    async with world(data_dir, tmp_path, env=NO_TIMEOUT) as w:
        async with raw_connections() as opened:
            for _ in range(16):
                await admitted(w, opened, "127.0.0.1")
            assert w.runtime.gateway.signing_in("127.0.0.1") == 16
            await refused_at_once(w, "127.0.0.1")
            assert "too many SSH connections signing in" in caplog.text
            for client in opened:
                await served(client)
        await released(w)
        signed_in = [await w.ssh() for _ in range(16)]
        try:
            await released(w)
            async with raw_connections() as opened:
                await served(await admitted(w, opened, "127.0.0.1"))
            result = await signed_in[0].run("echo admitted", timeout=BOUND)
            assert result.stdout == "admitted\n"
        finally:
            for conn in signed_in:
                conn.close()


async def test_connections_signing_in_are_bounded_overall(data_dir: Path, tmp_path: Path) -> None:
    """With ssh_max_preauth = 6 and 3 per source, a fourth connection from one address and a
    seventh from a new address are closed at once; when one goes, the new address is
    admitted."""
    env = {
        **NO_TIMEOUT,
        "SECONDLINE_SSH_MAX_PREAUTH": "6",
        "SECONDLINE_SSH_MAX_PREAUTH_PER_SOURCE": "3",
    }
    async with world(data_dir, tmp_path, env=env) as w, raw_connections() as opened:
        first = [await admitted(w, opened, "127.0.0.1") for _ in range(3)]
        await refused_at_once(w, "127.0.0.1")
        for _ in range(3):
            await admitted(w, opened, "127.0.0.2")
        assert w.runtime.gateway.signing_in() == 6
        await refused_at_once(w, "127.0.0.3")
        await first[0].close()
        await released(w, 5)
        await served(await admitted(w, opened, "127.0.0.3"))
        assert w.runtime.gateway.signing_in("127.0.0.3") == 1


async def timed_out(client: RawSshClient) -> None:
    """The gateway closes this connection; asyncssh's login timer sends no DISCONNECT."""
    async with asyncio.timeout(BOUND):
        closed = await client.closed()
    assert closed.disconnect is None


async def test_login_timeout_closes_connections_that_do_not_sign_in(
    data_dir: Path, tmp_path: Path
) -> None:
    """With ssh_login_timeout_seconds = 3, connections that stay silent, stop in the middle
    of the key exchange, or stop after it or after a failed sign-in are closed after three
    seconds; a connection that signed in before them is not."""
    # 3 s, not 1: the connections below must get through their key exchange first, on a
    # shared and busy machine.
    env = {"SECONDLINE_SSH_LOGIN_TIMEOUT_SECONDS": "3"}
    async with world(data_dir, tmp_path, env=env) as w, await w.ssh() as kept:
        loop = asyncio.get_running_loop()
        start = loop.time()
        silent = await RawSshClient.connect("127.0.0.1", w.gateway_port)
        mid_kex = await RawSshClient.connect("127.0.0.1", w.gateway_port)
        keyed = await keyed_connection(w.gateway_port, w.services.keys.ssh_host_key)
        refused = await keyed_connection(w.gateway_port, w.services.keys.ssh_host_key)
        try:
            async with asyncio.timeout(BOUND):
                await mid_kex.start(client_kexinit())
            refused.send_any(message(MSG_SERVICE_REQUEST, string("ssh-userauth")))
            refused.send_any(
                message(
                    MSG_USERAUTH_REQUEST, string(w.ticket), string("ssh-connection"), string("none")
                )
            )
            for client in (silent, mid_kex):
                await timed_out(client)
            async with asyncio.timeout(BOUND):
                await keyed.wait_closed()
                await refused.wait_closed()
            assert loop.time() - start >= 2.9  # not before the timeout (timer slack aside)
            assert keyed.refusal is None
            assert refused.refusal is None
            assert refused.answers[-1] == MSG_USERAUTH_FAILURE  # "none" is no way in
        finally:
            for raw in (silent, mid_kex):
                await raw.close()
            keyed.abort()
            refused.abort()
        await released(w)
        result = await kept.run("echo kept", timeout=BOUND)
        assert (result.exit_status, result.stdout) == (0, "kept\n")


def test_ssh_limit_settings_are_validated(tmp_path: Path) -> None:
    """The four SSH limits default to 20 s, 256, 16 and 10, are read from the file and the
    environment, and zero, negative, huge, non-numeric or inconsistent values are refused
    with an error that names the setting."""
    defaults = load_config(tmp_path, env={})
    assert (
        defaults.ssh_login_timeout_seconds,
        defaults.ssh_max_preauth,
        defaults.ssh_max_preauth_per_source,
        defaults.ssh_max_channels,
    ) == (20, 256, 16, 10)
    given = load_config(
        tmp_path,
        env={
            "SECONDLINE_SSH_LOGIN_TIMEOUT_SECONDS": "5",
            "SECONDLINE_SSH_MAX_PREAUTH": "40",
            "SECONDLINE_SSH_MAX_PREAUTH_PER_SOURCE": "40",
            "SECONDLINE_SSH_MAX_CHANNELS": "1",
        },
    )
    assert given.ssh_login_timeout_seconds == 5
    assert (given.ssh_max_preauth, given.ssh_max_preauth_per_source) == (40, 40)
    assert given.ssh_max_channels == 1
    (tmp_path / "secondline.toml").write_text("ssh_max_channels = 3\nssh_max_preauth = 100\n")
    assert load_config(tmp_path, env={}).ssh_max_channels == 3
    (tmp_path / "secondline.toml").unlink()

    bad = {
        "ssh_login_timeout_seconds": ["0", "-1", "601", "twenty", "1.5", ""],
        "ssh_max_preauth": ["0", "100001", "-5", "many"],
        "ssh_max_preauth_per_source": ["0", "257", "x"],
        "ssh_max_channels": ["0", "1001", "10000000000000", "ten"],
    }
    for key, values in bad.items():
        for value in values:
            with pytest.raises(ConfigError, match=key):
                load_config(tmp_path, env={f"SECONDLINE_{key.upper()}": value})
    with pytest.raises(ConfigError, match="ssh_max_preauth_per_source"):
        load_config(
            tmp_path,
            env={"SECONDLINE_SSH_MAX_PREAUTH": "8", "SECONDLINE_SSH_MAX_PREAUTH_PER_SOURCE": "9"},
        )
