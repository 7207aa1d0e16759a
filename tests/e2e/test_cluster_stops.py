"""Cluster nodes at the edges of a session, with real nodes on PostgreSQL and NATS, really
enrolled agent processes and the real OpenSSH client: console file transfers asked of a
node other than the session's go to the node holding the agent; a node holding an agent's
tunnel and a session relayed from another node stops on SIGTERM and says so; a node
relaying a session stops on SIGTERM and closes its stream as going away; a node that
died while no other ran is found dead by the next node to start, which seals its session;
and the host of that dead node, restarted, verifies the sealed copy, not its own unsealed
files."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import ssl
import time
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.test_cluster_nodes import site_on
from tests.support.broker import BrokerProcess, secondline
from tests.support.cluster import Cluster, heard_twice
from tests.support.site import (
    Site,
    Terminal,
    new_ticket,
    ok,
    sessions_of,
    staffed_site,
    start_agent,
)

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]


def pin_port(site: Site, port: int) -> None:
    """bob's known_hosts also names ``port`` (every node has the same host key)."""
    key = (site.data_dir / "keys" / "ssh_host_ed25519.pub").read_text().split()
    with site.known_hosts.open("a", encoding="utf-8") as fh:
        fh.write(f"[127.0.0.1]:{port} {key[0]} {key[1]}\n")


@contextlib.asynccontextmanager
async def relayed_shell(
    cluster: Cluster, tmp_path: Path
) -> AsyncIterator[tuple[Site, Terminal, str]]:
    """bob's shell on web01, whose tunnel is on n1, come in through n2's gateway (the hub on
    n1, bob relayed over a peer stream): the site, bob's terminal and the session's id.
    bob's ssh and the agent are killed on the way out if still running."""
    site = await site_on(cluster, tmp_path)
    n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
    await start_agent(site, "web01", "unattended")
    site.ticket = new_ticket(site, "web01")
    agents = json.loads(ok(secondline("agent", "list", "--json", data_dir=site.data_dir)))
    await heard_twice(cluster, "n1", str(agents[0]["id"]))  # n2 knows where web01 is
    via_n2 = Site(n2, tmp_path, site.key, site.known_hosts)
    pin_port(site, via_n2.ssh_port)
    term = await via_n2.interactive(site.ticket)
    try:
        term.type("echo up-$((40+2))\n")
        await term.expect(b"up-42")
        sid = str(sessions_of(site, site.ticket)[0]["id"])
        await n1.wait_for_line(f"session {sid}: bob \\(owner\\) is in it from node n2".encode())
        yield site, term, sid
    finally:
        if term.proc.returncode is None:
            term.proc.kill()
            await term.proc.wait()
        if site.agent is not None:
            site.agent.kill()
            await site.agent.wait()


async def transfer(
    node: BrokerProcess, token: str, sid: str, way: str, path: Path, body: bytes = b""
) -> tuple[int, bytes]:
    """The terminal page's transfer panel's request, made of ``node``."""
    tls = ssl.create_default_context(cafile=str(node.data_dir / "keys" / "tls.crt"))
    tls.check_hostname = False
    public = tomllib.loads((node.data_dir / "secondline.toml").read_text())["public_url"]
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls)) as http,
        http.post(
            f"{node.url}/files/sessions/{sid}/{way}",
            params={"path": str(path)},
            data=body,
            headers={"Authorization": f"Bearer {token}", "Origin": public},
        ) as resp,
    ):
        return resp.status, await resp.read()


async def test_transfers_of_another_nodes_session_and_its_node_stopping_on_sigterm(
    cluster: Cluster, tmp_path: Path
) -> None:
    """web01's tunnel is on n1, and bob's shell on it came in through n2 (the hub on n1,
    bob relayed over a peer stream). bob's transfer panel on n2 uploads a file and
    downloads it back byte-identical: each a file session run on n1, recorded there.
    SIGTERM of n1: bob is told the broker shut down, n1 exits 0 saying it stopped with
    nothing cut short, the session is recorded as ended with a sealed transcript that
    verifies on n2."""
    async with relayed_shell(cluster, tmp_path) as (site, term, sid):
        n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
        bob = ok(secondline("user", "token", "bob", "--scope", "session", data_dir=n2.data_dir))
        there = tmp_path / "fixed.conf"  # the agent runs on this machine, as this user
        payload = os.urandom(50_000)
        status, body = await transfer(n2, bob, sid, "upload", there, payload)
        assert status == 200, body
        assert json.loads(body)["sha256"] == hashlib.sha256(payload).hexdigest()
        assert there.read_bytes() == payload
        status, body = await transfer(n2, bob, sid, "download", there)
        assert (status, body) == (200, payload)
        files = [r for r in sessions_of(site, site.ticket) if r["kind"] == "sftp"]
        assert len(files) == 2, files
        for row in files:
            assert row["via"] == "web", row
            # Run (and recorded) by n1's hub for bob on n2, like his shell.
            await n1.wait_for_line(
                f"session {row['id']}: bob \\(owner\\) is in it from node n2".encode()
            )

        assert await n1.stop() == 0
        said = b"".join(n1.output)
        assert said.rstrip().endswith(b"secondline: stopped"), said[-2000:]
        assert b"cut short" not in said
        assert b"Traceback" not in said, said[-3000:]
        code, err = await term.finish()
        assert code == 255, (code, err)
        assert "the broker is shutting down" in err, err
    shown = json.loads(ok(secondline("session", "show", sid, "--json", data_dir=n2.data_dir)))
    assert shown["state"] not in ("live", "starting", "waiting_consent"), shown
    assert shown["end_reason"] == "broker shut down", shown
    verified = ok(secondline("transcript", "verify", sid, data_dir=n2.data_dir))
    assert verified.startswith("valid"), verified


