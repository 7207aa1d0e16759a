"""Where the broker reaches into a library's internals, what it relies on still holds in the
installed version. Each test fails loudly when the library changed the thing patched, and
says what to do; none of them skips.

- asyncio's accept batch (broker/agents/descriptors.py: copied with one change);
- asyncio's TLS protocol (broker/agents/tls_read_buffer.py: one read buffer per thread,
  a list for its write backlog);
- asyncssh's handler of ``env`` channel requests (the gateway's channel refuses them);
- the local user name asyncssh asks for (broker/agents/descriptors.py writes LOGNAME);
- asyncssh's outbound connect (agent/ssh_over_tunnel.py: its steps after the options are
  made, done by broker/agents/tunnel_ssh.py on one shared options object and by
  agent/reverse_ssh.py on options made in the event loop);
- asyncssh's client authentication (broker/agents/tunnel_ssh.py: one signed public-key
  request, without "none" and the key query before it);
- asyncssh's packet sender (agent/ignore_packets.py: no ignore packet before each packet);
- asyncssh's key exchange (broker/agents/tunnel_ssh.py: the KEXINIT payloads let go once a
  key exchange is done);
- asyncio's Event and asyncssh's close event (broker/agents/tunnel_ssh.py: a list for its
  waiters);
- aiohttp's request handler (broker/agents/ws_takeover.py: an upgraded tunnel's connection
  taken off it);
- asyncssh's channel window (broker/sessions/channel_windows.py: a session channel's window
  changed after it opened).
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto as sslproto
import datetime as dt
import hashlib
import inspect
import os
import pwd
import re
import ssl
import sys
import textwrap
from asyncio import base_events, selector_events
from pathlib import Path

import aiohttp.http_writer
import aiohttp.web_protocol
import asyncssh
import pytest
from asyncssh.auth import _ClientPublicKeyAuth
from asyncssh.channel import SSHServerChannel
from asyncssh.misc import map_handler_name

from agent.ignore_packets import NO_IV_CHAINING, ignore_buys_nothing
from broker.agents import descriptors, tls_read_buffer
from broker.agents.tunnel_ssh import TunnelConnection
from broker.keys import make_tls_certificate
from broker.ssh_gateway.session import GatewayChannel

#: sha256 of ``inspect.getsource`` of Python 3.11's ``_accept_connection``, dedented: the
#: method broker/agents/descriptors.py copies. Another digest means asyncio changed it.
ACCEPT_SOURCE_SHA256 = "a796a1e1085c0998340178865ed7dc7922fe41fe8a878b839079f4f89c7113d6"
#: sha256 of ``inspect.getsource`` of asyncssh 2.24.1's ``connection._connect``, dedented:
#: the steps agent/ssh_over_tunnel.py repeats once the options are made.
CONNECT_SOURCE_SHA256 = "7d35aa724ce6fb893f755422547d90238875b672953da76cea0fd7072eb76fbf"
#: sha256 of asyncssh 2.24.1's ``SSHClientConnection.try_next_auth`` and of its
#: ``_ClientPublicKeyAuth`` class, dedented: what broker/agents/tunnel_ssh.py builds on.
TRY_NEXT_AUTH_SHA256 = "7d116d46d5b2d549303b966aacf6a86fe7afda6455b0c023dd09ea58e3726163"
PUBLIC_KEY_AUTH_SHA256 = "ce6948c58bebb5567166a46ba8114af116a95fba38533c861641339c5a7256dd"
#: sha256 of ``inspect.getsource`` of asyncssh 2.24.1's ``SSHConnection.send_packet``,
#: dedented: the method agent/ignore_packets.py wraps on each connection.
SEND_PACKET_SOURCE_SHA256 = "731d9ba1d3386e803b93c3a54b02f5fba1630a46a450941ca36e401f63e1188e"
#: sha256 of ``inspect.getsource`` of asyncssh 2.24.1's ``SSHServerConnection.reload_config``,
#: dedented: what agent/reverse_ssh.py skips (it re-prepares the options, nothing else).
RELOAD_CONFIG_SHA256 = "47e6b5f4963f660294fbabdebdc01073ea3d65781604a42db483b2558d8ecac9"
WAIT = 10.0  # failure bound, never a pause


def _source(function: object) -> str:
    return textwrap.dedent(inspect.getsource(function))  # type: ignore[arg-type]


def test_the_accept_batch_copied_is_the_installed_one() -> None:
    """On Python 3.11 asyncio's accept batch is, character for character, the one the fix
    was copied from, and the private helpers the copy calls still exist; elsewhere the fix
    stays out."""
    original = descriptors.ASYNCIO_ACCEPT
    if sys.version_info[:2] != (3, 11):
        assert not descriptors.install_accept_fix(), "the fix is written for Python 3.11 only"
        return
    assert original is not None, "asyncio has no BaseSelectorEventLoop._accept_connection"
    digest = hashlib.sha256(_source(original).encode()).hexdigest()
    assert digest == ACCEPT_SOURCE_SHA256, (
        "asyncio's _accept_connection is not the one broker/agents/descriptors.py copied: "
        "port the difference into the copy (or drop the fix if asyncio has it) and update "
        "ACCEPT_SOURCE_SHA256"
    )
    assert tuple(inspect.signature(original).parameters) == tuple(
        inspect.signature(descriptors._accept_connection).parameters
    )
    loop_class = selector_events.BaseSelectorEventLoop
    expected = {
        "_accept_connection2": (
            "self",
            "protocol_factory",
            "conn",
            "extra",
            "sslcontext",
            "server",
            "ssl_handshake_timeout",
            "ssl_shutdown_timeout",
        ),
        "_start_serving": (
            "self",
            "protocol_factory",
            "sock",
            "sslcontext",
            "server",
            "backlog",
            "ssl_handshake_timeout",
            "ssl_shutdown_timeout",
        ),
        "_remove_reader": ("self", "fd"),
    }
    for name, parameters in expected.items():
        assert tuple(inspect.signature(getattr(loop_class, name)).parameters) == parameters, name
    assert descriptors.install_accept_fix()
    assert loop_class.__dict__["_accept_connection"] is descriptors._accept_connection


def test_the_tls_layer_reads_only_through_the_buffer_it_hands_out() -> None:
    """asyncio builds its TLS protocol from the module attribute at every connection, and
    the protocol copies out of the buffer it handed the loop before anything else runs:
    what lets one buffer per thread serve every connection."""
    base = tls_read_buffer.SharedBufferSSLProtocol.__base__
    assert base is not None
    assert f"{base.__module__}.{base.__name__}" == "asyncio.sslproto.SSLProtocol"
    members = vars(base)
    for builder in (
        vars(selector_events.BaseSelectorEventLoop)["_make_ssl_transport"],
        vars(base_events.BaseEventLoop)["start_tls"],
    ):
        assert "sslproto.SSLProtocol(" in _source(builder), (
            f"{builder.__qualname__} no longer builds sslproto.SSLProtocol: swapping the "
            "class (tls_read_buffer.install) would not reach its connections"
        )
    body = _source(base)
    users = [
        name
        for name, member in members.items()
        if inspect.isfunction(member) and "_ssl_buffer" in _source(member)
    ]
    assert sorted(users) == ["__init__", "buffer_updated", "get_buffer"], (
        "asyncio's SSLProtocol uses its read buffer in more places than "
        "broker/agents/tls_read_buffer.py knows of: check that sharing it is still safe"
    )
    first = _source(members["buffer_updated"]).split("\n")[1].strip()
    assert first == "self._incoming.write(self._ssl_buffer_view[:nbytes])", (
        "buffer_updated no longer copies the bytes out first: a shared buffer could be "
        "overwritten before they are read"
    )
    assert "self._ssl_buffer_view = memoryview(self._ssl_buffer)" in body
    assert "max_size" in _source(members["get_buffer"])


async def test_tls_connections_share_one_read_buffer(tmp_path: Path) -> None:
    """With the shared buffer installed, two real TLS connections on loopback carry their
    bytes, and both read into the one buffer of this thread."""
    cert, key = make_tls_certificate("https://localhost", dt.datetime.now(dt.UTC))
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    client_ctx = ssl.create_default_context(cafile=tmp_path / "cert.pem")
    assert tls_read_buffer.install()
    protocols: list[sslproto.SSLProtocol] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        transport = writer.transport
        protocols.append(transport._ssl_protocol)  # type: ignore[attr-defined]
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    async with asyncio.timeout(WAIT), server:
        for line in (b"first\n", b"second\n"):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost"
            )
            writer.write(line)
            assert await reader.readline() == line
            writer.close()
            await writer.wait_closed()
    assert [type(p) for p in protocols] == [tls_read_buffer.SharedBufferSSLProtocol] * 2
    buffers = {id(vars(p)["_ssl_buffer_view"].obj) for p in protocols}
    assert len(buffers) == 1
    assert {type(vars(p)["_write_backlog"]) for p in protocols} == {list}


def test_the_tls_write_backlog_needs_nothing_a_list_lacks() -> None:
    """broker/agents/tls_read_buffer.py gives asyncio's TLS protocol a list for its write
    backlog (an empty deque is 760 bytes, a list 56): every use of it in asyncio must be one
    a list has. Another use (popleft, appendleft, ...) means going back to a deque."""
    source = inspect.getsource(sslproto)
    uses = set(re.findall(r"\._write_backlog(\S*)", source))
    allowed = {"", ":", "[0]", ".append(data)", ".clear()"}
    assert uses <= allowed, f"asyncio's TLS layer uses its write backlog as {uses - allowed}"
    assert "del self._write_backlog[0]" in source


def test_the_kexinit_payloads_are_read_only_by_the_exchange_hash() -> None:
    """broker/agents/tunnel_ssh.py empties both KEXINIT payloads once a key exchange sent
    its new keys. That is safe while asyncssh reads them only in ``get_hash_prefix`` (the
    exchange hash) and sets both afresh, in ``_send_kexinit`` and ``_process_kexinit``,
    before the next exchange hashes them. Anything else reading them: re-check."""
    module = inspect.getsource(asyncssh.connection)
    for name in ("_client_kexinit", "_server_kexinit"):
        users = sorted(
            member
            for member, value in vars(asyncssh.connection.SSHConnection).items()
            if inspect.isfunction(value) and name in _source(value)
        )
        assert users == ["__init__", "_process_kexinit", "_send_kexinit", "get_hash_prefix"], (
            f"asyncssh uses {name} in {users}: re-check TunnelConnection.send_newkeys"
        )
        assert module.count(name) == 4, f"asyncssh uses {name} outside SSHConnection"
    newkeys = _source(asyncssh.connection.SSHConnection.send_newkeys)
    assert "get_hash_prefix" not in newkeys
    for kex in (asyncssh.kex_dh, asyncssh.kex_rsa):
        assert "get_hash_prefix" in inspect.getsource(kex)


def test_env_requests_reach_the_method_the_gateway_overrides() -> None:
    """asyncssh dispatches an ``env`` channel request to ``_process_env_request`` and, left
    alone, keeps every variable (unbounded, and logged with its value): the reason the
    gateway's channel overrides it. A change here means the override no longer refuses."""
    name = "_process_" + map_handler_name("env") + "_request"
    assert name == "_process_env_request"
    base = SSHServerChannel.__dict__.get(name)
    assert base is not None, "asyncssh no longer handles env requests in SSHServerChannel"
    assert tuple(inspect.signature(base).parameters) == ("self", "packet")
    assert "self._env[key] = value" in _source(base), (
        "asyncssh changed how it keeps env requests: see whether it now offers a supported "
        "way to refuse them, and drop GatewayChannel._process_env_request if so"
    )
    assert GatewayChannel.__dict__[name] is not base


