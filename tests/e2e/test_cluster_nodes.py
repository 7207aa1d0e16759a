"""A cluster of real nodes (`secondline serve --node NAME`) on PostgreSQL and NATS, with
really enrolled `secondline-agent run` processes and the real OpenSSH client: presence
across nodes, a taken name, a node killed with SIGKILL, kill, revoke and disable issued on
one node taking effect on the node that holds the session or the tunnel, and an agent that
connects to two nodes at once."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import ssl
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from bench.agent_swarm import broker_call
from broker.cluster.peering import PATH, PEER_HEADER, credential
from tests.support.broker import BrokerProcess, CliResult, cli_env, free_port, secondline
from tests.support.cluster import Cluster, heard_twice
from tests.support.processes import communicate
from tests.support.site import (
    Site,
    new_ticket,
    ok,
    run_agent,
    sessions_of,
    staffed_site,
    start_agent,
)

pytestmark = [pytest.mark.postgres, pytest.mark.e2e, pytest.mark.serial]

#: The cluster's promises (docs/cluster.md).
LEASE_PROMISE_S = 10.0
CONTROL_PROMISE_S = 2.0


async def site_on(cluster: Cluster, tmp: Path) -> Site:
    """Nodes n1 and n2 running, customer acme, staff lena and bob (with an SSH key)."""
    n1 = await cluster.start("n1")
    await cluster.start("n2")
    return staffed_site(n1, tmp)


async def serve_refused(data_dir: Path, node: str) -> CliResult:
    """`secondline serve --node NODE` that is expected to refuse: its status and output."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "broker.cli.main", "--data-dir", str(data_dir),
        "serve", "--node", node,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=cli_env(data_dir),
    )  # fmt: skip
    out, err = await communicate(proc, 60)
    assert proc.returncode is not None
    return CliResult(proc.returncode, out.decode(), err.decode())


async def admin_call(
    node: BrokerProcess, method: str, path: str, body: object | None = None
) -> object:
    """One REST call to ``node`` as the first admin, from this process: the 2 s promise is
    timed from the request, not from a CLI process starting up."""
    token = (node.data_dir / "admin.token").read_text().strip()
    cert = node.data_dir / "keys" / "tls.crt"
    status, data = await broker_call(node.url, cert, token, method, path, body)
    assert 200 <= status < 300, (method, path, status, data)
    return data


def status(data_dir: Path) -> dict[str, dict[str, object]]:
    rows = json.loads(ok(secondline("cluster", "status", "--json", data_dir=data_dir)))
    return {str(r["node"]): r for r in rows}


