"""Helpers for the sessions' component tests; no tests live here.

:class:`World` is a real broker app (every feature, the SSH gateway on a loopback port) on
an initialised data dir, with a customer, a level-2 staff member with an SSH key, an agent
enrolled through the real enrollment endpoint, and a level-2 ticket linked to it and
assigned to the staff member. The agent side is the real agent SSH server
(``agent.ssh_server``) listening on loopback; the broker reaches it with a real asyncssh
client, handed to the sessions through ``broker.sessions.AGENT_TUNNELS`` (the tunnel over
WebSocket is the agents part's, tested there and end to end).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
from aiohttp import web
from aiohttp.test_utils import TestClient

from agent.consent import ConsentBook, ConsentRequest, ConsentService, Decision
from agent.facts import collect_facts
from agent.pty_session import ProcessTable
from agent.session_log import SessionLog, SessionRegistry
from agent.ssh_server import ServerContext, server_options
from agent.state import LocalConfig
from broker.app import create_app
from broker.config import load_config
from broker.services import SERVICES, Services
from broker.sessions import AGENT_TUNNELS, SESSIONS
from broker.sessions.manager import SessionManager
from broker.ssh_gateway import GATEWAY
from broker.ssh_gateway.gateway import Gateway
from broker.tickets.outbox import OutboxWorker
from broker.web.terminal_tickets import TerminalTickets
from broker.web.terminals import TERMINALS
from tests.support.broker import start_in_process

WAIT = 20.0  # failure bound for waits in these tests, never a pause


class Tunnels:
    """The live agent connections the sessions see (broker.ports.AgentTunnels)."""

    def __init__(self) -> None:
        self.conns: dict[str, asyncssh.SSHClientConnection] = {}

    def connection(self, agent_id: str) -> asyncssh.SSHClientConnection | None:
        return self.conns.get(agent_id)


@dataclass
class StandInAgent:
    """The real agent SSH server on loopback, and the broker's connection to it."""

    agent_id: str
    name: str
    host_key: asyncssh.SSHKey
    consent: ConsentService
    acceptor: asyncssh.SSHAcceptor
    conn: asyncssh.SSHClientConnection
    processes: ProcessTable
    requests: asyncio.Queue[ConsentRequest] = field(default_factory=asyncio.Queue)

    async def next_request(self) -> ConsentRequest:
        async with asyncio.timeout(WAIT):
            return await self.requests.get()

    async def close(self) -> None:
        """Close the broker's connection and the server, and end the shells still running
        (as the real agent does when it stops), so no process outlives the test."""
        self.conn.close()
        self.acceptor.close()
        await self.processes.shutdown()


async def start_agent(
    services: Services,
    tmp: Path,
    *,
    agent_id: str,
    name: str,
    host_key: asyncssh.SSHKey,
    attended: bool,
    consent_timeout: float = 120.0,
) -> StandInAgent:
    """Start the agent's SSH server on loopback and connect to it as the broker."""
    consent = ConsentService(ConsentBook(attended=attended, timeout=consent_timeout))
    processes = ProcessTable()
    await asyncio.to_thread(tmp.mkdir, parents=True, exist_ok=True)
    context = ServerContext(
        broker_key=services.keys.agent_client_key,
        consent=consent,
        registry=SessionRegistry(SessionLog(tmp / "sessions.jsonl"), time.time),
        processes=processes,
        config=LocalConfig(),
        facts=collect_facts,
        clock=time.time,
        environ=dict(os.environ),
    )
    acceptor = await asyncssh.listen("127.0.0.1", 0, **server_options(host_key, context))
    conn = await asyncssh.connect(
        "127.0.0.1",
        acceptor.get_port(),
        username="secondline",
        client_keys=[services.keys.agent_client_key],
        known_hosts=([host_key.convert_to_public()], [], []),
        config=None,
        agent_path=None,
    )
    agent = StandInAgent(agent_id, name, host_key, consent, acceptor, conn, processes)

    def listen(event: ConsentRequest | Decision) -> None:
        if isinstance(event, ConsentRequest):
            agent.requests.put_nowait(event)

    consent.add_listener(listen)
    return agent


@dataclass(frozen=True)
class Running:
    """The running session parts of the app under test, each from its feature's app key."""

    manager: SessionManager
    outbox: OutboxWorker
    gateway: Gateway
    terminal_tickets: TerminalTickets


