"""The simulated agent swarm's plan and status (bench/agent_swarm.py, pure parts)."""

from __future__ import annotations

import json

import pytest

from bench.agent_swarm import SwarmPlan, SwarmStatus


def test_shares_spread_agents_and_roles_over_the_workers() -> None:
    """Every agent and every bad role lands in exactly one worker, as evenly as possible."""
    plan = SwarmPlan(size=1001, processes=3, wrong_key=40, impostors=41, revoked=20)
    shares = plan.shares()
    assert [s.size for s in shares] == [334, 334, 333]
    assert [s.wrong_key for s in shares] == [14, 13, 13]
    assert [s.impostors for s in shares] == [14, 14, 13]
    assert [s.revoked for s in shares] == [7, 7, 6]
    assert {s.processes for s in shares} == {1}
    assert len(SwarmPlan(size=2, processes=8).shares()) == 2


def test_roles_put_the_bad_first_and_impostors_claim_distinct_good_agents() -> None:
    """wrong_key, impostors (each naming a good agent of its own), revoked, then good."""
    roles = SwarmPlan(size=8, wrong_key=1, impostors=2, revoked=1).roles()
    assert roles == [
        ("wrong_key", None),
        ("impostor", 4),
        ("impostor", 5),
        ("revoked", None),
        ("good", None),
        ("good", None),
        ("good", None),
        ("good", None),
    ]


@pytest.mark.parametrize(
    "plan",
    [
        SwarmPlan(size=3, wrong_key=2, revoked=2),
        SwarmPlan(size=3, impostors=2),
        SwarmPlan(size=3, wrong_key=-1),
    ],
)
def test_impossible_plans_are_refused_before_anything_starts(plan: SwarmPlan) -> None:
    """More bad agents than agents, impostors without a good agent each, negative counts."""
    with pytest.raises(ValueError, match="agent"):
        plan.shares()


def test_status_lines_parse_and_sum() -> None:
    """Each worker's status line parses; summed, counts add up and the phase is the
    lowest (a worker that has not started the new phase holds it back)."""
    line = {
        "phase": 1,
        "online": {"good": 3, "wrong_key": 0, "impostor": 0, "revoked": 0},
        "up": {"good": 4, "wrong_key": 0, "impostor": 0, "revoked": 0},
        "tally": {"good": {"busy": 2, "ssh_up": 3}, "wrong_key": {"handshake_refused": 1}},
        "refused_agents": {"good": 0, "wrong_key": 1, "impostor": 0, "revoked": 0},
        "active_bad": 1,
    }
    one = SwarmStatus.parse(json.dumps(line))
    two = SwarmStatus.parse(json.dumps({**line, "phase": 2}))
    total = SwarmStatus.total([one, two])
    assert total.phase == 1
    assert total.online["good"] == 6
    assert total.up["good"] == 8
    assert total.count("good", "busy") == 4
    assert total.outcomes("handshake_refused") == 2
    assert total.count("revoked", "refused_403") == 0
    assert total.refused_agents["wrong_key"] == 2
    assert total.active_bad == 2
    assert SwarmStatus.total([]) == SwarmStatus()
