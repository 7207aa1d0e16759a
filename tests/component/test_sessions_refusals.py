"""What the SSH gateway refuses, and how: hostile user names, keys of nobody or of disabled
accounts, tickets the rules refuse, forwarding, subsystems, env, and too many of anything."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from tests.component.test_sessions_harness import WAIT, World, world

pytestmark = [
    pytest.mark.postgres,
    # broker.agents.tokens (another part, in progress) still calls Result.tuples().
    pytest.mark.filterwarnings("ignore:The Result.tuples:DeprecationWarning"),
]


class BannerClient(asyncssh.SSHClient):
    """Keeps the authentication banners the gateway sends."""

    def __init__(self) -> None:
        self.banners: list[str] = []

    def auth_banner_received(self, msg: str, lang: str) -> None:
        self.banners.append(msg)


class RawUserName:
    """An asyncssh "tunnel" that connects over plain TCP and puts ``username`` on the
    connection as it is, past the client's own SASLprep, as a hostile client would."""

    def __init__(self, username: str) -> None:
        self.username = username

    async def create_connection(
        self, factory: Callable[[], asyncio.BaseProtocol], host: str, port: int
    ) -> tuple[asyncio.BaseTransport, asyncio.BaseProtocol]:
        conn = factory()
        conn._username = self.username  # type: ignore[attr-defined]  # asyncssh has no hook
        return await asyncio.get_running_loop().create_connection(lambda: conn, host, port)


async def sign_in(w: World, username: str, key: asyncssh.SSHKey) -> tuple[bool, str]:
    """Try to sign in; (signed in, banners). The user name is sent exactly as given."""
    client = BannerClient()
    try:
        conn = await asyncssh.connect(
            "127.0.0.1",
            w.gateway_port,
            tunnel=RawUserName(username),
            username="T-1",
            client_keys=[key],
            known_hosts=([w.services.keys.ssh_host_key.convert_to_public()], [], []),
            client_factory=lambda: client,
            config=None,
            agent_path=None,
        )
    except asyncssh.PermissionDenied:
        return False, "".join(client.banners)
    except asyncssh.IllegalUserName as exc:
        return False, f"disconnected: {exc.reason}"
    conn.close()
    await conn.wait_closed()
    return True, "".join(client.banners)


async def run_as(w: World, username: str, command: str = "true") -> asyncssh.SSHCompletedProcess:
    async with await w.ssh(username) as conn:
        result = await conn.run(command, timeout=WAIT)
    return result


async def audit(w: World, action: str) -> list[dict[str, Any]]:
    _, events = await w.call("GET", f"/audit?limit=500&action={action}", expect=200)
    return list(events)


HOSTILE_NAMES = (
    "../../etc/passwd",
    "T-1042/../x",
    "T-1%00",
    "%2e%2e",
    "T-1042 rm -rf",
    "T-1042\x00",
    "T-1042\n",
    "T-1042\x1b[2J",
    "T-1042+../web01",
    "T-1042+web01+db01",
    "T-0",
    "t-1042",
    "T-1042;id",
    "$(id)",
    "A" * 4096,
    "",
)


async def test_hostile_user_names_are_refused(data_dir: Path, tmp_path: Path) -> None:
    """A user name that is no target is refused before any key is accepted, saying why."""
    async with world(data_dir, tmp_path) as w:
        refused_by_us = 0
        for username in HOSTILE_NAMES:
            signed_in, banner = await sign_in(w, username, w.staff_key)
            assert not signed_in, username
            if banner.startswith("disconnected: "):
                # asyncssh refuses controls and names over 1 KiB before the gateway sees them.
                assert len(username) > 1000 or not username.isprintable(), username
                continue
            refused_by_us += 1
            assert "invalid SSH user name" in banner or "user name is empty" in banner, banner
            for line in banner.split("\r\n"):
                assert line.isprintable(), banner
            assert len(banner) < 1000

        async def audited() -> bool:
            return len(await audit(w, "ssh.auth_failed")) == refused_by_us

        await w.wait_for(audited, "every refusal audited")
        assert (await audit(w, "session.start")) == []


async def test_unknown_ticket_and_agent_are_refused_after_sign_in(
    data_dir: Path, tmp_path: Path
) -> None:
    """Unknown tickets and agents are refused with the reason on stderr and exit 255."""
    async with world(data_dir, tmp_path) as w:
        missing = await run_as(w, "T-999999")
        assert missing.exit_status == 255
        assert "there is no ticket T-999999" in str(missing.stderr)
        nope = await run_as(w, f"{w.ticket}+nope")
        assert nope.exit_status == 255
        assert "has no agent of that name" in str(nope.stderr)
        refused = await audit(w, "session.refused")
        assert {e["details"]["code"] for e in refused} == {"ticket_not_found", "agent_not_found"}


async def test_several_agents_need_a_choice(data_dir: Path, tmp_path: Path) -> None:
    """A ticket with two agents and no +agent lists them; naming one works."""
    async with world(data_dir, tmp_path) as w:
        assert w.agent is not None
        second = await w.enroll("db01", attended=False)
        ticket = await w.new_ticket(w.agent, second)
        ambiguous = await run_as(w, ticket)
        assert ambiguous.exit_status == 255
        assert "several agents; choose one of: db01, web01" in str(ambiguous.stderr)
        chosen = await run_as(w, f"{ticket}+db01", "echo on-db01")
        assert (chosen.exit_status, chosen.stdout) == (0, "on-db01\n")
        by_id = await run_as(w, f"{ticket}+{second.agent_id}", "echo by-id")
        assert by_id.stdout == "by-id\n"