async def test_nodes_see_each_other_refuse_a_taken_name_and_forget_a_killed_node(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Two nodes list each other's agents; a third started with a taken name refuses to
    start and says why; SIGKILL of a node takes its agent offline on the survivor within
    the 10 s lease."""
    site = await site_on(cluster, tmp_path)
    n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
    await start_agent(site, "web01", "unattended")
    # web02 enrolls and runs against node n2.
    other = Site(n2, tmp_path / "n2-agents", site.key, site.known_hosts)
    other.tmp.mkdir()
    await start_agent(other, "web02", "unattended")

    refused = await serve_refused(cluster.add_dir("n3"), "n2")
    assert refused.code == 1
    assert "a node named 'n2' is running in this cluster already" in refused.err

    # Every node answers `cluster status` with what it holds now.
    rows = status(n1.data_dir)
    assert {(n, r["state"], r["agents"]) for n, r in rows.items()} == {
        ("n1", "up", 1),
        ("n2", "up", 1),
    }

    mark = len(n1.output)
    killed_at = time.monotonic()
    await n2.stop(9)
    await n1.wait_for_line(rb"node n2 stopped announcing itself", mark)
    assert time.monotonic() - killed_at <= LEASE_PROMISE_S
    agents = json.loads(ok(secondline("agent", "list", "--json", data_dir=n1.data_dir)))
    assert {a["name"]: a["online"] for a in agents} == {"web01": True, "web02": False}
    rows = status(n1.data_dir)
    assert "n2" not in rows
    assert rows["n1"]["agents"] == 1
    if other.agent is not None:
        other.agent.kill()
        await other.agent.wait()
    if site.agent is not None:
        site.agent.kill()
        await site.agent.wait()


async def test_kill_disable_and_revoke_on_one_node_act_on_the_node_holding_them(
    cluster: Cluster, tmp_path: Path
) -> None:
    """bob's shells run on n1; an admin on n2 kills one, disables bob (ending the next) and
    revokes the agent (closing its tunnel on n1), each within 2 s."""
    site = await site_on(cluster, tmp_path)
    n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
    await start_agent(site, "web01", "unattended")
    site.ticket = new_ticket(site, "web01")

    term = await site.interactive(site.ticket)
    term.type("echo up-$((40+2))\n")
    await term.expect(b"up-42")
    sid = str(sessions_of(site, site.ticket)[0]["id"])
    began = time.monotonic()
    await admin_call(n2, "POST", f"/sessions/{sid}/kill")
    code, _err = await term.finish()
    assert time.monotonic() - began <= CONTROL_PROMISE_S
    assert code == 255
    # Recorded on n1, verified on n2 (which has no file of it: the shared store's copy).
    assert not (n2.data_dir / "transcripts" / f"{sid}.cast").exists()
    verified = ok(secondline("transcript", "verify", sid, data_dir=n2.data_dir))
    assert verified.startswith("valid: "), verified

    term = await site.interactive(site.ticket)
    term.type("echo again-$((40+2))\n")
    await term.expect(b"again-42")
    began = time.monotonic()
    await admin_call(n2, "POST", "/users/bob/disable")
    code, err = await term.finish()
    assert time.monotonic() - began <= CONTROL_PROMISE_S
    assert code == 255
    assert "disabled" in err

    mark = len(n1.output)
    began = time.monotonic()
    await admin_call(n2, "POST", "/agents/web01/revoke?customer=acme")
    await n1.wait_for_line(rb"agent ag-[a-z0-9]{16} offline", mark)
    assert time.monotonic() - began <= CONTROL_PROMISE_S
    if site.agent is not None:
        site.agent.kill()
        await site.agent.wait()


async def test_an_unreachable_node_is_named_and_a_dead_nodes_session_is_sealed_by_another(
    cluster: Cluster, tmp_path: Path
) -> None:
    """n2 announces an address nothing answers on (a wrong peer_url, as a firewall between
    the nodes would): bob on n1 asking for a shell on n2's agent is refused with the node,
    the address and what failed, and the refusal is audited. Then a session recorded on
    n1, killed with SIGKILL, cannot be killed from n2 (the refusal names the node and what
    happens to the session); the survivor seals it as interrupted once the node's lease
    runs out, and its transcript, with what the shell printed, plays and verifies there."""
    dead = f"https://127.0.0.1:{free_port()}"
    with (cluster.add_dir("n2") / "secondline.toml").open("a", encoding="utf-8") as fh:
        fh.write(f'peer_url = "{dead}"\n')  # [cluster] is the file's last table
    site = await site_on(cluster, tmp_path)
    n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
    # Only a node of this cluster is served on the peer endpoint (the HTTPS port is public).
    stranger = credential(b"not this cluster's key".ljust(32), "n2", "n1", time.time())
    for header in ({}, {PEER_HEADER: stranger}):
        refused_peer = await peer_call(n1, header)
        assert refused_peer[0] == 403, refused_peer
        assert refused_peer[1]["error"]["code"] == "peer_refused", refused_peer
    on_n2 = Site(n2, tmp_path, site.key, site.known_hosts)
    await start_agent(on_n2, "web02", "unattended")
    try:
        far = new_ticket(site, "web02")
        agents = json.loads(ok(secondline("agent", "list", "--json", data_dir=site.data_dir)))
        await heard_twice(cluster, "n2", str(agents[0]["id"]))  # n1 knows where web02 is
        refused = await site.ssh(far, "true")
        assert refused.code == 255, refused
        assert "the agent's tunnel is on node n2" in refused.err, refused.err
        assert f"({dead}), which this node cannot reach" in refused.err, refused.err
        audited = refusals(site.data_dir)[0]
        assert audited["actor"] == "bob"
        details = audited["details"]
        assert isinstance(details, dict)
        assert details["code"] == "node_unreachable"
    finally:
        if on_n2.agent is not None:
            on_n2.agent.kill()
            await on_n2.agent.wait()

    await start_agent(site, "web01", "unattended")
    site.ticket = new_ticket(site, "web01")
    term = await site.interactive(site.ticket)
    term.type("echo up-$((40+2))\n")
    await term.expect(b"up-42")
    sid = str(sessions_of(site, site.ticket)[0]["id"])
    # The live session reads on n2 from the copy n1 makes every second; once it holds the
    # echo, n1 dies, and what it had copied is what the survivor seals.
    text = tmp_path / "session.txt"
    deadline = time.monotonic() + 30  # a failure bound: each export is a process start
    while "up-42" not in (text.read_text() if text.exists() else ""):
        assert time.monotonic() < deadline, "n1's copy never reached the shared store"
        text.unlink(missing_ok=True)
        export = ["transcript", "export", sid, "--format", "txt", "-o", str(text)]
        exported = secondline(*export, data_dir=n2.data_dir)
        # Until n1's first copy lands (within a second of the start) n2 knows no transcript.
        if exported.code != 0 and "has no transcript" in exported.err:
            continue
        ok(exported)
    await n1.stop(9)
    refused = secondline("session", "kill", sid, data_dir=n2.data_dir)
    assert refused.code == 1
    assert "runs on node n1, which is not in the cluster now" in refused.err
    code, _err = await term.finish()  # the node holding it died: ssh saw the cut
    assert code == 255
    await n2.wait_for_line(f"session {sid} of node n1 was interrupted".encode())
    shown = json.loads(ok(secondline("session", "show", sid, "--json", data_dir=n2.data_dir)))
    assert shown["state"] == "interrupted"
    verified = ok(secondline("transcript", "verify", sid, data_dir=n2.data_dir))
    assert verified.startswith("valid, but cut short (interrupted)"), verified
    sealed = tmp_path / "sealed.txt"
    ok(
        secondline(
            "transcript", "export", sid, "--format", "txt", "-o", str(sealed), data_dir=n2.data_dir
        )
    )
    assert "up-42" in sealed.read_text()
    if site.agent is not None:
        site.agent.kill()
        await site.agent.wait()


def refusals(data_dir: Path) -> list[dict[str, object]]:
    """The audited ``session.refused`` events, newest first."""
    listed = secondline("audit", "list", "--json", "--action", "session.refused", data_dir=data_dir)
    return list(json.loads(ok(listed)))


async def peer_call(
    node: BrokerProcess, headers: dict[str, str]
) -> tuple[int, dict[str, dict[str, str]]]:
    """A WebSocket upgrade to ``node``'s peer endpoint with ``headers``: status and body."""
    context = ssl.create_default_context(cafile=str(node.data_dir / "keys" / "tls.crt"))
    context.check_hostname = False
    upgrade = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13"}
    upgrade["Sec-WebSocket-Key"] = "dGhlIHNhbXBsZSBub25jZQ=="
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session,
        session.get(node.url + PATH, headers={**upgrade, **headers}) as response,
    ):
        return response.status, dict(await response.json())


