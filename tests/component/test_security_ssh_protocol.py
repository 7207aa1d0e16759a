"""Hostile SSH clients against the gateway (SSH state-machine laxity: asyncssh CVE-2018-7749,
Terrapin CVE-2023-48795): strict key exchange, and out-of-phase or malformed messages in
every phase before sign-in end the connection, with nothing signed in, started or audited
as a success, and the gateway still serving the next client.

Before NEWKEYS the client is raw bytes (``tests.support.raw_ssh``); after it, an asyncssh
client that stops after the key exchange and then sends what the test asks
(``tests.support.raw_ssh.HostileConnection``)."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given
from hypothesis import strategies as st

from broker.ssh_gateway.gateway import (
    ENCRYPTION_ALGS,
    KEX_ALGS,
    LEGACY_ENCRYPTION_ALGS,
    MAC_ALGS,
)
from broker.ssh_gateway.wire import ClientCleartext
from tests.component.test_sessions_harness import World, world
from tests.support.raw_ssh import (
    DISCONNECT_PROTOCOL_ERROR,
    DISCONNECT_SERVICE_NOT_AVAILABLE,
    MSG_CHANNEL_OPEN,
    MSG_DEBUG,
    MSG_DISCONNECT,
    MSG_GLOBAL_REQUEST,
    MSG_IGNORE,
    MSG_KEX_ECDH_INIT,
    MSG_KEX_ECDH_REPLY,
    MSG_KEXINIT,
    MSG_NEWKEYS,
    MSG_SERVICE_REQUEST,
    MSG_UNIMPLEMENTED,
    MSG_USERAUTH_REQUEST,
    MSG_USERAUTH_SUCCESS,
    STRICT_KEX_CLIENT,
    STRICT_KEX_SERVER,
    Closed,
    KexInit,
    RawSshClient,
    boolean,
    client_kexinit,
    frame,
    keyed_connection,
    message,
    string,
    uint32,
)

pytestmark = pytest.mark.postgres

BOUND = 30.0  # failure bound for every wait here (the machines are shared), never a pause

STRICT = client_kexinit()
LEGACY = client_kexinit(strict=False)  # a client from before strict kex (OpenSSH < 9.6)
# Clients without strict kex are refused unless this setting lets them in.
LEGACY_ALLOWED = {"SECONDLINE_SSH_ALLOW_LEGACY_KEX": "true"}
DISCONNECT_KEY_EXCHANGE_FAILED = 3
MSG_CHANNEL_REQUEST = 98


def packet(msg: int, *fields: bytes) -> bytes:
    return frame(message(msg, *fields))


def channel_open(kind: str, *extra: bytes) -> bytes:
    return message(
        MSG_CHANNEL_OPEN, string(kind), uint32(0), uint32(1 << 21), uint32(32768), *extra
    )


def userauth_none(user: str = "T-1") -> bytes:
    return message(MSG_USERAUTH_REQUEST, string(user), string("ssh-connection"), string("none"))


def tcpip_forward() -> bytes:
    return message(
        MSG_GLOBAL_REQUEST, string("tcpip-forward"), boolean(True), string(""), uint32(0)
    )


def ecdh_init() -> bytes:
    """A well-formed curve25519 KEX_ECDH_INIT: the server answers it with its reply and
    NEWKEYS, so what follows arrives in the middle of the key exchange."""
    public = X25519PrivateKey.generate().public_key()
    return packet(MSG_KEX_ECDH_INIT, string(public.public_bytes(Encoding.Raw, PublicFormat.Raw)))


async def raw_attempt(w: World, kexinit: KexInit | None, data: bytes) -> Closed:
    """Exchange versions (and KEXINITs when ``kexinit`` is given), send ``data``, and read
    until the gateway closes; a gateway that keeps the connection open fails the test."""
    client = await RawSshClient.connect("127.0.0.1", w.gateway_port)
    try:
        async with asyncio.timeout(BOUND):
            await client.start(kexinit)
            await client.send(data)
            return await client.closed()
    finally:
        await client.close()


async def raw_bytes(w: World, data: bytes) -> Closed:
    """Send ``data`` as the very first bytes of a connection; read until it is closed."""
    client = await RawSshClient.connect("127.0.0.1", w.gateway_port)
    try:
        async with asyncio.timeout(BOUND):
            await client.send(data)
            return await client.closed()
    finally:
        await client.close()


def assert_protocol_error(closed: Closed, what: str) -> None:
    assert closed.disconnect is not None, (what, closed)
    assert closed.disconnect.code == DISCONNECT_PROTOCOL_ERROR, (what, closed.disconnect)
    assert closed.payloads[-1][0] == MSG_DISCONNECT, (what, closed.types())
    assert MSG_NEWKEYS not in closed.types(), what


async def last_audit_seq(w: World) -> int:
    _, events = await w.call("GET", "/audit?limit=1", expect=200)
    return int(events[0]["seq"]) if events else 0


async def signed_in_and_untouched(w: World, since: int) -> None:
    """The gateway still signs a normal client in; nothing since audit event ``since`` was a
    success, no session exists, and no connection is left counted as signing in."""
    async with await w.ssh():
        pass
    _, events = await w.call("GET", "/audit?limit=1000", expect=200)
    new = [e for e in events if e["seq"] > since and e["action"] != "ssh.legacy_kex"]
    assert [e for e in new if e["outcome"] == "ok" or e["action"].startswith("session.")] == []
    _, sessions = await w.call("GET", "/sessions", expect=200)
    assert sessions == []

    async def settled() -> bool:
        return w.runtime.gateway.signing_in() == 0

    await w.wait_for(settled, "every refused connection released")


async def a_session_still_runs(w: World) -> None:
    async with await w.ssh() as conn:
        result = await conn.run("echo still-serving", timeout=BOUND)
    assert (result.exit_status, result.stdout) == (0, "still-serving\n")


def no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing in the gateway, asyncssh or the event loop failed (an exception in a protocol
    callback is logged by asyncio, in a gateway callback by the gateway)."""
    watched = ("broker.sessions", "asyncssh", "asyncio")
    errors = [
        r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith(watched)
    ]
    assert errors == [], [r.getMessage() for r in errors]


