"""A node that is alive but silent on NATS is not taken for dead, with real nodes on
PostgreSQL and NATS, a really enrolled agent process and the real OpenSSH client.

The look at the database a node takes 9 s after its start seals the sessions of every
node the database names that it has not heard: a node that died while no other ran. A
node whose announcements are late (starting slowly, or its NATS connection stalled) is
as silent as a dead one; only its lease in the database, renewed every heartbeat, tells
them apart (docs/cluster.md, "A node that dies")."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support.blackhole_proxy import BlackholeProxy
from tests.support.broker import secondline
from tests.support.cluster import Cluster
from tests.support.site import new_ticket, ok, sessions_of, staffed_site, start_agent

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]


def through(cluster: Cluster, node: str, port: int) -> None:
    """``node`` reaches NATS through 127.0.0.1:``port`` (the test's proxy)."""
    config = cluster.add_dir(node) / "secondline.toml"
    text = config.read_text()
    assert f'nats_url = "{cluster.nats_url}"' in text
    config.write_text(text.replace(cluster.nats_url, f"nats://127.0.0.1:{port}"))


async def test_a_node_whose_announcements_are_held_keeps_its_session_and_agent(
    cluster: Cluster, tmp_path: Path
) -> None:
    """n1 runs bob's shell on web01, then its NATS connection is blackholed (nothing it
    sends arrives, nothing is closed). n2 starts, and at its look 9 s later finds n1 named
    in the database and silent, but renewing its lease: it leaves n1's agent online and
    its session unsealed. The shell goes on meanwhile; once the network is back n2 hears
    n1, and the session ends as bob ends it, recorded by n1 alone, complete."""
    nats = urlsplit(cluster.nats_url)
    async with BlackholeProxy(nats.hostname or "127.0.0.1", nats.port or 4222) as proxy:
        through(cluster, "n1", proxy.port)
        n1 = await cluster.start("n1")
        site = staffed_site(n1, tmp_path)
        await start_agent(site, "web01", "unattended")
        term = None
        try:
            site.ticket = new_ticket(site, "web01")
            term = await site.interactive(site.ticket)
            term.type("echo up-$((40+2))\n")
            await term.expect(b"up-42")
            sid = str(sessions_of(site, site.ticket)[0]["id"])

            proxy.cut()
            await proxy.wait_held("up")  # n1's heartbeat, held: nobody hears n1 now
            n2 = await cluster.start("n2")
            await n2.wait_for_line(b"node n1 is named in the database but does not announce")
            await n2.wait_for_line(b"node n1 does not announce itself, but it renews its lease")
            # Taken for alive: its agent is online, its session live, and the shell works.
            agents = json.loads(ok(secondline("agent", "list", "--json", data_dir=n2.data_dir)))
            assert [a["online"] for a in agents] == [True], agents
            show = ["session", "show", sid, "--json"]
            assert json.loads(ok(secondline(*show, data_dir=n2.data_dir)))["state"] == "live"
            term.type("echo still-$((40+2))\n")
            await term.expect(b"still-42")

            mark = len(n2.output)
            proxy.restore()
            await n2.wait_for_line(b"node n1 joined the cluster", mark)
            term.type("exit\n")
            code, _err = await term.finish()
            assert code == 0
            await n1.wait_for_line(f"session {sid} ended".encode())

            shown = json.loads(ok(secondline(*show, data_dir=n2.data_dir)))
            assert shown["state"] == "ended", shown
            assert not any(b"was interrupted" in line for line in n2.output), n2.output[-20:]
            assert not any(b"lease lapsed" in line for line in n2.output), n2.output[-20:]
            verified = ok(secondline("transcript", "verify", sid, data_dir=n2.data_dir))
            assert verified.startswith("valid: "), verified
            text = tmp_path / "session.txt"
            export = ["transcript", "export", sid, "--format", "txt", "-o", str(text)]
            ok(secondline(*export, data_dir=n2.data_dir))
            assert "still-42" in text.read_text()
        finally:
            if term is not None and term.proc.returncode is None:
                term.proc.kill()
                await term.proc.wait()
            if site.agent is not None:
                site.agent.kill()
                await site.agent.wait()
            await cluster.stop_all()
