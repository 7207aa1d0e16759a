"""How cluster nodes stop, with real nodes on PostgreSQL and NATS, a really enrolled agent
process and the real OpenSSH client: a node holding an agent's tunnel and a session
relayed from another node stops on SIGTERM and says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.test_cluster_nodes import site_on
from tests.support.broker import secondline
from tests.support.cluster import Cluster
from tests.support.site import Site, new_ticket, ok, sessions_of, start_agent

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]


def pin_port(site: Site, port: int) -> None:
    """bob's known_hosts also names ``port`` (every node has the same host key)."""
    key = (site.data_dir / "keys" / "ssh_host_ed25519.pub").read_text().split()
    with site.known_hosts.open("a", encoding="utf-8") as fh:
        fh.write(f"[127.0.0.1]:{port} {key[0]} {key[1]}\n")


async def test_a_node_with_a_tunnel_and_a_relayed_session_stops_on_sigterm(
    cluster: Cluster, tmp_path: Path
) -> None:
    """web01's tunnel is on n1, and bob's shell on it came in through n2 (the hub on n1,
    bob relayed over a peer stream). SIGTERM of n1: bob is told the broker shut down, n1
    exits 0 saying it stopped with nothing cut short, the session is recorded as ended
    with a sealed transcript that verifies on n2."""
    site = await site_on(cluster, tmp_path)
    n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
    await start_agent(site, "web01", "unattended")
    site.ticket = new_ticket(site, "web01")
    via_n2 = Site(n2, tmp_path, site.key, site.known_hosts)
    pin_port(site, via_n2.ssh_port)
    term = await via_n2.interactive(site.ticket)
    try:
        term.type("echo up-$((40+2))\n")
        await term.expect(b"up-42")
        sid = str(sessions_of(site, site.ticket)[0]["id"])
        await n1.wait_for_line(f"session {sid}: bob \\(owner\\) is in it from node n2".encode())

        assert await n1.stop() == 0
        said = b"".join(n1.output)
        assert said.rstrip().endswith(b"secondline: stopped"), said[-2000:]
        assert b"cut short" not in said
        assert b"Traceback" not in said, said[-3000:]
        code, err = await term.finish()
        assert code == 255, (code, err)
        assert "the broker is shutting down" in err, err
    finally:
        if term.proc.returncode is None:
            term.proc.kill()
            await term.proc.wait()
        if site.agent is not None:
            site.agent.kill()
            await site.agent.wait()
    shown = json.loads(ok(secondline("session", "show", sid, "--json", data_dir=n2.data_dir)))
    assert shown["state"] not in ("live", "starting", "waiting_consent"), shown
    assert shown["end_reason"] == "broker shut down", shown
    verified = ok(secondline("transcript", "verify", sid, data_dir=n2.data_dir))
    assert verified.startswith("valid"), verified