def test_asyncssh_still_asks_for_the_local_user_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """asyncssh's client options ask for the local user name, and fail without one: why
    the broker pins LOGNAME at start. When this stops failing, the pin can go."""
    for variable in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.delenv(variable, raising=False)

    def no_entry(_uid: int) -> pwd.struct_passwd:
        raise KeyError("no passwd entry")

    monkeypatch.setattr(pwd, "getpwuid", no_entry)

    def options() -> asyncssh.SSHClientConnectionOptions:
        return asyncssh.SSHClientConnectionOptions(
            config=None, known_hosts=None, client_keys=None, agent_path=None, gss_host=None
        )

    with pytest.raises(ValueError, match="Unknown local username"):
        options()
    descriptors.pin_local_username()
    assert os.environ["LOGNAME"] == "secondline"
    options()


def test_the_tunnel_connect_repeats_what_asyncssh_connect_does() -> None:
    """agent/ssh_over_tunnel.py opens both ends of an agent tunnel on options already made
    (the broker's one shared object), repeating asyncssh's connect steps: the connection
    takes its waiter from the options as it is made. Another digest means asyncssh changed
    those steps: read the new ``_connect`` and update ``open_over_tunnel`` (then this
    digest)."""
    source = textwrap.dedent(inspect.getsource(asyncssh.connection._connect))
    assert hashlib.sha256(source.encode()).hexdigest() == CONNECT_SOURCE_SHA256, (
        "asyncssh.connection._connect changed: re-check agent/ssh_over_tunnel.py"
    )
    init = inspect.getsource(asyncssh.connection.SSHConnection.__init__)
    assert "self._waiter = options.waiter if wait else None" in init, (
        "asyncssh's connection no longer takes its waiter from the options as it is made: "
        "agent/ssh_over_tunnel.py sets options.waiter just before making it"
    )