async def test_a_node_relaying_a_session_stops_on_sigterm_and_closes_its_stream_cleanly(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The hub of bob's shell on web01 runs on n1, and bob came in through n2. SIGTERM of
    n2: bob is told the broker is shutting down and which node relayed him, n2 closes its
    peer stream as going away instead of cutting it, and n1 records bob leaving because
    node n2 shut down (not "disconnected"); the session ends there as its owner left,
    recorded and sealed by n1, and n2 says it stopped with nothing cut short."""
    async with relayed_shell(cluster, tmp_path) as (_, term, sid):
        n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
        mark = len(n1.output)
        assert await n2.stop() == 0
        said = b"".join(n2.output)
        assert said.rstrip().endswith(b"secondline: stopped"), said[-2000:]
        assert b"cut short" not in said
        assert b"Traceback" not in said, said[-3000:]
        code, err = await term.finish()
        assert code == 255, (code, err)
        assert "the broker is shutting down (node n2, which relayed this session" in err, err
        await n1.wait_for_line(f"session {sid} ended".encode(), mark)
    shown = json.loads(ok(secondline("session", "show", sid, "--json", data_dir=n1.data_dir)))
    assert shown["state"] == "ended", shown
    left = [(p["name"], p["left_reason"]) for p in shown["participants"]]
    assert left == [("bob", "node n2 shut down")], shown["participants"]
    verified = ok(secondline("transcript", "verify", sid, data_dir=n1.data_dir))
    assert verified.startswith("valid: "), verified


async def test_a_node_that_died_alone_is_sealed_by_the_next_and_its_host_verifies_that(
    cluster: Cluster, tmp_path: Path
) -> None:
    """n1 runs alone with bob's shell on web01 and dies (SIGKILL): nobody saw its lease
    run out. n2, started afterwards, finds n1 named in the database and silent, marks its
    agent offline and seals the session as interrupted. n1's host, restarted, leaves that
    seal alone, and `transcript verify` there reads the sealed copy from the database
    instead of its own unsealed files."""
    n1 = await cluster.start("n1")
    site = staffed_site(n1, tmp_path)
    await start_agent(site, "web01", "unattended")
    try:
        site.ticket = new_ticket(site, "web01")
        term = await site.interactive(site.ticket)
        term.type("echo up-$((40+2))\n")
        await term.expect(b"up-42")
        sid = str(sessions_of(site, site.ticket)[0]["id"])
        # n1 copies its transcript to the database about once a second: once the copy
        # holds the echo, n1 dies, and that copy is what n2 seals (killed before its first
        # copy, there would be nothing in the database to seal).
        await copied_to_database(n1.data_dir, sid, b"up-42")
        await n1.stop(9)
        code, _err = await term.finish()
        assert code == 255
    finally:
        if site.agent is not None:
            site.agent.kill()
            await site.agent.wait()
    # The host's own copy is unsealed: the node died recording it.
    own = n1.data_dir / "transcripts" / f"{sid}.cast"
    assert own.is_file()

    n2 = await cluster.start("n2")
    await n2.wait_for_line(b"node n1 is named in the database but does not announce itself")
    await n2.wait_for_line(f"session {sid} of node n1 was interrupted".encode())
    shown = json.loads(ok(secondline("session", "show", sid, "--json", data_dir=n2.data_dir)))
    assert shown["state"] == "interrupted", shown
    agents = json.loads(ok(secondline("agent", "list", "--json", data_dir=n2.data_dir)))
    assert [a["online"] for a in agents] == [False], agents

    n1 = await cluster.start("n1")
    for node in (n1, n2):
        verified = ok(secondline("transcript", "verify", sid, data_dir=node.data_dir))
        assert verified.startswith("valid, but cut short (interrupted)"), (node, verified)
    assert not any(b"was interrupted" in line for line in n1.output), n1.output


async def copied_to_database(data_dir: Path, session_id: str, text: bytes) -> None:
    """Return once the node's copy of the session's transcript in the database holds
    ``text``. Only the database shows it, so it is read again until it does, each read a
    real query (30 s is a failure bound)."""
    from sqlalchemy import text as sql

    from broker.config import load_config
    from broker.db.engine import create_engine

    config = load_config(data_dir, env={})
    engine = create_engine(config.db_url, schema=config.database_schema or None)
    query = sql("SELECT data FROM transcript_chunks WHERE session_id = :sid AND part = 'cast'")
    deadline = time.monotonic() + 30
    try:
        async with engine.connect() as db:
            while True:
                chunks = (await db.execute(query, {"sid": session_id})).scalars().all()
                await db.rollback()  # the next read sees what was committed since
                if text in b"".join(bytes(c) for c in chunks):
                    return
                assert time.monotonic() < deadline, "the node's copy never reached the database"
    finally:
        await engine.dispose()
