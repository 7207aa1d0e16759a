"""The restart storm bench's pure parts (bench.storm_figures): the figures read from a
node's /metrics, HAProxy's `show info`, /proc/net/sockstat and py-spy's collapsed stacks,
and the curve of agents back online."""

from __future__ import annotations

import pytest

from bench import MeasurementError
from bench.storm_figures import (
    NodeFigures,
    agents_that_fit,
    checks_delta,
    descriptors_needed,
    haproxy_checks,
    metric,
    milestones,
    refusals_by_code,
    show_info,
    sockstat,
    summary,
    tally_delta,
    thin,
    time_to,
    top_frames,
)

METRICS = """\
# HELP secondline_agents_held agent tunnels this node holds
# TYPE secondline_agents_held gauge
secondline_agents_held{node="n1"} 3670.0
# TYPE secondline_agents_share_limit gauge
secondline_agents_share_limit{node="n1"} 3670.0
secondline_tunnel_share_refusals_total{node="n1"} 412.0
secondline_refusals_total{action="agent.tunnel",code="over_share",node="n1"} 3.0
secondline_refusals_total{action="agent.tunnel",code="revoked agent",node="n1"} 1.0
secondline_refusals_total{action="login.failed",code="denied",node="n1"} 2.0
"""


def test_metric_reads_one_sample_and_names_a_missing_one() -> None:
    assert metric(METRICS, "secondline_agents_held") == 3670
    assert metric(METRICS, "secondline_tunnel_share_refusals_total") == 412
    with pytest.raises(MeasurementError, match="secondline_agents_handed_off_total"):
        metric(METRICS, "secondline_agents_handed_off_total")


def test_refusals_by_code_keeps_the_agent_tunnel_ones() -> None:
    assert refusals_by_code(METRICS) == {"over_share": 3, "revoked agent": 1}


def test_show_info_and_sockstat() -> None:
    info = show_info("Name: HAProxy\nUlimit-n: 19999\nMaxconn: 9985\n")
    assert info["Maxconn"] == "9985"
    assert info["Ulimit-n"] == "19999"
    tcp = sockstat("sockets: used 900\nTCP: inuse 20010 orphan 0 tw 3120 alloc 20100 mem 40\n")
    assert tcp == {"inuse": 20010, "orphan": 0, "tw": 3120, "alloc": 20100, "mem": 40}
    with pytest.raises(MeasurementError):
        sockstat("sockets: used 1\n")


def test_descriptors_cover_haproxys_two_per_agent() -> None:
    """10,000 agents need more than 20,000 descriptors: HAProxy's maxconn, derived from a
    limit of 20,000, stays under 10,000."""
    assert descriptors_needed(10_000) > 2 * 10_000
    assert agents_that_fit(9985) == 9885  # what a limit of 20,000 leaves
    assert agents_that_fit(50) == 0


def test_milestones_read_the_curve_and_say_never() -> None:
    curve = [(0.5, 0), (2.0, 40), (3.1, 55), (4.0, 91), (6.25, 100)]
    assert milestones(curve, 100) == {
        "half_online_s": 3.1,
        "ninety_percent_online_s": 4.0,
        "all_online_s": 6.25,
    }
    assert time_to(curve, 101) is None
    assert milestones([], 10)["all_online_s"] is None


def test_thin_keeps_the_last_point_of_each_second() -> None:
    curve = [(0.1, 1), (0.9, 2), (1.2, 3), (3.7, 9)]
    assert thin(curve) == [(0.9, 2), (1.2, 3), (3.7, 9)]


def test_tally_delta_is_the_restarts_own_attempts() -> None:
    before = {"good": {"ssh_up": 100, "busy": 4}}
    after = {"good": {"ssh_up": 200, "busy": 10, "dial_failed": 7}}
    assert tally_delta(before, after) == {"busy": 6, "dial_failed": 7, "ssh_up": 100}