@dataclass
class World:
    """A broker app with one staff member, one agent and one ticket ready for a session."""

    client: TestClient[Any, Any]
    app: web.Application
    services: Services
    admin_token: str
    tunnels: Tunnels
    tmp: Path
    staff_key: asyncssh.SSHKey
    staff_token: str = ""
    agent: StandInAgent | None = None
    ticket: str = ""
    agents: dict[str, StandInAgent] = field(default_factory=dict)

    @property
    def runtime(self) -> Running:
        return Running(
            manager=self.app[SESSIONS].manager,
            outbox=self.app[SESSIONS].outbox,
            gateway=self.app[GATEWAY],
            terminal_tickets=self.app[TERMINALS].tickets,
        )

    @property
    def gateway_port(self) -> int:
        return self.runtime.gateway.port

    async def call(
        self,
        method: str,
        path: str,
        body: object | None = None,
        *,
        token: str | None = None,
        expect: int | None = None,
    ) -> tuple[int, Any]:
        tok = self.admin_token if token is None else token
        headers = {"Authorization": f"Bearer {tok}"} if tok else {}
        resp = await self.client.request(method, "/api/v1" + path, json=body, headers=headers)
        data = await resp.json() if resp.content_type == "application/json" else None
        if expect is not None:
            assert resp.status == expect, (resp.status, data)
        return resp.status, data

    async def add_staff(
        self, name: str, role: str, key: asyncssh.SSHKey | None = None
    ) -> tuple[asyncssh.SSHKey, str]:
        key = key or asyncssh.generate_private_key("ssh-ed25519")
        await self.call(
            "POST",
            "/users",
            {
                "name": name,
                "role": role,
                "customers": ["acme"],
                "ssh_keys": [key.export_public_key().decode()],
            },
            expect=201,
        )
        _, data = await self.call("POST", f"/users/{name}/tokens", {}, expect=201)
        return key, str(data["token"])

    async def enroll(self, name: str, *, attended: bool) -> StandInAgent:
        """Enroll an agent through the real endpoint and start its SSH server."""
        consent = "attended" if attended else "unattended"
        _, token = await self.call(
            "POST", "/enrollment-tokens", {"customer": "acme", "consent": consent}, expect=201
        )
        host_key = asyncssh.generate_private_key("ssh-ed25519")
        resp = await self.client.post(
            "/agent/v1/enroll",
            json={
                "token": token["token"],
                "name": name,
                "public_key": host_key.export_public_key().decode().strip(),
                "facts": json.loads(collect_facts().serialize()),
            },
        )
        enrolled = await resp.json()
        assert resp.status == 200, enrolled
        agent = await start_agent(
            self.services,
            self.tmp / name,
            agent_id=str(enrolled["agent_id"]),
            name=name,
            host_key=host_key,
            attended=attended,
        )
        self.tunnels.conns[agent.agent_id] = agent.conn
        self.agents[name] = agent
        return agent

    async def new_ticket(self, *agents: StandInAgent, assignee: str | None = "bob") -> str:
        _, ticket = await self.call(
            "POST",
            "/tickets",
            {
                "title": "Printer queue stuck",
                "customer": "acme",
                "level": 2,
                "agents": [a.agent_id for a in agents],
            },
            expect=201,
        )
        ref = str(ticket["id"]) if str(ticket["id"]).startswith("T-") else f"T-{ticket['id']}"
        if assignee is not None:
            await self.call("POST", f"/tickets/{ref}/assign", {"user": assignee}, expect=200)
        return ref

    async def ssh(
        self, username: str | None = None, key: asyncssh.SSHKey | None = None
    ) -> asyncssh.SSHClientConnection:
        """A staff member's SSH client connected to the gateway (asyncssh)."""
        return await asyncssh.connect(
            "127.0.0.1",
            self.gateway_port,
            username=username or self.ticket,
            client_keys=[key or self.staff_key],
            known_hosts=([self.services.keys.ssh_host_key.convert_to_public()], [], []),
            config=None,
            agent_path=None,
        )

    async def wait_for(self, predicate: Callable[[], Awaitable[bool]], what: str) -> None:
        """Wait until ``predicate`` holds, checked again whenever a session end is recorded
        or the outbox delivers (with a short bound per check for other changes)."""
        events = (self.runtime.outbox.changed, self.runtime.manager.finisher.changed)
        try:
            async with asyncio.timeout(WAIT):
                while not await predicate():
                    for event in events:
                        event.clear()
                    waits = [asyncio.ensure_future(e.wait()) for e in events]
                    try:
                        await asyncio.wait(waits, timeout=0.25, return_when="FIRST_COMPLETED")
                    finally:
                        for waiter in waits:
                            waiter.cancel()
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}") from None


@contextlib.asynccontextmanager
async def world(
    data_dir: Path,
    tmp: Path,
    *,
    attended: bool = False,
    env: dict[str, str] | None = None,
    extra: Callable[[web.Application], None] | None = None,
) -> AsyncIterator[World]:
    """A broker app on ``data_dir`` with bob (level 2), agent web01 and a ticket for them."""
    tunnels = Tunnels()

    def ports(app: web.Application) -> None:
        app[AGENT_TUNNELS] = tunnels
        if extra is not None:
            extra(app)

    client = await start_in_process(
        data_dir, lambda: create_app(load_config(data_dir, env=env or {}), extra=[ports])
    )
    app = client.app
    token = (data_dir / "admin.token").read_text().strip()
    w = World(
        client=client,
        app=app,
        services=app[SERVICES],
        admin_token=token,
        tunnels=tunnels,
        tmp=tmp,
        staff_key=asyncssh.generate_private_key("ssh-ed25519"),
    )
    try:
        await w.call("POST", "/customers", {"name": "acme"}, expect=201)
        _, w.staff_token = await w.add_staff("bob", "level2", w.staff_key)
        w.agent = await w.enroll("web01", attended=attended)
        w.ticket = await w.new_ticket(w.agent)
        yield w
    finally:
        for agent in w.agents.values():
            await agent.close()
        await client.close()
