"""Helpers for the agent-side component tests of the broker; no tests live here.

:func:`start_agents_app` runs the real broker app on a loopback socket (with tunnel timers
the test chooses). :class:`LoopbackAgent` is a real agent side built from the agent
package's shared parts: a ``websockets`` client, :class:`agent.tunnel.WebSocketTunnel` and
an asyncssh server (``connect_reverse``) with the agent's Ed25519 host key, accepting only
the broker key it got at enrollment and answering ``sl:facts`` with whatever bytes the
test chooses (hostile ones included). Its stream can be frozen, to play an agent that
stops answering without closing its socket.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import asyncssh
from aiohttp import web
from pytest_aiohttp import AiohttpClient
from sqlalchemy import select
from websockets.asyncio.client import ClientConnection, connect

from agent.enrollment import EnrollmentAnswer, EnrollmentRequest, EnrollmentToken
from agent.facts import Facts
from agent.protocol import (
    AGENT_ID_HEADER,
    ENROLL_PATH,
    MAX_TUNNEL_MESSAGE,
    TUNNEL_PATH,
    Ed25519PublicKey,
)
from agent.tunnel import WebsocketsStream, WebSocketTunnel
from broker.agents.feature import AGENT_REGISTRY, TUNNEL_SETTINGS
from broker.agents.registry import AgentRegistry
from broker.agents.tunnel_endpoint import TUNNEL_RUNTIME, TunnelRuntime, TunnelSettings
from broker.app import Feature, create_app
from broker.config import load_config
from broker.db.models_audit import AuditEvent
from broker.services import SERVICES, Services
from tests.support.api import Api, admin_token
from tests.support.broker import start_in_process

WAIT: Final = 20.0  # failure bound of every wait, never a pause
FACTS: Final = Facts(
    hostname="web01", os="Debian GNU/Linux", os_version="12", kernel="6.1.0", arch="x86_64",
    users=("alice",),
)  # fmt: skip
#: Timers short enough for tests: a silent agent is offline within 0.6 s.
FAST: Final = TunnelSettings(
    keepalive_interval=0.2, keepalive_count_max=2, handshake_timeout=1.0, facts_timeout=5.0
)


@dataclass
class AgentsApp:
    """The broker app under test and shortcuts into it."""

    api: Api
    app: web.Application

    @property
    def services(self) -> Services:
        return self.app[SERVICES]

    @property
    def registry(self) -> AgentRegistry:
        return self.app[AGENT_REGISTRY]

    @property
    def runtime(self) -> TunnelRuntime:
        return self.app[TUNNEL_RUNTIME]

    def url(self, path: str, scheme: str = "http") -> str:
        return str(self.api.client.make_url(path)).replace("http", scheme, 1)

    async def customer(self, name: str = "acme") -> None:
        await self.api.call("POST", "/customers", {"name": name}, expect=201)

    async def token(self, customer: str = "acme", **options: object) -> dict[str, object]:
        body = {"customer": customer, "consent": "unattended", **options}
        _, data = await self.api.call("POST", "/enrollment-tokens", body, expect=201)
        assert isinstance(data, dict)
        return data

    async def enroll_raw(self, body: bytes) -> tuple[int, dict[str, object]]:
        resp = await self.api.client.post(
            ENROLL_PATH, data=io.BytesIO(body), headers={"Content-Type": "application/json"}
        )
        data = await resp.json()
        assert isinstance(data, dict)
        return resp.status, data

    async def enroll(
        self,
        token: str,
        name: str = "web01",
        *,
        facts: Facts = FACTS,
        key: asyncssh.SSHKey | None = None,
    ) -> tuple[int, dict[str, object], asyncssh.SSHKey]:
        key = key or asyncssh.generate_private_key("ssh-ed25519")
        request = EnrollmentRequest(
            token=EnrollmentToken.parse(token),
            name=name,
            public_key=_public(key),
            facts=facts,
        )
        status, data = await self.enroll_raw(request.serialize())
        return status, data, key

    async def agent(
        self, name: str = "web01", *, customer: str = "acme", facts_output: bytes | None = None
    ) -> LoopbackAgent:
        """A freshly enrolled agent (not connected yet)."""
        token = await self.token(customer)
        status, data, key = await self.enroll(str(token["token"]), name)
        assert status == 200, data
        answer = EnrollmentAnswer.parse(json.dumps(data))
        return LoopbackAgent(self, answer, key, facts_output)

    async def audit(self, action: str) -> list[AuditEvent]:
        """Audit events of one action, oldest first."""
        async with self.services.db() as db:
            rows = await db.execute(
                select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)
            )
            return list(rows.scalars().all())

    async def denied_reasons(self, action: str = "agent.tunnel") -> list[str]:
        return [
            str(e.details.get("reason")) for e in await self.audit(action) if e.outcome == "denied"
        ]


def _public(key: asyncssh.SSHKey) -> Ed25519PublicKey:
    return Ed25519PublicKey.parse(key.export_public_key().decode("ascii").strip())


@asynccontextmanager
async def start_agents_app(
    data_dir: Path,
    _aiohttp_client: AiohttpClient,
    settings: TunnelSettings = FAST,
    extra: Sequence[Feature] = (),
) -> AsyncIterator[AgentsApp]:
    """The broker app with the agent feature (and ``extra`` features), its tunnel timers
    set to ``settings``. (The test's ``aiohttp_client`` is taken and not used: the app is
    started by ``start_in_process``, which moves the data dir's ports if another worker
    took one.)"""

    def build() -> web.Application:
        app = create_app(load_config(data_dir, env={}), extra=extra)
        app[TUNNEL_SETTINGS] = settings
        return app

    client = await start_in_process(data_dir, build)
    app = client.app
    try:
        yield AgentsApp(Api(client, admin_token(data_dir)), app)
    finally:
        await client.close()


class FreezableStream(WebsocketsStream):
    """The agent's WebSocket, which can stop carrying SSH (the process hangs)."""

    def __init__(self, ws: ClientConnection) -> None:
        super().__init__(ws)
        self.frozen = asyncio.Event()

    async def send(self, data: bytes) -> None:
        if not self.frozen.is_set():
            await super().send(data)

    async def recv(self) -> bytes | None:
        while True:
            data = await super().recv()
            if data is None or not self.frozen.is_set():
                return data