def test_the_agents_reverse_connect_repeats_what_asyncssh_connect_reverse_does() -> None:
    """agent/reverse_ssh.py makes the agent's server connection as ``connect_reverse`` does
    (after ``_connect``'s steps, pinned above) and keeps its options when the first
    authentication request arrives, where asyncssh re-prepares them for configuration
    files the agent does not read. Another digest means asyncssh changed what that
    re-preparation does: re-check ``TunnelServerConnection.reload_config``."""
    reverse = inspect.getsource(asyncssh.connect_reverse)
    assert "SSHServerConnection(loop, new_options, wait='auth')" in reverse, (
        "asyncssh.connect_reverse makes its connection differently: re-check agent/reverse_ssh.py"
    )
    userauth = inspect.getsource(asyncssh.connection.SSHConnection._finish_userauth)
    assert "reload_config()" in userauth
    digest = hashlib.sha256(_source(asyncssh.SSHServerConnection.reload_config).encode())
    assert digest.hexdigest() == RELOAD_CONFIG_SHA256, (
        "asyncssh's SSHServerConnection.reload_config changed: re-check agent/reverse_ssh.py"
    )


def test_the_tunnel_auth_builds_on_the_installed_client_auth() -> None:
    """broker/agents/tunnel_ssh.py starts the tunnel's authentication with the signed
    public-key request: it replaces the first method asyncssh tries ("none") and the
    query of its public-key auth, and reuses the rest. Another digest means asyncssh
    changed them: re-check ``TunnelConnection`` and ``_SignedPublicKeyAuth``."""
    sources = {
        "try_next_auth": (asyncssh.SSHClientConnection.try_next_auth, TRY_NEXT_AUTH_SHA256),
        "_ClientPublicKeyAuth": (_ClientPublicKeyAuth, PUBLIC_KEY_AUTH_SHA256),
    }
    for name, (member, expected) in sources.items():
        digest = hashlib.sha256(_source(member).encode()).hexdigest()
        assert digest == expected, f"asyncssh's {name} changed: re-check tunnel_ssh.py"
    init = inspect.getsource(asyncssh.connection.SSHConnection.__init__)
    assert "self._auth_methods = [b'none']" in init, (
        "asyncssh no longer starts authentication with 'none': re-check what "
        "TunnelConnection replaces"
    )