def cloned_state(state: Path, clone: Path, broker_url: str) -> Path:
    """A copy of an enrolled agent's state dir (its identity: id and key) that dials
    ``broker_url``: the same agent, as a cloned machine would run it. Sockets and the
    like are the running agent's own and are left out."""

    def special(folder: str, names: list[str]) -> list[str]:
        return [n for n in names if not (Path(folder, n).is_file() or Path(folder, n).is_dir())]

    shutil.copytree(state, clone, ignore=special)
    path = clone / "state.json"
    data = json.loads(path.read_text())
    data["broker_url"] = broker_url
    data["tunnel_url"] = broker_url.replace("https://", "wss://") + "/agent/v1/tunnel"
    path.write_text(json.dumps(data))
    return clone


async def test_an_agent_connecting_to_two_nodes_at_once_keeps_one_tunnel_audited(
    cluster: Cluster, tmp_path: Path
) -> None:
    """web01 holds its tunnel on n1, and its process freezes (SIGSTOP: the tunnel stays
    open, as a paused VM's does); the same agent (its id and key, a restored copy of the
    machine) connects to n2. n1 closes its older tunnel, saying the agent connected to
    n2, and audits that once; the cluster then counts web01 once, on n2."""
    site = await site_on(cluster, tmp_path)
    n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
    state = await start_agent(site, "web01", "unattended")
    first = site.agent
    assert first is not None
    agents = json.loads(ok(secondline("agent", "list", "--json", data_dir=n1.data_dir)))
    agent_id = str(agents[0]["id"])
    clone = Site(n2, tmp_path / "clone", site.key, site.known_hosts)
    clone.tmp.mkdir()
    try:
        first.send_signal(signal.SIGSTOP)  # frozen: it cannot dial again and win in turn
        mark = len(n1.output)
        await run_agent(clone, cloned_state(state, clone.tmp / "agent-web01", n2.url), "web01")
        line = await n1.wait_for_line(f"agent {agent_id} offline".encode(), mark)
        assert b"replaced by a newer tunnel of the same agent on node n2" in line, line
        await heard_twice(cluster, "n2", agent_id)
        rows = status(n1.data_dir)
        assert (rows["n1"]["agents"], rows["n2"]["agents"]) == (0, 1), rows
        listed = secondline(
            "audit", "list", "--json", "--action", "agent.tunnel", data_dir=n1.data_dir
        )
        events = [
            e for e in json.loads(ok(listed)) if e["details"].get("code") == "connected_elsewhere"
        ]
        assert len(events) == 1, events
        assert (events[0]["target"], events[0]["details"]["node"]) == (agent_id, "n2")
    finally:
        for proc in (first, clone.agent):
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()