async def test_server_offers_strict_kex_and_no_terrapin_prone_cipher(
    data_dir: Path, tmp_path: Path
) -> None:
    """The gateway's KEXINIT carries kex-strict-s-v00@openssh.com and only AES-GCM ciphers
    (CTR only with ssh_allow_legacy_kex), whether the client is strict, legacy or has sent
    nothing yet."""
    async with world(data_dir, tmp_path) as w:
        for kexinit in (STRICT, LEGACY, None):
            client = await RawSshClient.connect("127.0.0.1", w.gateway_port)
            try:
                async with asyncio.timeout(BOUND):
                    version = await client.start(kexinit)
            finally:
                await client.close()
            assert STRICT_KEX_SERVER in version.kex_algorithms, kexinit
            assert version.kex_algorithms[-1] == STRICT_KEX_SERVER  # a marker, never chosen
            for ciphers in (version.ciphers_c2s, version.ciphers_s2c):
                assert set(ciphers) <= set(ENCRYPTION_ALGS), ciphers
                assert not [c for c in ciphers if "chacha20" in c or c.endswith("-cbc")]
            assert version.compression_c2s == ("none",) or "none" in version.compression_c2s
            offered = [*version.kex_algorithms, *version.macs_c2s, *version.macs_s2c]
            assert not [a for a in offered if "sha1" in a or a.startswith(("gss-", "rsa"))]
            assert set(version.kex_algorithms) == {*KEX_ALGS, "ext-info-s", STRICT_KEX_SERVER}
            assert set(version.macs_c2s) == set(MAC_ALGS)