def test_the_ignore_packet_goes_through_the_instance_and_only_after_encryption() -> None:
    """agent/ignore_packets.py drops the ignore packet asyncssh puts before every packet by
    replacing ``send_packet`` on the connection: that works while asyncssh sends it with a
    call through ``self`` once encryption is on, and its send_cipher extra info names the
    cipher then. Another digest means asyncssh changed how it sends packets: re-check
    agent/ignore_packets.py, then update SEND_PACKET_SOURCE_SHA256."""
    send_packet = asyncssh.connection.SSHConnection.send_packet
    source = _source(send_packet)
    assert hashlib.sha256(source.encode()).hexdigest() == SEND_PACKET_SOURCE_SHA256, (
        "asyncssh's SSHConnection.send_packet changed: re-check agent/ignore_packets.py"
    )
    assert "if self._send_encryption and pkttype > MSG_KEX_LAST:" in source
    assert "self.send_packet(MSG_IGNORE, String(b''))" in source
    assert tuple(inspect.signature(send_packet).parameters) == (
        "self",
        "pkttype",
        "args",
        "handler",
    )
    newkeys = _source(asyncssh.connection.SSHConnection.send_newkeys)
    assert newkeys.count("send_cipher=") == 2  # client and server, with _send_encryption


@pytest.mark.parametrize(
    ("cipher", "needs_none"),
    [
        ("aes128-gcm@openssh.com", True),
        ("aes256-gcm@openssh.com", True),
        ("chacha20-poly1305@openssh.com", True),
        ("aes128-ctr", True),
        ("aes256-ctr", True),
        ("aes128-cbc", False),
        ("aes256-cbc", False),
        ("3des-cbc", False),
        ("", False),
        (None, False),
    ],
)
def test_only_ciphers_without_iv_chaining_go_without_ignore_packets(
    cipher: object, needs_none: bool
) -> None:
    """A CBC cipher (whose next IV is the last ciphertext block sent), or a cipher not
    known yet, keeps asyncssh's ignore packets; AEAD and counter mode drop them."""
    assert ignore_buys_nothing(cipher) is needs_none
    assert all(not suffix.endswith("cbc") for suffix in NO_IV_CHAINING)


