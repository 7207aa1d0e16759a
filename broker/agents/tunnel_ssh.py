"""The broker's SSH client on agent tunnels: one options object for every tunnel.

``asyncssh.connect`` builds a new ``SSHClientConnectionOptions`` for every connection, even
when handed a prepared one: it runs the whole option preparation again in a worker thread
(a thread hop per handshake), and the connection keeps that copy, about 4 KB, for its life.
Every agent tunnel's options are the same but for the one host key it trusts, so the broker
prepares them once (:func:`tunnel_options`) and :func:`open_tunnel_connection` opens each
connection on them, as ``asyncssh.connect`` itself does once its options are made
(:mod:`agent.ssh_over_tunnel`).

The host key is checked by the connection's owner, :class:`TunnelClient`, against the key
the agent enrolled with. The shared options trust no key (``known_hosts`` is empty, not
None: None would turn host-key checking off), so asyncssh asks the owner about every key
the agent presents, and refuses host certificates (no CA is trusted).

The broker then authenticates with its one client key in one request
(:class:`TunnelConnection`). asyncssh's client would first send a "none" request to learn
the server's methods, then ask whether the key would do, then send the signed request:
three round trips, six SSH packets through the WebSocket, TLS and both event loops, where
the agent's answer is known (it takes public keys only, and this one). RFC 4252 lets a
client send the signed request first; a refused one still ends in ``PermissionDenied``.

Once a key exchange is done the connection lets go of both KEXINIT payloads, which asyncssh
would keep until the next one, and its close event keeps its waiters in a list, not a deque
(a broker holds thousands of idle tunnels).
"""

from __future__ import annotations

import asyncio
from typing import Final

import asyncssh
from asyncssh.auth import _ClientPublicKeyAuth

from agent.ignore_packets import drop_ignore_packets
from agent.protocol import BROKER_SSH_USERNAME
from agent.ssh_over_tunnel import open_over_tunnel
from agent.tunnel import WebSocketTunnel

#: The broker's algorithm choices on agent tunnels, best first. The agent offers these and
#: little else (agent.ssh_server.tunnel_algorithms).
TUNNEL_KEX_ALGS: Final = ("mlkem768x25519-sha256", "curve25519-sha256")
TUNNEL_ENCRYPTION_ALGS: Final = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
)
TUNNEL_MAC_ALGS: Final = ("hmac-sha2-256-etm@openssh.com",)
#: The one SSH authentication method the broker uses on agent tunnels.
PUBLICKEY: Final = b"publickey"