def test_node_figures_say_whether_a_node_kept_to_its_share() -> None:
    node = NodeFigures(
        name="n2", held_when_all_online=4000, held_settled=3600, share_refusals=12,
        handed_off=400, handshakes=4012, refusals={"over_share": 2}, rss_kib=300 * 1024,
        cpu_s=20.06,
    )  # fmt: skip
    shown = node.as_json(3670)
    assert shown["within_share"] is True
    assert shown["cpu_ms_per_handshake"] == 5.0
    assert shown["rss_mib"] == 300.0
    assert node.as_json(3500)["within_share"] is False
    assert node.as_json(None)["within_share"] is True


def test_top_frames_count_the_innermost_frame() -> None:
    stacks = [
        "<module> (broker/server.py:10);run (asyncio/base_events.py:600);"
        "do_handshake (ssl.py:900) 60",
        "<module> (broker/server.py:10);run (asyncio/base_events.py:610);"
        "do_handshake (ssl.py:917) 20",
        "<module> (broker/server.py:10);select (selectors.py:468) 20",
        "not a stack line",
    ]
    assert top_frames(stacks) == [("do_handshake (ssl.py)", 80.0), ("select (selectors.py)", 20.0)]
    assert top_frames([]) == []


HEADER = (
    "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,"
    "wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime\n"
)
SHOW_STAT = (
    HEADER
    + """\
https,FRONTEND,,,7903,9850,9985,145024,0,0,0,0,0,,,,,OPEN,,,,,,,
nodes_https,n1,0,0,1887,4559,,26400,0,0,,0,,0,1,0,0,DOWN 1/2,1,1,0,43,18,24,438
nodes_https,n2,0,0,1661,4665,,28546,0,0,,0,,94,20,0,0,UP,1,1,0,48,20,30,427
nodes_https,BACKEND,0,0,7903,9850,,145024,0,0,0,0,,76892,75,0,0,DOWN,2,2,0,,35,24,301
nodes_ssh,n1,0,0,0,0,,0,0,0,,0,,0,0,0,0,DOWN,1,1,0,40,17,24,400
"""
)


def test_haproxy_checks_read_the_backends_counters_and_their_growth() -> None:
    """Failed checks, times out, seconds out and refused connections per node of the one
    backend; an empty cell is 0; the growth between two readings."""
    after = haproxy_checks(SHOW_STAT, "nodes_https")
    assert after == {
        "n1": {"chkfail": 43, "chkdown": 18, "downtime": 438, "econ": 0},
        "n2": {"chkfail": 48, "chkdown": 20, "downtime": 427, "econ": 94},
        "BACKEND": {"chkfail": 0, "chkdown": 35, "downtime": 301, "econ": 76892},
    }
    before = {"n1": {"chkfail": 40, "chkdown": 17, "downtime": 400, "econ": 0}}
    assert checks_delta(before, after)["n1"] == {
        "chkfail": 3, "chkdown": 1, "downtime": 38, "econ": 0,
    }  # fmt: skip
    assert checks_delta(before, after)["n2"] == after["n2"]
    with pytest.raises(MeasurementError):
        haproxy_checks("", "nodes_https")


def test_summary_says_whether_the_promise_was_met_and_why_a_run_failed() -> None:
    """The terminal's few lines: the cut to what HAProxy holds, the milestones against the
    promise, each node against its share, and a failed first connect with its evidence."""
    figures: dict[str, object] = {
        "agents": 9880, "agents_wanted": 10_000, "nodes": 3,
        "haproxy": {"maxconn": 9980}, "all_online_s": 58.2, "promise_met": True,
        "per_node": [
            NodeFigures("n1", 3400, 3300, 12, 100, 3400, {}, 400 * 1024, 40.0).as_json(3627)
        ],
    }  # fmt: skip
    text = summary(figures)
    assert "9880 agents (of 10000 wanted), 3 nodes behind HAProxy (maxconn 9980)" in text
    assert "all 58.2 s (promise 60 s: met)" in text
    assert "n1: held 3400 when all were back, 3300 settled (share limit 3627)" in text
    failed = summary({**figures, "promise_met": False, "failed": "first connect: no",
                      "first_connect_most_online": 1125})  # fmt: skip
    assert "MISSED" in failed
    assert "FAILED: first connect: no (most online at once: 1125" in failed