def test_the_close_event_waiters_need_nothing_a_list_lacks() -> None:
    """broker/agents/tunnel_ssh.py gives each tunnel connection's close event (the one
    ``wait_closed`` waits on, made in asyncssh's ``__init__``) a list for its waiters.
    Every use of them in asyncio's Event must be one a list has, and asyncssh must still
    make that event in ``__init__`` and wait on it in ``wait_closed``."""
    source = _source(asyncio.Event)
    uses = set(re.findall(r"\._waiters(\S*)", source))
    allowed = {"", ":", ")}'", ".append(fut)", ".remove(fut)"}
    assert uses <= allowed, f"asyncio's Event uses its waiters as {uses - allowed}"
    connection = asyncssh.connection.SSHConnection
    assert "self._close_event = asyncio.Event()" in _source(connection.__init__)
    assert "await self._close_event.wait()" in _source(connection.wait_closed)
    assert "_close_event" in _source(TunnelConnection.__init__)


def test_a_channel_grants_up_to_the_window_the_broker_sets() -> None:
    """broker/sessions/channel_windows.py changes an open channel's ``_init_recv_window``:
    asyncssh must still grant up to it (and only once half of it is used), read it as the
    channel's window, and check incoming data against what it granted, not against it."""
    channel = asyncssh.channel.SSHChannel
    flush = _source(channel._deliver_data)
    assert "if self._recv_window < self._init_recv_window / 2:" in flush
    assert "adjust = self._init_recv_window - self._recv_window" in flush
    assert "self._recv_window = self._init_recv_window" in flush
    assert "return self._init_recv_window" in _source(channel.get_recv_window)
    module = inspect.getsource(asyncssh.channel)
    assert module.count("_init_recv_window") == 6, "asyncssh uses the window elsewhere now"
    assert "if datalen > self._recv_window:" in _source(channel._process_data)


def test_an_upgraded_connection_can_be_taken_off_aiohttp() -> None:
    """broker/agents/ws_takeover.py takes an accepted tunnel's connection from aiohttp's
    ``RequestHandler``: it takes the bytes after the upgrade from ``_message_tail``, sets
    the handler's ``transport`` to None and calls its ``connection_lost``, which must then
    close nothing (it closes only through ``force_close``, which closes ``self.transport``
    when there is one), and the response the handler returns must find no transport to be
    written to. If this fails, read the installed aiohttp's web_protocol.py and adapt
    ws_takeover.py (or give up the takeover: WebSocketResponse as before it)."""
    handler = aiohttp.web_protocol.RequestHandler
    assert "_message_tail" in handler.__slots__
    assert "self._message_tail = tail" in _source(handler.data_received)
    lost = _source(handler.connection_lost)
    assert "self.force_close()" in lost
    assert "transport" not in lost.replace("exc", ""), "connection_lost touches the transport"
    force_close = _source(handler.force_close)
    assert "if self.transport is not None:" in force_close
    writer = _source(aiohttp.http_writer.StreamWriter._write)
    assert "transport = self._protocol.transport" in writer
    assert "if transport is None" in writer
