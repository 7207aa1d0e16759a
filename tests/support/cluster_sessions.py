"""A session across nodes, for the cluster e2e test: staff bob's real OpenSSH client
through HAProxy on a shell whose agent another node holds, an observer's console terminal
on a third node, and a kill issued on a node other than the one running the hub."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import time
from pathlib import Path

import aiohttp

from tests.support.broker import cli_env, secondline
from tests.support.cluster import Cluster
from tests.support.site import SESSION_ID, SSH, WAIT, Terminal, keygen, ok


def opened(sid: str) -> bytes:
    """What the hub's node logs when ``sid`` opens: for its own client, or for another
    node's (named)."""
    return (
        rb"session " + sid.encode() + rb": (?:opened on this node"
        rb"|bob \(owner\) is in it from node ([a-z0-9-]+))"
    )


def add_staff(first: Path, tmp: Path) -> Path:
    """lena (level 1) and bob (level 2, an SSH key); bob's private key."""
    key = keygen(tmp / "bob_ed25519")
    ok(secondline("user", "add", "lena", "--role", "level1", "--customer", "acme", data_dir=first))
    ok(
        secondline(
            "user", "add", "bob", "--role", "level2", "--customer", "acme",
            "--ssh-key", f"{key}.pub", data_dir=first,
        )
    )  # fmt: skip
    return key


def ticket_for(first: Path, agent: str) -> str:
    """A ticket on ``agent`` at level 2, assigned to bob."""
    lena = ok(secondline("user", "token", "lena", data_dir=first))
    ref = ok(
        secondline(
            "--token", lena, "ticket", "create", "--title", "Disk full", "--customer", "acme",
            "--agent", agent, data_dir=first,
        )
    )  # fmt: skip
    ref = ref if ref.startswith("T-") else f"T-{ref}"
    ok(
        secondline(
            "--token", lena, "ticket", "escalate", ref, "--to", "2", "--reason", "needs a shell",
            data_dir=first,
        )
    )  # fmt: skip
    ok(secondline("ticket", "assign", ref, "bob", data_dir=first))
    return ref


class Ssh:
    """bob's OpenSSH client, pointed at HAProxy's SSH port."""

    def __init__(self, first: Path, tmp: Path, key: Path, port: int) -> None:
        self.tmp, self.key, self.port = tmp, key, port
        self.known_hosts = tmp / "known_hosts_lb"
        host_key = (first / "keys" / "ssh_host_ed25519.pub").read_text().split()
        self.known_hosts.write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")

    async def shell(self, user: str) -> Terminal:
        proc = await asyncio.create_subprocess_exec(
            SSH, "-F", "/dev/null", "-p", str(self.port), "-i", str(self.key),
            "-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-tt",
            f"{user}@127.0.0.1",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=cli_env(self.tmp),
        )  # fmt: skip
        return Terminal(proc)


async def session_of(terminal: Terminal) -> str:
    """The id of the session the shell runs in, as the shell itself says it."""
    terminal.type('echo "SID=$SL_SESSION"\n')
    await terminal.expect_in_order(b"SID=s-", b"\n")
    found = re.search(rb"SID=(s-[A-Za-z0-9]{22})", bytes(terminal.out))
    assert found is not None, bytes(terminal.out)[-300:]
    sid = found.group(1).decode()
    assert SESSION_ID.fullmatch(sid)
    return sid


async def landed_on(cluster: Cluster, holder: str, sid: str) -> str:
    """The node bob's SSH connection reached for ``sid``: the hub's node (``holder``) says
    whether it opened the session for its own client or for another node's."""
    line = await cluster.nodes[holder].wait_for_line(opened(sid))
    match = re.search(opened(sid), line)
    assert match is not None
    return match.group(1).decode() if match.group(1) else holder


class Observer:
    """A console terminal (the browser's WebSocket) on one node, watching a session."""

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse):
        self._http, self.ws = http, ws
        self.out = bytearray()
        self.states: list[dict[str, object]] = []

    @classmethod
    async def watch(
        cls, node_url: str, public_url: str, cert: Path, token: str, ticket: str, sid: str
    ) -> Observer:
        tls = ssl.create_default_context(cafile=str(cert))
        tls.check_hostname = False
        http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls))
        body = {"ticket_id": ticket, "mode": "observe", "session": sid}
        auth = {"Authorization": f"Bearer {token}"}
        async with http.post(
            node_url + "/api/v1/sessions/terminal-tickets", json=body, headers=auth
        ) as resp:
            minted = await resp.json()
            assert resp.status == 201, minted
        ws = await http.ws_connect(
            node_url.replace("https://", "wss://") + "/console/ws/terminal",
            headers={"Origin": public_url, **auth},
        )
        await ws.send_str(json.dumps({"ticket": minted["ticket"]}))
        return cls(http, ws)

    async def expect(self, pattern: bytes) -> None:
        async with asyncio.timeout(WAIT):
            while pattern not in self.out:
                msg = await self.ws.receive()
                if msg.type == aiohttp.WSMsgType.BINARY:
                    self.out += msg.data
                elif msg.type == aiohttp.WSMsgType.TEXT:
                    self.states.append(json.loads(msg.data))
                else:
                    raise AssertionError(f"closed before {pattern!r}: {self.states}")

    async def ended(self) -> dict[str, object]:
        """The ``ended`` state the console terminal gets."""
        async with asyncio.timeout(WAIT):
            while True:
                for state in self.states:
                    if state.get("state") == "ended":
                        return state
                msg = await self.ws.receive()
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self.states.append(json.loads(msg.data))
                elif msg.type != aiohttp.WSMsgType.BINARY:
                    raise AssertionError(f"closed without ended: {self.states}")

    async def close(self) -> None:
        await self.ws.close()
        await self._http.close()


async def kill_timed(data_dir: Path, sid: str, terminal: Terminal) -> float:
    """`secondline session kill` on the node of ``data_dir``; seconds until bob's ssh
    exited (measured from the command's start)."""
    began = time.monotonic()
    kill = asyncio.ensure_future(
        asyncio.to_thread(secondline, "session", "kill", sid, "--reason", "test", data_dir=data_dir)
    )
    async with asyncio.timeout(WAIT):
        await terminal.proc.wait()
    took = time.monotonic() - began
    ok(await kill)
    return took