async def test_keys_of_nobody_and_of_disabled_accounts(data_dir: Path, tmp_path: Path) -> None:
    """A key nobody registered and the key of a disabled account get the same refusal."""
    async with world(data_dir, tmp_path) as w:
        stranger = asyncssh.generate_private_key("ssh-ed25519")
        assert (await sign_in(w, w.ticket, stranger)) == (False, "")
        carol_key, _ = await w.add_staff("carol", "level2")
        assert (await sign_in(w, w.ticket, carol_key))[0]
        await w.call("POST", "/users/carol/disable", expect=200)
        assert (await sign_in(w, w.ticket, carol_key)) == (False, "")

        async def both_audited() -> bool:
            events = await audit(w, "ssh.auth_failed")
            text = repr([e["details"] for e in events])
            return "unknown_key" in text and "disabled_account" in text

        await w.wait_for(both_audited, "both refusals audited")


async def test_rules_refusals_reach_the_ssh_client(data_dir: Path, tmp_path: Path) -> None:
    """Tickets the session rules refuse end with the rule's reason and exit 255, audited."""
    async with world(data_dir, tmp_path) as w:
        assert w.agent is not None
        _, low = await w.call(
            "POST",
            "/tickets",
            {"title": "Mouse", "customer": "acme", "level": 1, "agents": [w.agent.agent_id]},
            expect=201,
        )
        result = await run_as(w, str(low["id"]))
        assert result.exit_status == 255
        assert "escalate it to level 2 first" in str(result.stderr)
        await w.add_staff("carol", "level2")
        theirs = await w.new_ticket(w.agent, assignee="carol")
        result = await run_as(w, theirs)
        assert "is assigned to carol" in str(result.stderr)
        admin_key, _ = await w.add_staff("root2", "admin")
        async with await w.ssh(w.ticket, admin_key) as conn:
            result = await conn.run("true", timeout=WAIT)
        assert "admins do not get a shell" in str(result.stderr)
        codes = {e["details"]["code"] for e in await audit(w, "session.refused")}
        assert {"ticket_not_escalated", "not_assignee", "admin_no_shell"} <= codes


async def test_unassigned_ticket_is_taken_by_the_session(data_dir: Path, tmp_path: Path) -> None:
    """A session on an unassigned ticket at one's level assigns it to the opener."""
    async with world(data_dir, tmp_path) as w:
        assert w.agent is not None
        free = await w.new_ticket(w.agent, assignee=None)
        assert (await run_as(w, free, "true")).exit_status == 0
        _, ticket = await w.call("GET", f"/tickets/{free}", expect=200)
        assert ticket["assignee"] == "bob"


async def test_forwarding_subsystems_and_env_are_refused(data_dir: Path, tmp_path: Path) -> None:
    """Port and UNIX forwarding, subsystems other than sftp and env requests are refused;
    the shell still works."""
    async with world(data_dir, tmp_path) as w, await w.ssh() as conn:
        with pytest.raises(asyncssh.ChannelOpenError, match="refused"):
            await conn.create_connection(asyncssh.SSHTCPSession, "127.0.0.1", 22)
        with pytest.raises(asyncssh.ChannelListenError):
            await conn.forward_remote_port("127.0.0.1", 0, "127.0.0.1", 22)
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.create_unix_connection(asyncssh.SSHUNIXSession, "/run/docker.sock")
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.create_session(asyncssh.SSHClientSession, subsystem="netconf")
        result = await conn.run("echo ${SECRET_X:-unset}", env={"SECRET_X": "1"}, timeout=WAIT)
        assert result.stdout == "unset\n"

        async def audited() -> bool:
            requests = {e["details"]["request"] for e in await audit(w, "ssh.refused")}
            return {"port forwarding", "remote port forwarding", "subsystem"} <= requests

        await w.wait_for(audited, "the refusals audited")


async def test_failed_sign_ins_are_throttled_per_source(data_dir: Path, tmp_path: Path) -> None:
    """After ten failed sign-ins from an address even a good key is refused for a while."""
    async with world(data_dir, tmp_path) as w:
        stranger = asyncssh.generate_private_key("ssh-ed25519")
        for _ in range(10):
            assert not (await sign_in(w, w.ticket, stranger))[0]

        async def counted() -> bool:
            return w.runtime.gateway.retry_after("source:127.0.0.1") > 0

        await w.wait_for(counted, "the throttle")
        signed_in, banner = await sign_in(w, w.ticket, w.staff_key)
        assert not signed_in
        assert "too many failed sign-ins" in banner


async def test_too_many_unauthenticated_connections(data_dir: Path, tmp_path: Path) -> None:
    """Connections that never sign in are bounded per source; the next one is closed."""
    async with world(data_dir, tmp_path) as w:
        idle = [await asyncio.open_connection("127.0.0.1", w.gateway_port) for _ in range(16)]
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", w.gateway_port)
            async with asyncio.timeout(WAIT):
                data = await reader.read()  # the server's version line, then EOF
            assert data == b"" or data.startswith(b"SSH-2.0-")
            writer.close()
        finally:
            for _, idle_writer in idle:
                idle_writer.close()


async def test_channels_per_connection_are_bounded(data_dir: Path, tmp_path: Path) -> None:
    """One connection carries at most ten sessions at once."""
    env = {"SECONDLINE_MAX_SESSIONS_PER_STAFF": "20"}
    async with world(data_dir, tmp_path, env=env) as w, await w.ssh() as conn:
        processes = [await conn.create_process("sleep 30") for _ in range(10)]
        with pytest.raises(asyncssh.ChannelOpenError, match="at most 10"):
            await conn.create_process("true")
        for process in processes:
            process.close()
