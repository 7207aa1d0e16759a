"""The cluster targets' pure parts: deploy/haproxy.cfg cut to the nodes a run starts,
HAProxy's stats and a node's metrics read strictly, and the table's 2 nodes/1 node column."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from bench import MeasurementError, TargetUnavailable
from bench.cluster_target import (
    HAPROXY_TEMPLATE,
    ClusterTarget,
    agents_held,
    database_url,
    haproxy_config,
    server_states,
)
from bench.metrics import LOADED_PARTS, SCENARIOS
from bench.results import Figure, Outcome
from bench.runner import parts_run_by
from bench.table import build_table
from bench.targets import Workspace

TEMPLATE = HAPROXY_TEMPLATE.read_text()


@pytest.mark.parametrize("nodes", [1, 2, 3])
def test_haproxy_config_keeps_the_servers_of_the_nodes_started(nodes: int) -> None:
    """Each backend keeps one server line per node started and none beyond; the rest of
    the tested configuration is unchanged."""
    config = haproxy_config(TEMPLATE, nodes)
    for backend in ("nodes_https", "nodes_ssh"):
        section = config.split(f"\nbackend {backend}\n", 1)[1].split("\nbackend ", 1)[0]
        servers = [
            line.split()[1] for line in section.splitlines() if line.startswith("    server")
        ]
        assert servers == [f"n{i}" for i in range(1, nodes + 1)]
    removed = set(TEMPLATE.splitlines()) - set(config.splitlines())
    assert len(removed) == 2 * (3 - nodes)
    assert all(line.lstrip().startswith("server n") for line in removed)


def test_haproxy_accepts_the_two_node_config(tmp_path: Path) -> None:
    """The real HAProxy (`haproxy -c`) accepts the cut configuration with its addresses."""
    haproxy = shutil.which("haproxy", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
    assert haproxy is not None, "the cluster bench needs Debian's haproxy package"
    config = tmp_path / "haproxy.cfg"
    config.write_text(haproxy_config(TEMPLATE, 2))
    env = {
        **os.environ,
        "SL_LB_HOST": "127.0.0.1", "SL_LB_HTTPS_PORT": "18443", "SL_LB_SSH_PORT": "12222",
        "SL_LB_STATS_SOCKET": str(tmp_path / "sock"),
        "SL_N1_HOST": "127.0.0.1", "SL_N1_HTTPS_PORT": "18444", "SL_N1_SSH_PORT": "12223",
        "SL_N2_HOST": "127.0.0.1", "SL_N2_HTTPS_PORT": "18445", "SL_N2_SSH_PORT": "12224",
    }  # fmt: skip
    ca = tmp_path / "ca.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ed25519", "-nodes", "-subj", "/CN=n",
         "-keyout", str(tmp_path / "ca.key"), "-out", str(ca)],
        check=True, capture_output=True,
    )  # fmt: skip
    env["SL_NODE_CA"] = str(ca)  # verify ... ca-file must name a readable certificate
    checked = subprocess.run(
        [haproxy, "-c", "-f", str(config)], env=env, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize("nodes", [0, 4])
def test_a_node_count_the_template_does_not_name_is_refused(nodes: int) -> None:
    """No silent three-node config for a four-node run, and no empty backend."""
    with pytest.raises(MeasurementError, match=f"cannot front {nodes} nodes"):
        haproxy_config(TEMPLATE, nodes)


def test_server_states_read_one_backend_of_show_stat() -> None:
    """Only the named backend's servers, not its FRONTEND/BACKEND rows or other backends."""
    header = "# pxname,svname," + ",".join(f"c{i}" for i in range(2, 40))

    def row(px: str, sv: str, status: str) -> str:
        cells = [px, sv, *[""] * 38]
        cells[17] = status
        return ",".join(cells)

    text = "\n".join(
        [
            header,
            row("https", "FRONTEND", "OPEN"),
            row("nodes_https", "n1", "UP"),
            row("nodes_https", "n2", "DOWN 1/2"),
            row("nodes_https", "BACKEND", "UP"),
            row("nodes_ssh", "n1", "DOWN"),
        ]
    )
    assert server_states(text, "nodes_https") == {"n1": "UP", "n2": "DOWN 1/2"}
    assert server_states("", "nodes_https") == {}


def test_agents_held_is_read_from_the_metrics_text() -> None:
    """The gauge with or without labels; a page without it is an error, not zero."""
    page = (
        "# HELP secondline_agents_held agent tunnels this node holds\n"
        "# TYPE secondline_agents_held gauge\n"
        'secondline_agents_held{node="n2"} 3.0\n'
        'secondline_sessions_live{node="n2"} 1.0\n'
    )
    assert agents_held(page) == 3
    assert agents_held("secondline_agents_held 0\n") == 0
    with pytest.raises(MeasurementError, match="no secondline_agents_held"):
        agents_held("secondline_sessions_live 1\n")


def test_database_url_names_the_run_database() -> None:
    """The run's own database on the server of the given URL; anything else is refused."""
    dsn = "postgresql://postgres@127.0.0.1:5432/test"
    assert database_url(dsn, "slbench_x") == "postgresql://postgres@127.0.0.1:5432/slbench_x"
    with pytest.raises(TargetUnavailable, match="SECONDLINE_BENCH_PG"):
        database_url("sqlite:///x.db", "slbench_x")


def test_cluster_targets_run_what_a_second_node_changes(tmp_path: Path) -> None:
    """Both targets: own directory, handshakes, loaded echo and capacity only; the swarm
    run covers handshakes for them although memory is the first swarm scenario."""
    workspace = Workspace(root=tmp_path, identity=tmp_path / "id", public_key="", kex=None)
    for nodes in (1, 2):
        target = ClusterTarget(workspace, nodes=nodes, environ={})
        assert target.directory == tmp_path / f"secondline-cluster{nodes}"
        ran = {s for s in (*SCENARIOS, *LOADED_PARTS) if target.supports(s)}
        assert ran == {
            "echo_latency",
            *LOADED_PARTS,
            "handshakes_per_second",
            "max_concurrent_sessions",
        }
    assert parts_run_by("memory_per_idle_agent", SCENARIOS) == (
        "memory_per_idle_agent", "handshakes_per_second", "restart_recovery",
    )  # fmt: skip
    assert parts_run_by("handshakes_per_second", SCENARIOS) == ("handshakes_per_second",)
    assert parts_run_by("exec_true", SCENARIOS) == ("exec_true",)


def test_the_second_node_column_divides_two_nodes_by_one() -> None:
    """The 2 nodes/1 node ratio is the two-node figure over the one-node one."""
    outcomes = [
        Outcome.ok(
            "handshakes_per_second",
            "secondline-cluster1",
            Figure(metric="handshakes_per_second", value=40.0),
        ),
        Outcome.ok(
            "handshakes_per_second",
            "secondline-cluster2",
            Figure(metric="handshakes_per_second", value=70.0),
        ),
    ]
    table = build_table(outcomes, ("handshakes_per_second",))
    row = table.rows[0]
    assert table.header[7:9] == ("cluster, 1 node", "cluster, 2 nodes")
    assert row[7:9] == ("40.0", "70.0")
    assert table.header[11] == "2 nodes/1 node"
    assert row[11] == "1.75x"