async def test_strict_kex_refuses_ignore_debug_and_unimplemented(
    data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With strict kex, IGNORE, DEBUG or UNIMPLEMENTED before the key exchange ends (right
    after KEXINIT, or after the server's NEWKEYS: the Terrapin injection point) or a
    message before KEXINIT ends the connection."""
    ignore = message(MSG_IGNORE, string(b"terrapin"))
    debug = message(MSG_DEBUG, boolean(True), string("hello"), string(""))
    unimplemented = message(MSG_UNIMPLEMENTED, uint32(3))
    async with world(data_dir, tmp_path) as w:
        since = await last_audit_seq(w)
        for name, payload in (("IGNORE", ignore), ("DEBUG", debug), ("UNIMPL", unimplemented)):
            closed = await raw_attempt(w, STRICT, frame(payload))
            assert_protocol_error(closed, name)
            assert closed.disconnect is not None
            assert "Strict key exchange violation" in closed.disconnect.reason, name
            await signed_in_and_untouched(w, since)

            # In the middle of the exchange: the server has answered and sent NEWKEYS; the
            # client's NEWKEYS never comes, an injected message does.
            closed = await raw_attempt(w, STRICT, ecdh_init() + frame(payload))
            assert closed.types() == [MSG_KEX_ECDH_REPLY, MSG_NEWKEYS], name
            assert closed.encrypted_bytes > 0, name  # the DISCONNECT, under the new keys
            await signed_in_and_untouched(w, since)

            # Before KEXINIT: strict kex needs KEXINIT to be the client's first packet.
            closed = await raw_attempt(w, None, frame(payload) + frame(STRICT.serialize()))
            assert_protocol_error(closed, name)
            assert closed.disconnect is not None
            assert "KEXINIT was not the first packet" in closed.disconnect.reason, name
            await signed_in_and_untouched(w, since)
        await a_session_still_runs(w)
        no_errors_logged(caplog)


async def audit_events(w: World, since: int, action: str) -> list[dict[str, Any]]:
    _, events = await w.call("GET", "/audit?limit=1000", expect=200)
    return [e for e in events if e["seq"] > since and e["action"] == action]


async def refused_without_strict_kex(w: World, since: int) -> int:
    _, events = await w.call("GET", "/audit?limit=1000", expect=200)
    new = [e for e in events if e["seq"] > since]
    return sum(
        e["details"]["kinds"].get("ssh.refused: no strict key exchange", 0)
        for e in new
        if e["action"] == "anonymous.refused"
    )


async def test_clients_without_strict_kex_are_refused_before_any_key_exchange_reply(
    data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A KEXINIT without kex-strict-c-v00@openssh.com (Terrapin, CVE-2023-48795) gets the
    gateway's KEXINIT, then DISCONNECT (key exchange failed) saying why, never a
    KEX_ECDH_REPLY, whether the client waits or sends its key share at once; each refusal
    is audited, nothing is signed in, and strict clients are served."""
    version = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"
    at_once = version + frame(LEGACY.serialize()) + ecdh_init()
    guessed = KexInit(kex_algorithms=("curve25519-sha256",), first_kex_follows=True)
    async with world(data_dir, tmp_path) as w:
        since = await last_audit_seq(w)
        attempts = [
            await raw_attempt(w, LEGACY, ecdh_init()),
            await raw_attempt(w, guessed, ecdh_init()),
            await raw_bytes(w, at_once),
        ]
        client = await RawSshClient.connect("127.0.0.1", w.gateway_port)
        try:
            async with asyncio.timeout(BOUND):
                for byte in at_once:  # one byte per write
                    await client.send(bytes([byte]))
                attempts.append(await client.closed())
        finally:
            await client.close()
        for closed in attempts:
            assert closed.disconnect is not None, closed
            assert closed.disconnect.code == DISCONNECT_KEY_EXCHANGE_FAILED, closed.disconnect
            assert "strict key exchange" in closed.disconnect.reason
            assert "CVE-2023-48795" in closed.disconnect.reason
            assert MSG_KEX_ECDH_REPLY not in closed.types(), closed.types()
            assert MSG_NEWKEYS not in closed.types(), closed.types()
        assert attempts[2].types() == [MSG_KEXINIT, MSG_DISCONNECT]

        async def audited() -> bool:
            return await refused_without_strict_kex(w, since) == len(attempts)

        # Counted into the summary of their source (written when the log is read).
        await w.wait_for(audited, "each refusal audited")
        for event in await audit_events(w, since, "anonymous.refused"):
            assert (event["actor"], event["outcome"]) == ("anonymous", "denied")
        assert await audit_events(w, since, "ssh.legacy_kex") == []
        await signed_in_and_untouched(w, since)
        await a_session_still_runs(w)
        no_errors_logged(caplog)


async def test_the_legacy_setting_lets_clients_without_strict_kex_in_and_audits_each(
    data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With ssh_allow_legacy_kex a client without strict kex gets its key exchange reply
    and NEWKEYS; every such connection is audited (ssh.legacy_kex, with its version line),
    strict clients are not."""
    async with world(data_dir, tmp_path, env=LEGACY_ALLOWED) as w:
        since = await last_audit_seq(w)
        for _ in range(2):
            client = await RawSshClient.connect("127.0.0.1", w.gateway_port)
            try:
                async with asyncio.timeout(BOUND):
                    offered = await client.start(LEGACY)
                    # CTR for clients older than AES-GCM, offered only with the setting on
                    assert set(offered.ciphers_c2s) == set(LEGACY_ENCRYPTION_ALGS)
                    await client.send(ecdh_init())
                    assert await client.next_payload() is not None  # KEX_ECDH_REPLY
                    newkeys = await client.next_payload()
                    assert newkeys is not None
                    assert newkeys[0] == MSG_NEWKEYS
            finally:
                await client.close()
        await a_session_still_runs(w)  # a strict client: not audited as legacy

        async def audited() -> bool:
            return len(await audit_events(w, since, "ssh.legacy_kex")) >= 2

        await w.wait_for(audited, "each legacy client audited")
        legacy = await audit_events(w, since, "ssh.legacy_kex")
        assert len(legacy) == 2
        for event in legacy:
            assert event["details"]["client"] == "SSH-2.0-SecondlineRawTest_1.0"
            assert event["details"]["setting"] == "ssh_allow_legacy_kex"
            assert event["source"] == "127.0.0.1"
        assert await refused_without_strict_kex(w, since) == 0
        no_errors_logged(caplog)


OUT_OF_PHASE: Sequence[tuple[str, KexInit | None, bytes]] = (
    ("SERVICE_REQUEST", STRICT, packet(MSG_SERVICE_REQUEST, string("ssh-userauth"))),
    ("SERVICE_REQUEST, legacy", LEGACY, packet(MSG_SERVICE_REQUEST, string("ssh-userauth"))),
    ("SERVICE_REQUEST first", None, packet(MSG_SERVICE_REQUEST, string("ssh-userauth"))),
    ("USERAUTH_REQUEST none", STRICT, frame(userauth_none())),
    ("USERAUTH_REQUEST none, legacy", LEGACY, frame(userauth_none())),
    ("USERAUTH_REQUEST mid-kex", STRICT, ecdh_init() + frame(userauth_none())),
    ("CHANNEL_OPEN session", STRICT, frame(channel_open("session"))),
    ("CHANNEL_OPEN session first", None, frame(channel_open("session"))),
    ("CHANNEL_OPEN direct-tcpip", LEGACY, frame(channel_open("direct-tcpip"))),
    ("GLOBAL_REQUEST tcpip-forward", STRICT, frame(tcpip_forward())),
    ("GLOBAL_REQUEST legacy", LEGACY, frame(tcpip_forward())),
    ("NEWKEYS before KEXINIT", None, packet(MSG_NEWKEYS)),
    ("NEWKEYS before the exchange", STRICT, packet(MSG_NEWKEYS)),
    ("second KEXINIT", STRICT, frame(STRICT.serialize())),
    ("second KEXINIT, legacy", LEGACY, frame(LEGACY.serialize())),
    ("KEXINIT after ECDH_INIT", STRICT, ecdh_init() + frame(STRICT.serialize())),
    ("KEXINIT after ECDH_INIT, legacy", LEGACY, ecdh_init() + frame(LEGACY.serialize())),
    ("ECDH_REPLY from the client", LEGACY, packet(MSG_KEX_ECDH_REPLY, string(b"x" * 32))),
    ("message 200", STRICT, packet(200)),
    ("message 200, legacy", LEGACY, packet(200)),
    ("message 255 first", None, packet(255)),
    ("unassigned message 10, legacy", LEGACY, packet(10)),
    ("EXT_INFO from the client", LEGACY, packet(7, uint32(0))),
    ("USERAUTH_SUCCESS from the client", LEGACY, packet(MSG_USERAUTH_SUCCESS)),
)


async def test_out_of_phase_messages_before_key_exchange_end_the_connection(
    data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Service, user-auth, channel and global requests, NEWKEYS, a second KEXINIT and
    unknown message numbers before the key exchange ends are each answered with DISCONNECT
    (protocol error), from strict and legacy clients alike; the gateway serves on."""
    async with world(data_dir, tmp_path, env=LEGACY_ALLOWED) as w:
        since = await last_audit_seq(w)
        for name, kexinit, data in OUT_OF_PHASE:
            closed = await raw_attempt(w, kexinit, data)
            if MSG_KEX_ECDH_REPLY in closed.types():
                # Refused after the server's NEWKEYS: the DISCONNECT is encrypted.
                assert closed.types()[-1] == MSG_NEWKEYS, name
                assert closed.encrypted_bytes > 0, name
            else:
                assert_protocol_error(closed, name)
            await signed_in_and_untouched(w, since)
        await a_session_still_runs(w)
        no_errors_logged(caplog)


BAD_VERSIONS: Sequence[tuple[str, bytes]] = (
    ("not SSH", b"HELLO\r\n"),
    ("HTTP", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("SSH-1.5", b"SSH-1.5-OldClient\r\n"),
    ("SSH-2.0 without software", b"SSH-2.0-\r\n"),
    ("NUL", b"SSH-2.0-Client\x00\r\n"),
    ("escape sequence", b"SSH-2.0-Client\x1b[2J\x1b]52;c;aGk=\x07\r\n"),
    ("bare CR inside", b"SSH-2.0-Cli\rent\r\n"),
    ("UTF-8", "SSH-2.0-Clïent\r\n".encode()),
    ("binary", bytes(range(256))),
    ("version too long", b"SSH-2.0-" + b"A" * 300 + b"\r\n"),
    ("line without end", b"SSH-2.0-" + b"A" * 9000),
    ("other lines first", b"hello from a client\r\nSSH-2.0-Client\r\n"),
)


async def test_malformed_version_lines_end_the_connection(
    data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Garbage, control characters, non-ASCII and over-long version lines end the
    connection before any key exchange; the gateway serves on."""
    async with world(data_dir, tmp_path) as w:
        since = await last_audit_seq(w)
        for name, data in BAD_VERSIONS:
            closed = await raw_bytes(w, data)
            assert_protocol_error(closed, name)
            assert MSG_KEXINIT not in closed.types(), name  # refused before any exchange
            await signed_in_and_untouched(w, since)
        await a_session_still_runs(w)
        no_errors_logged(caplog)


def header(length: int, padding: int, msg: int = MSG_IGNORE) -> bytes:
    return uint32(length) + bytes([padding, msg]) + b"\x00\x00"


BAD_FRAMES: Sequence[tuple[str, bytes]] = (
    ("packet_length 0", header(0, 0, 0)),
    ("packet_length 0 and more", header(0, 0, 0) + packet(MSG_IGNORE, string(b""))),
    ("packet_length 5", header(5, 4)),
    ("packet_length 2^31", header(1 << 31, 4)),
    ("packet_length 2^32-1", header((1 << 32) - 1, 4)),
    ("packet_length 35004", header(35004, 4)),
    ("not a multiple of 8", header(13, 4) + b"\x00" * 9),
    ("padding 3", frame(message(MSG_IGNORE, string(b"abc")), padding=3)),
    ("padding 0", frame(message(MSG_IGNORE, string(b"abcdef")), padding=0)),
    ("padding longer than the packet", header(12, 200) + b"\x00" * 10),
    ("no payload", header(12, 11) + b"\x00" * 10),
)


async def test_malformed_packets_end_the_connection(
    data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A packet_length of 0, 5, 2^31 or past 35000, lengths off the 8-byte grid and bad
    padding end the connection at once, for strict and legacy clients; the gateway
    serves on."""
    async with world(data_dir, tmp_path, env=LEGACY_ALLOWED) as w:
        since = await last_audit_seq(w)
        for name, data in BAD_FRAMES:
            for kexinit in (STRICT, LEGACY):
                closed = await raw_attempt(w, kexinit, data)
                assert_protocol_error(closed, name)
            await signed_in_and_untouched(w, since)
        await a_session_still_runs(w)
        no_errors_logged(caplog)


def userauth(service: bytes = b"ssh-userauth") -> bytes:
    return message(MSG_SERVICE_REQUEST, string(service))


BEFORE_SIGN_IN: Sequence[tuple[str, Sequence[bytes], int, str]] = (
    (
        "CHANNEL_OPEN session",
        [channel_open("session")],
        DISCONNECT_PROTOCOL_ERROR,
        "before authentication",
    ),
    (
        "CHANNEL_OPEN after a refused sign-in",
        [userauth(), userauth_none(), channel_open("session")],
        DISCONNECT_PROTOCOL_ERROR,
        "before authentication",
    ),
    (
        "CHANNEL_OPEN direct-tcpip",
        [userauth(), channel_open("direct-tcpip", string("127.0.0.1"), uint32(22))],
        DISCONNECT_PROTOCOL_ERROR,
        "before authentication",
    ),
    (
        "CHANNEL_REQUEST exec",
        [userauth(), userauth_none(), message(MSG_CHANNEL_REQUEST, uint32(0), string("exec"))],
        DISCONNECT_PROTOCOL_ERROR,
        "before authentication",
    ),
    (
        "GLOBAL_REQUEST tcpip-forward",
        [userauth(), tcpip_forward()],
        DISCONNECT_PROTOCOL_ERROR,
        "before authentication",
    ),
    (
        "USERAUTH_REQUEST without the service request",
        [userauth_none()],
        DISCONNECT_PROTOCOL_ERROR,
        "before its service request",
    ),
    (
        "the connection service without sign-in",
        [userauth(b"ssh-connection")],
        DISCONNECT_SERVICE_NOT_AVAILABLE,
        "service",
    ),
    (
        "the user-auth service twice",
        [userauth(), userauth()],
        DISCONNECT_SERVICE_NOT_AVAILABLE,
        "service",
    ),
    (
        "USERAUTH_SUCCESS from the client",
        [userauth(), message(MSG_USERAUTH_SUCCESS)],
        DISCONNECT_PROTOCOL_ERROR,
        "userauth success",
    ),
    ("NEWKEYS again", [message(MSG_NEWKEYS)], DISCONNECT_PROTOCOL_ERROR, "not negotiated"),
    ("message 200", [message(200)], DISCONNECT_PROTOCOL_ERROR, "before authentication"),
)


async def test_messages_before_sign_in_end_the_connection(
    data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """After the key exchange, channel and global requests before sign-in, sign-in without
    the service request, services out of turn and server-only messages end the connection
    with DISCONNECT; nothing runs and nothing is signed in."""
    async with world(data_dir, tmp_path) as w:
        since = await last_audit_seq(w)
        for name, payloads, code, reason in BEFORE_SIGN_IN:
            conn = await keyed_connection(w.gateway_port, w.services.keys.ssh_host_key)
            try:
                async with asyncio.timeout(BOUND):
                    for payload in payloads:
                        conn.send_any(payload)
                    await conn.wait_closed()
            finally:
                conn.abort()
            assert conn.refusal is not None, name
            assert conn.refusal[0] == code, (name, conn.refusal)
            assert reason in conn.refusal[1].lower(), (name, conn.refusal)
            assert MSG_USERAUTH_SUCCESS not in conn.answers, name
            await signed_in_and_untouched(w, since)
        await a_session_still_runs(w)
        no_errors_logged(caplog)


# -- the gateway's check of a client's cleartext start (pure; no server) --------------------

GOOD_START = (
    b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n"
    + frame(STRICT.serialize())
    + ecdh_init()
    + packet(MSG_NEWKEYS)
)
# After the client's NEWKEYS the stream is encrypted: any bytes at all, even ones that would
# be refused before it.
ENCRYPTED = b"\x00\x00\x00\x00" + bytes(range(256)) + b"SSH-1.5-\n"


def verdict(chunks: Sequence[bytes]) -> tuple[str | None, bool]:
    check = ClientCleartext()
    for chunk in chunks:
        problem = check.feed(chunk)
        if problem is not None:
            return problem, check.done
    return None, check.done


def test_cleartext_check_passes_real_clients_in_any_slicing() -> None:
    """A well-formed start passes whole, byte by byte and with anything encrypted after
    NEWKEYS; the check ends at the client's NEWKEYS and not before."""
    stream = GOOD_START + ENCRYPTED
    assert verdict([stream]) == (None, True)
    assert verdict([bytes([b]) for b in stream]) == (None, True)
    assert verdict([GOOD_START[:-1]]) == (None, False)
    for version in (b"SSH-2.0-PuTTY_Release_0.80", b"SSH-1.99-Old", b"SSH-2.0-JSCH-0.1.54"):
        assert verdict([version + b"\n" + frame(LEGACY.serialize())]) == (None, False)
    ignored = packet(MSG_IGNORE, string(b"")) + packet(MSG_DEBUG, boolean(False), string(""))
    cut = GOOD_START.index(b"\n") + 1  # IGNORE and DEBUG before KEXINIT: legal in the clear
    assert verdict([GOOD_START[:cut], ignored, GOOD_START[cut:]]) == (None, True)


def test_cleartext_check_refuses_each_fault() -> None:
    """Each rule of the check refuses with its own reason."""
    version = b"SSH-2.0-Client\r\n"
    kexinit = frame(STRICT.serialize())
    cases = {
        b"SSH-2.0-" + b"A" * 300: "version line too long",
        b"SSH-2.0-" + b"A" * 300 + b"\n": "version line too long",
        b"SSH-2.0- leading space\n": "invalid version line",
        b"SSH-2.0-\n": "invalid version line",
        b"SSH-2.0-Cli\x7fent\n": "invalid version line",
        b"SSH-3.0-Client\n": "invalid version line",
        version + header(0, 0): "bad packet length",
        version + header(21, 4): "bad packet length",
        version + header(35000 + 4, 4): "bad packet length",
        version + header(12, 3): "bad padding length",
        version + header(12, 11): "bad padding length",
        version + header(12, 4, MSG_SERVICE_REQUEST): "message 5 before the key exchange ended",
        version + kexinit + kexinit: "second KEXINIT before the key exchange ended",
    }
    for data, reason in cases.items():
        assert verdict([data]) == (reason, False), data
        assert verdict([bytes([b]) for b in data]) == (reason, False), data


def test_cleartext_check_reads_whether_the_client_asks_for_strict_kex() -> None:
    """The check reads the strict-kex marker from the client's KEXINIT, in any slicing, and
    where that KEXINIT starts; a marker in another list or a cut list counts for nothing."""
    version = b"SSH-2.0-Client\r\n"
    elsewhere = KexInit(kex_algorithms=("curve25519-sha256",), macs_c2s=(STRICT_KEX_CLIENT,))
    cases = [(STRICT, True), (LEGACY, False), (elsewhere, False)]
    for kexinit, strict in cases:
        data = version + frame(kexinit.serialize())
        for chunks in ([data], [bytes([b]) for b in data]):
            check = ClientCleartext()
            for chunk in chunks:
                assert check.feed(chunk) is None
            assert check.strict is strict
            assert check.kexinit_at == len(version)
            assert check.version == "SSH-2.0-Client"
    check = ClientCleartext()
    assert check.feed(version + frame(STRICT.serialize())[:-5]) is None
    assert check.strict is None  # not all of it yet
    cut = message(MSG_KEXINIT, bytes(16), uint32(1000), STRICT_KEX_CLIENT.encode())
    check = ClientCleartext()
    assert check.feed(version + frame(cut)) is None
    assert check.strict is False


@given(st.binary(max_size=600), st.lists(st.integers(0, 600), max_size=8))
def test_cleartext_check_takes_any_bytes_in_any_slicing(data: bytes, cuts: list[int]) -> None:
    """Any bytes give a reason or pass, never an exception, and the verdict does not
    depend on how the stream was cut into reads."""
    points = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    chunks = [data[a:b] for a, b in itertools.pairwise(points)]
    assert verdict(chunks) == verdict([data])
    assert verdict([GOOD_START + data]) == (None, True)
    # A KEXINIT read whole or in pieces says the same about strict key exchange.
    start = b"SSH-2.0-Client\r\n" + frame(message(MSG_KEXINIT, bytes(16), data))
    cut = [start[a:b] for a, b in itertools.pairwise(sorted({0, len(start), *cuts}))]
    whole, pieces = ClientCleartext(), ClientCleartext()
    assert whole.feed(start) == next(filter(None, map(pieces.feed, cut)), None)
    assert whole.strict == pieces.strict
