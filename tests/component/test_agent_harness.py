"""Helpers for the agent's component tests: a broker stand-in and enrolled state dirs.

No tests live here. :class:`FakeBroker` plays the broker's side of the tunnel for real: a
``websockets`` TLS server on loopback that accepts the agent's WebSocket and runs a real
``asyncssh.connect(tunnel=WebSocketTunnel(...))`` client with the broker key over it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import os
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path

import asyncssh
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from agent.protocol import (
    AGENT_ID_HEADER,
    BROKER_SSH_USERNAME,
    MAX_TUNNEL_MESSAGE,
    Ed25519PublicKey,
    SessionEnv,
)
from agent.runner import AgentRunner, RunnerSettings
from agent.send_turns import SEND_HIGH, SEND_LOW
from agent.state import (
    EnrolledState,
    StatePaths,
    atomic_write,
    ensure_state_dir,
    load_config,
    load_enrolled_state,
)
from agent.tunnel import WebsocketsStream, WebSocketTunnel

AGENT_ID = "ag-0123456789abcdef"
WAIT = 20.0  # failure bound for every wait in these tests, never a pause


@dataclass(frozen=True)
class SelfSignedCert:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM."""

    cert_pem: str
    key_pem: str
    der: bytes

    def server_context(self, tmp_path: Path) -> ssl.SSLContext:
        """A TLS server context presenting this certificate."""
        cert_file = tmp_path / f"cert-{id(self)}.pem"
        key_file = tmp_path / f"key-{id(self)}.pem"
        cert_file.write_text(self.cert_pem)
        key_file.write_text(self.key_pem)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        return context


def make_cert(common_name: str = "broker.test") -> SelfSignedCert:
    """A fresh self-signed certificate (P-256, valid for a day)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return SelfSignedCert(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
        key_pem=key_pem,
        der=cert.public_bytes(serialization.Encoding.DER),
    )


def session_env(session: str = "s-" + "A" * 22, ticket: str = "T-1042") -> dict[str, str]:
    """The environment the broker sends on a session channel."""
    return SessionEnv(
        session=session, staff="alice", staff_level=2, ticket=ticket, ticket_title="Printer"
    ).to_env()


@dataclass
class FakeBroker:
    """The broker's side of the tunnel, for real, on loopback."""

    cert: SelfSignedCert
    broker_key: asyncssh.SSHKey
    agent_public: asyncssh.SSHKey
    refuse_status: int | None = None
    connections: asyncio.Queue[asyncssh.SSHClientConnection] = field(default_factory=asyncio.Queue)
    handshake_errors: asyncio.Queue[Exception] = field(default_factory=asyncio.Queue)
    attempts: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    websockets: list[ServerConnection] = field(default_factory=list)
    port: int = 0

    @property
    def tunnel_url(self) -> str:
        return f"wss://127.0.0.1:{self.port}/agent/v1/tunnel"

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.attempts.put_nowait(request.headers.get(AGENT_ID_HEADER, ""))
        if self.refuse_status is not None:
            status = HTTPStatus(self.refuse_status)
            return Response(status.value, status.phrase, Headers(), b"refused\n")
        return None

    async def _handler(self, websocket: ServerConnection) -> None:
        self.websockets.append(websocket)
        try:
            conn = await asyncssh.connect(
                "agent.test",
                tunnel=WebSocketTunnel(WebsocketsStream(websocket)),
                known_hosts=([self.agent_public], [], []),
                client_keys=[self.broker_key],
                username=BROKER_SSH_USERNAME,
                config=None,
                gss_host=None,
                agent_path=None,
            )
        except (asyncssh.Error, OSError) as exc:
            await self.handshake_errors.put(exc)
            return
        await self.connections.put(conn)
        await conn.wait_closed()

    @contextlib.asynccontextmanager
    async def running(self, tmp_path: Path) -> AsyncIterator[Server]:
        """Serve until the block ends."""
        async with serve(
            self._handler,
            "127.0.0.1",
            0,
            ssl=self.cert.server_context(tmp_path),
            process_request=self._process_request,
            compression=None,
            max_size=MAX_TUNNEL_MESSAGE,
            close_timeout=0.5,
        ) as server:
            self.port = server.sockets[0].getsockname()[1]
            yield server

    async def next_connection(self) -> asyncssh.SSHClientConnection:
        """The next SSH connection an agent made (bounded wait)."""
        async with asyncio.timeout(WAIT):
            return await self.connections.get()