class TunnelClient(asyncssh.SSHClient):
    """Trusts only its agent's enrolled host key; remembers why the connection ended."""

    lost: Exception | None = None
    #: The enrolled key's public data; until it is set, no key is trusted.
    host_key_data: bytes = b""

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        return bool(self.host_key_data) and key.public_data == self.host_key_data

    def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
        # Every packet to the agent once, not after an ignore packet (agent.ignore_packets).
        drop_ignore_packets(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc


class _SignedPublicKeyAuth(_ClientPublicKeyAuth):
    """asyncssh's public-key authentication without the query before the signed request."""

    async def _start(self) -> None:
        self._keypair = await self._conn.public_key_auth_requested()
        if self._keypair is None:
            self._conn.try_next_auth(next_method=True)
            return
        await self._send_signed_request()


class _ListEvent(asyncio.Event):
    """An asyncio Event whose waiters are a list: asyncio's is an empty deque, 760 bytes
    (its first block) on every idle tunnel, where a list is 56. asyncio uses nothing of it
    a list lacks (append, remove, iteration, truth, len), which
    tests/unit/test_library_guards.py checks; a close event has a waiter or two."""

    def __init__(self) -> None:
        super().__init__()
        self._waiters = []  # type: ignore[assignment]


class TunnelConnection(asyncssh.SSHClientConnection):
    """asyncssh's client connection, authenticating with one signed public-key request."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        options: asyncssh.SSHClientConnectionOptions,
        *,
        wait: str | None = None,
    ) -> None:
        super().__init__(loop, options, wait=wait)
        # asyncssh starts with "none" to learn the server's methods: start with the key.
        self._auth_methods = [PUBLICKEY]
        # What wait_closed() waits on for the tunnel's whole life (nothing waits on it yet).
        self._close_event = _ListEvent()

    def send_newkeys(self, k: bytes, h: bytes) -> None:
        super().send_newkeys(k, h)
        # Both KEXINIT payloads went into the exchange hash just computed (asyncssh reads
        # them nowhere else), and a rekey sends and receives new ones before it hashes
        # them: kept, they are ~0.9 KB of every idle tunnel until its next key exchange.
        # What this relies on is checked by tests/unit/test_library_guards.py.
        self._client_kexinit = b""
        self._server_kexinit = b""

    def try_next_auth(self, *, next_method: bool = False) -> None:
        if next_method or self._auth_methods[:1] != [PUBLICKEY]:
            super().try_next_auth(next_method=next_method)
            return
        if self._auth is not None:
            self._auth.cancel()
        self._auth = _SignedPublicKeyAuth(self, PUBLICKEY)


def tunnel_options(
    client_key: asyncssh.SSHKey,
    *,
    keepalive_interval: float,
    keepalive_count_max: int,
    login_timeout: float,
    rekey_bytes: int | None = None,
) -> asyncssh.SSHClientConnectionOptions:
    """The options every agent tunnel's SSH connection shares (``rekey_bytes``: tests)."""
    extra: dict[str, object] = {} if rekey_bytes is None else {"rekey_bytes": rekey_bytes}
    return asyncssh.SSHClientConnectionOptions(
        username=BROKER_SSH_USERNAME,
        client_keys=[client_key],
        client_factory=TunnelClient,
        agent_path=None,
        config=None,
        # Empty, so that every key goes to TunnelClient.validate_host_public_key.
        known_hosts=([], [], []),
        x509_trusted_certs=None,
        gss_host=None,
        password_auth=False,
        kbdint_auth=False,
        host_based_auth=False,
        server_host_key_algs=["ssh-ed25519"],
        # Short, explicit algorithm lists: asyncssh formats them for its debug log on
        # every handshake (whatever the log level) and keeps both KEXINITs. ML-KEM
        # hybrid key exchange first. AES-GCM before ChaCha20: one cipher object per
        # direction, where asyncssh's ChaCha20 builds new ones for every packet (a
        # third of a handshake's CPU, and of a session's). Strict key exchange (on by
        # default) guards the negotiation against Terrapin.
        kex_algs=list(TUNNEL_KEX_ALGS),
        encryption_algs=list(TUNNEL_ENCRYPTION_ALGS),
        mac_algs=list(TUNNEL_MAC_ALGS),
        compression_algs=None,
        signature_algs=["ssh-ed25519"],
        keepalive_interval=keepalive_interval,
        keepalive_count_max=keepalive_count_max,
        login_timeout=login_timeout,
        **extra,
    )


async def open_tunnel_connection(
    options: asyncssh.SSHClientConnectionOptions,
    agent_id: str,
    tunnel: WebSocketTunnel,
    host_key: asyncssh.SSHKey,
) -> asyncssh.SSHClientConnection:
    """The authenticated SSH connection to the agent at the other end of ``tunnel``,
    trusting only ``host_key``. Raises what ``asyncssh.connect`` raises; a connection
    that fails or is cancelled is aborted."""

    def trust(conn: asyncssh.SSHClientConnection) -> None:
        # Making the transport called connection_made, which made the owner; the agent's
        # key arrives later, from the reader task that started.
        owner = conn.get_owner()
        if not isinstance(owner, TunnelClient):
            raise TypeError("the tunnel options make TunnelClient owners")
        owner.host_key_data = host_key.public_data

    return await open_over_tunnel(
        tunnel,
        agent_id,
        options,
        lambda loop, shared: TunnelConnection(loop, shared, wait="auth"),
        made=trust,
    )
