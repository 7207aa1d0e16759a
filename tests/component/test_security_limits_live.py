"""Limits of live connections (docs/security.md, "Limits"), each tried at the limit on a real
server on loopback: console terminal WebSocket messages, agent tunnel WebSocket messages,
sessions per staff member (console and SSH) and terminal tickets per person.

The HTTP request limits are in test_security_limits.py."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSCloseCode
from pytest_aiohttp import AiohttpClient
from sqlalchemy import func, select
from websockets.exceptions import ConnectionClosed

from broker.agents.tunnel_endpoint import MAX_WS_MESSAGE
from broker.db.models_audit import AuditEvent
from broker.db.models_sessions import RemoteSession
from broker.keys import public_pem
from broker.services import Services
from broker.transcript import load_public_key, transcript_paths, verify_transcript
from broker.web.terminal_tickets import MAX_PER_PRINCIPAL
from broker.web.terminal_ws import CLOSE_REFUSED, MAX_MESSAGE
from tests.component.test_agents_harness import WAIT, AgentsApp, LoopbackAgent, start_agents_app
from tests.component.test_sessions_console import Browser, connect, mint
from tests.component.test_sessions_harness import World, world
from tests.component.test_sessions_shell import open_shell

pytestmark = pytest.mark.postgres


async def audited(services: Services, action: str) -> list[AuditEvent]:
    async with services.db() as db:
        rows = await db.execute(
            select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)
        )
        return list(rows.scalars().all())


async def session_rows(services: Services) -> int:
    async with services.db() as db:
        return int((await db.execute(select(func.count(RemoteSession.id)))).scalar_one())


async def live_sessions(w: World) -> list[dict[str, Any]]:
    _, live = await w.call("GET", "/sessions?live=1", token=w.staff_token, expect=200)
    return list(live)


async def no_session_left(w: World) -> None:
    async def none_live() -> bool:
        return not await live_sessions(w)

    await w.wait_for(none_live, "every session to end")


async def exit_shells(w: World, *browsers: Browser) -> None:
    """End the browsers' sessions from inside (``exit``), so that the agent has reaped each
    shell before its session is recorded as ended."""
    for b in browsers:
        await b.ws.send_bytes(b"exit\n")
        await b.read_to_close()
        assert b.states()[-1] == "ended"
    await no_session_left(w)


def session_of(b: Browser) -> str:
    return next(str(c["session"]) for c in b.controls if c["type"] == "state" and c["session"])


def verify(w: World, session_id: str) -> tuple[str, str | None]:
    key = load_public_key(public_pem(w.services.keys.transcript_key))
    paths = transcript_paths(w.services.config.transcripts_dir, session_id)
    result = verify_transcript(paths.cast, key, paths.seal, paths.chain)
    return result.status, result.seal.end_reason if result.seal else None


# -- console terminal WebSocket messages ----------------------------------------------------


async def test_terminal_message_of_64_kib_is_typed_and_one_byte_more_closes_with_1009(
    data_dir: Path, tmp_path: Path
) -> None:
    """A 64 KiB input message reaches the shell whole; a larger one closes the socket with
    1009 before any of it is typed, the session ends, and its transcript verifies."""
    async with world(data_dir, tmp_path) as w:
        b = await connect(w, w.staff_token, await mint(w, w.staff_token))
        await b.read_until(lambda b: b.has_state("running"))
        sid = session_of(b)
        # Raw mode: the terminal passes every byte on (no line length, no echo), so the shell
        # sees exactly what the message carried. The markers are computed, not echoed.
        await b.ws.send_bytes(
            b"stty raw -echo; echo ready-$((2+3)); head -c 65536 | tr -d y | wc -c; "
            b"stty sane; echo got-$((1+1))\n"
        )
        await b.read_until(lambda b: b"ready-5" in b.out)
        await b.ws.send_bytes(b"y" * MAX_MESSAGE)
        await b.read_until(lambda b: b"got-2" in b.out)
        assert b"0" in b.out.split(b"ready-5")[1].split(b"got-2")[0]  # all 65536 were y
        await b.ws.send_bytes(b"z" * (MAX_MESSAGE + 1))
        await b.read_to_close()
        assert b.ws.close_code == WSCloseCode.MESSAGE_TOO_BIG  # 1009
        await no_session_left(w)  # the owner's terminal is gone: its session ends
        assert verify(w, sid)[0] == "valid"
        cast = transcript_paths(w.services.config.transcripts_dir, sid).cast
        recorded = cast.read_text()
        assert "got-2" in recorded
        assert "zzzz" not in recorded  # typed with echo on, it would be in the input and output


# -- agent tunnel WebSocket messages --------------------------------------------------------


async def oversized_on_a_live_tunnel(agents: AgentsApp) -> LoopbackAgent:
    """An online agent whose tunnel carried one message over MAX_WS_MESSAGE; returns when the
    broker has closed the tunnel and shows the agent offline."""
    agent = await agents.agent()
    conn = await agent.connect()
    async with asyncio.timeout(WAIT):
        await agents.registry.wait_ready(agent.id)
    assert agent.stream is not None
    with contextlib.suppress(ConnectionClosed):
        await agent.stream.send(b"\0" * (MAX_WS_MESSAGE + 1))
    async with asyncio.timeout(WAIT):
        await conn.wait_closed()
        await agents.registry.wait_for(agent.id, online=False)
    return agent


async def shown(agents: AgentsApp, agent_id: str) -> dict[str, Any]:
    await agents.runtime.presence.flush()
    _, data = await agents.api.call("GET", f"/agents/{agent_id}", expect=200)
    assert isinstance(data, dict)
    return data


async def test_tunnel_message_over_the_limit_ends_the_tunnel_and_the_agent_comes_back(
    data_dir: Path, aiohttp_client: AiohttpClient
) -> None:
    """An established tunnel that carries a message over MAX_WS_MESSAGE is closed, the agent
    is shown offline, and it reconnects and works as before."""
    async with start_agents_app(data_dir, aiohttp_client) as agents:
        await agents.customer("acme")
        agent = await oversized_on_a_live_tunnel(agents)
        assert agents.registry.connection(agent.id) is None
        data = await shown(agents, agent.id)
        assert (data["status"], data["online"]) == ("offline", False)
        await agent.connect()
        async with asyncio.timeout(WAIT):
            again = await agents.registry.wait_ready(agent.id)
        assert (await again.run("echo back")).stdout == "back\n"
        assert (await shown(agents, agent.id))["status"] == "online"
        await agent.close()


async def test_tunnel_message_over_the_limit_is_audited_on_a_live_tunnel(
    data_dir: Path, aiohttp_client: AiohttpClient
) -> None:
    """The oversized message on an established tunnel is audited as what it was."""
    async with start_agents_app(data_dir, aiohttp_client) as agents:
        await agents.customer("acme")
        await oversized_on_a_live_tunnel(agents)
        await agents.runtime.drain_background()
        assert await agents.denied_reasons() == [
            "the agent sent a WebSocket message larger than the limit"
        ]


# -- sessions per staff member --------------------------------------------------------------


async def test_sessions_per_staff_member_are_bounded_on_the_console_and_over_ssh(
    data_dir: Path, tmp_path: Path
) -> None:
    """At max_sessions_per_staff live sessions the next one is refused on the console
    (session_limit, 4403) and over SSH (the sentence on stderr), audited, with no session
    row; once one ends a new one is admitted."""
    env = {"SECONDLINE_MAX_SESSIONS_PER_STAFF": "2"}
    async with world(data_dir, tmp_path, env=env) as w, await w.ssh() as conn:
        first = await open_shell(conn)
        first.type("echo one-$((0+1))\n")
        await first.expect(b"one-1")
        second = await connect(w, w.staff_token, await mint(w, w.staff_token))
        await second.read_until(lambda b: b.has_state("running"))
        rows = await session_rows(w.services)

        web = await connect(w, w.staff_token, await mint(w, w.staff_token))
        await web.read_to_close()
        assert web.ws.close_code == CLOSE_REFUSED
        ended = web.controls[-1]
        assert (ended["type"], ended["state"], ended["code"]) == ("state", "ended", "session_limit")
        assert "you have 2 sessions open and the limit is 2" in ended["reason"]
        assert "end one before opening another" in ended["reason"]
        over_ssh = await open_shell(conn)
        assert await over_ssh.finish() == 255
        assert b"the limit is 2; end one before opening another" in over_ssh.err
        assert await session_rows(w.services) == rows
        refusals = [
            (e.actor, e.outcome, e.details["code"], e.details["via"])
            for e in await audited(w.services, "session.refused")
        ]
        assert refusals == [
            ("bob", "denied", "session_limit", "web"),
            ("bob", "denied", "session_limit", "ssh"),
        ]

        first.type("exit\n")
        assert await first.finish() == 0

        async def one_left() -> bool:
            return len(await live_sessions(w)) == 1

        await w.wait_for(one_left, "the SSH session to end")
        third = await connect(w, w.staff_token, await mint(w, w.staff_token))
        await third.read_until(lambda b: b.has_state("running"))
        await exit_shells(w, second, third)


# -- terminal tickets -----------------------------------------------------------------------


async def test_terminal_tickets_per_person_are_bounded_and_using_one_frees_its_place(
    data_dir: Path, tmp_path: Path
) -> None:
    """A person holding 16 unused terminal tickets gets 429 too_many_tickets for the next
    (nothing kept); another person is not affected; redeeming one frees its place."""
    async with world(data_dir, tmp_path) as w:
        book = w.runtime.terminal_tickets
        mine = [await mint(w, w.staff_token) for _ in range(MAX_PER_PRINCIPAL)]
        status, data = await w.call(
            "POST",
            "/sessions/terminal-tickets",
            {"ticket_id": w.ticket, "mode": "open"},
            token=w.staff_token,
        )
        assert status == 429
        assert set(data) == {"error"}
        assert set(data["error"]) == {"code", "message"}
        assert data["error"]["code"] == "too_many_tickets"
        assert f"you have {MAX_PER_PRINCIPAL} unused terminal tickets" in data["error"]["message"]
        assert "open a terminal with one of them" in data["error"]["message"]
        assert len(book) == MAX_PER_PRINCIPAL
        refused = [
            e for e in await audited(w.services, "session.terminal_ticket") if e.outcome == "denied"
        ]
        assert [(e.actor, e.target, e.details["code"]) for e in refused] == [
            ("bob", w.ticket, "too_many_tickets")
        ]
        _, carol = await w.add_staff("carol", "level2")
        await mint(w, carol)
        assert len(book) == MAX_PER_PRINCIPAL + 1

        b = await connect(w, w.staff_token, mine[0])
        await b.read_until(lambda b: b.has_state("running"))
        await mint(w, w.staff_token)
        assert len(book) == MAX_PER_PRINCIPAL + 1
        await exit_shells(w, b)