def enroll_state_dir(
    root: Path,
    *,
    tunnel_url: str,
    cert: SelfSignedCert,
    agent_key: asyncssh.SSHKey,
    broker_key: asyncssh.SSHKey,
    consent: str = "unattended",
    config_toml: str | None = None,
) -> StatePaths:
    """Write the files ``secondline-agent enroll`` leaves behind."""
    paths = StatePaths(root)
    ensure_state_dir(paths)
    atomic_write(paths.agent_key, agent_key.export_private_key("openssh"))
    atomic_write(paths.broker_pem, cert.cert_pem.encode())
    state = EnrolledState(
        broker_url="https://127.0.0.1:1",
        tunnel_url=tunnel_url,
        agent_id=AGENT_ID,
        name="web01",
        customer="acme",
        consent="attended" if consent == "attended" else "unattended",
        broker_ssh_key=Ed25519PublicKey.parse(
            broker_key.export_public_key("openssh").decode().strip()
        ),
        enrolled_at="2024-05-01T12:00:00Z",
    )
    atomic_write(paths.state_json, state.serialize())
    if config_toml is not None:
        atomic_write(paths.config, config_toml.encode())
    return paths


def runner_settings(
    paths: StatePaths,
    agent_key: asyncssh.SSHKey,
    *,
    ping_interval: float = 20.0,
    ping_timeout: float = 20.0,
    send_high: int = SEND_HIGH,
    send_low: int = SEND_LOW,
) -> RunnerSettings:
    """Settings as ``run`` builds them, with short timeouts for tests."""
    return RunnerSettings(
        paths=paths,
        state=load_enrolled_state(paths),
        config=load_config(paths),
        agent_key=agent_key,
        broker_pem=paths.broker_pem.read_text(),
        open_timeout=WAIT,
        close_timeout=0.5,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        backoff_base=0.01,
        backoff_cap=0.05,
        send_high=send_high,
        send_low=send_low,
    )


@contextlib.asynccontextmanager
async def running_agent(settings: RunnerSettings) -> AsyncIterator[AgentRunner]:
    """Run an agent in this event loop until the block ends."""
    runner = AgentRunner(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        yield runner
    finally:
        stop.set()
        async with asyncio.timeout(WAIT):
            await task


@dataclass
class TunnelledAgent:
    """An enrolled agent running in this loop, connected through a real tunnel to a
    :class:`FakeBroker`; ``conn`` is the broker's SSH connection to it."""

    broker: FakeBroker
    paths: StatePaths
    agent: AgentRunner
    conn: asyncssh.SSHClientConnection


@contextlib.asynccontextmanager
async def tunnelled_agent(
    tmp_path: Path,
    *,
    consent: str = "unattended",
    config_toml: str = 'shell = "/bin/bash"\n',
    send_high: int = SEND_HIGH,
    send_low: int = SEND_LOW,
) -> AsyncIterator[TunnelledAgent]:
    """Enroll a state dir, run the agent until the block ends, and hand over the broker's
    SSH connection to it (closed at the end)."""
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
            consent=consent,
            config_toml=config_toml,
        )
        settings = runner_settings(paths, agent_key, send_high=send_high, send_low=send_low)
        async with running_agent(settings) as agent:
            conn = await broker.next_connection()
            try:
                yield TunnelledAgent(broker, paths, agent, conn)
            finally:
                conn.close()


async def wait_status(runner: AgentRunner, predicate: Callable[[dict[str, object]], bool]) -> None:
    """Wait until the runner's status satisfies ``predicate`` (woken by each change)."""
    async with asyncio.timeout(WAIT):
        while not predicate(runner.status()):
            await runner.status_changed.wait()
            runner.status_changed.clear()


async def read_until(stream: asyncssh.SSHReader[bytes], marker: bytes, seen: bytearray) -> bytes:
    """Read from ``stream`` into ``seen`` until ``marker`` appears; return all read."""
    async with asyncio.timeout(WAIT):
        while marker not in seen:
            chunk = await stream.read(65536)
            if not chunk:
                raise EOFError(f"stream ended before {marker!r}; got {bytes(seen)!r}")
            seen += chunk
    return bytes(seen)


async def wait_gone(pid: int) -> None:
    """Return once process ``pid`` has exited (pidfd readiness, no polling)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    gone: asyncio.Future[None] = loop.create_future()
    loop.add_reader(fd, gone.set_result, None)
    try:
        async with asyncio.timeout(WAIT):
            await gone
    finally:
        loop.remove_reader(fd)
        os.close(fd)