class LoopbackAgent:
    """An enrolled agent's side of the tunnel, in-process."""

    def __init__(
        self,
        app: AgentsApp,
        answer: EnrollmentAnswer,
        key: asyncssh.SSHKey,
        facts_output: bytes | None = None,
    ) -> None:
        self.app = app
        self.answer = answer
        self.key = key
        self.facts_output = facts_output if facts_output is not None else FACTS.serialize()
        self.stream: FreezableStream | None = None
        self.conn: asyncssh.SSHServerConnection | None = None

    @property
    def id(self) -> str:
        return self.answer.agent_id

    async def open_ws(self, claim_id: str | None = None) -> ClientConnection:
        """The raw WebSocket to the tunnel endpoint, claiming ``claim_id`` (default: own)."""
        return await connect(
            self.app.url(TUNNEL_PATH, "ws"),
            additional_headers={AGENT_ID_HEADER: claim_id or self.id},
            compression=None,
            max_size=MAX_TUNNEL_MESSAGE,
            open_timeout=WAIT,
        )

    async def connect(
        self,
        claim_id: str | None = None,
        *,
        key: asyncssh.SSHKey | None = None,
        trusts: asyncssh.SSHKey | None = None,
    ) -> asyncssh.SSHServerConnection:
        """Dial and serve SSH to the broker, as ``secondline-agent run`` does (accepting
        ``trusts`` instead of the broker's key, when given)."""
        ws = await self.open_ws(claim_id)
        self.stream = FreezableStream(ws)
        trusted = (
            self.answer.broker_ssh_key.serialize()
            if trusts is None
            else trusts.export_public_key().decode("ascii")
        )
        broker_key = asyncssh.import_authorized_keys(trusted)
        self.conn = await asyncssh.connect_reverse(
            tunnel=WebSocketTunnel(self.stream),
            server_host_keys=[key or self.key],
            authorized_client_keys=broker_key,
            process_factory=self._process,
            config=None,
            gss_host=None,
            encoding=None,
            agent_forwarding=False,
            x11_forwarding=False,
            allow_scp=False,
            login_timeout=WAIT,
        )
        return self.conn

    def _process(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        command = process.command or ""
        if command == "sl:facts":
            process.stdout.write(self.facts_output)
            process.exit(0)
        elif command.startswith("echo "):
            process.stdout.write(command[5:].encode() + b"\n")
            process.exit(0)
        else:
            process.exit(127)

    async def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            await self.conn.wait_closed()


async def eventually_closed(ws: ClientConnection) -> None:
    """Return when the broker closed ``ws`` (within the failure bound)."""
    async with asyncio.timeout(WAIT):
        await ws.wait_closed()
