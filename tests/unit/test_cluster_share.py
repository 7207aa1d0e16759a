"""The fair share of agents, pure: the limit and its slack, which nodes divide the agents,
the ledger that lets a twice-refused agent in, and which agents a node hands off."""

from __future__ import annotations

import random

import pytest

from broker.agents.arrivals import ARRIVALS_KEPT_S, Arrivals
from broker.agents.retry_spread import LEAST_WINDOW_S, MOST_WINDOW_S, RetrySpread
from broker.cluster.messages import Announcement, BadMessage
from broker.cluster.rebalance import pick
from broker.cluster.share import (
    MAX_REFUSALS,
    READY_GRACE_S,
    RefusalLedger,
    Share,
    share_limit,
    share_of,
)
from broker.cluster.view import ClusterView


def agents(count: int, prefix: str = "ag") -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(count))


@pytest.mark.parametrize(
    ("total", "nodes", "limit"),
    [
        (60, 1, None),  # alone: every agent
        (0, 3, 3),  # nobody online yet: a few each before anyone is turned away
        (60, 3, 25),  # 20 each, 10 % and three more
        (10_000, 3, 3670),
        (7, 2, 7),
    ],
)
def test_the_limit_is_the_share_plus_ten_percent_and_a_few(
    total: int, nodes: int, limit: int | None
) -> None:
    """The most one node holds: total over nodes, 10 % more, plus three; none when alone."""
    assert share_limit(total, nodes) == limit


def test_a_node_is_full_at_its_limit_and_its_excess_is_what_lies_above() -> None:
    """Full means one more would pass the limit; the excess is what is above it."""
    assert not Share(held=24, total=60, nodes=3).full
    assert Share(held=25, total=60, nodes=3).full
    assert Share(held=25, total=60, nodes=3).excess == 0
    assert Share(held=60, total=60, nodes=3).excess == 35
    alone = Share(held=60, total=60, nodes=1)
    assert (alone.full, alone.excess, alone.limit) == (False, 0, None)


def test_the_least_loaded_node_is_never_full() -> None:
    """Whatever the spread, a node holding no more than the mean takes one more agent, so
    the rule always leaves somewhere to go (when every node is counted)."""
    rand = random.Random(7)  # noqa: S311 - spreads to try, no secret
    for _ in range(500):
        held = [rand.randrange(0, 400) for _ in range(rand.randrange(2, 6))]
        least = min(held)
        assert not Share(held=least, total=sum(held), nodes=len(held)).full


def test_other_nodes_divide_the_agents_only_once_ready_for_the_grace() -> None:
    """A node heard but not ready (starting, or draining) adds its agents to the total but
    does not divide them; a ready one divides them after the load balancer's grace."""
    view = ClusterView()
    view.heard(Announcement("n2", (), (), ready=False), now=100.0)
    view.heard(Announcement("n3", agents(10, "x"), (), ready=True), now=100.0)
    share = share_of(50, view.nodes.values(), now=100.0 + READY_GRACE_S - 0.1)
    assert (share.total, share.nodes, share.limit) == (60, 1, None)
    share = share_of(50, view.nodes.values(), now=100.0 + READY_GRACE_S)
    assert (share.total, share.nodes) == (60, 2)
    assert share.excess == 50 - 36

    # Ready since its first ready announcement, not since the last one.
    view.heard(Announcement("n3", agents(10, "x"), (), ready=True), now=102.0)
    assert view.nodes["n3"].ready_since == 100.0
    # A node that stops being ready (it drains) stops dividing at once; ready again, it
    # waits for the grace again.
    view.heard(Announcement("n3", agents(10, "x"), (), ready=False), now=104.0)
    assert share_of(50, view.nodes.values(), now=110.0).nodes == 1
    view.heard(Announcement("n3", agents(10, "x"), (), ready=True), now=111.0)
    assert view.nodes["n3"].ready_since == 111.0


def test_handshakes_under_way_add_to_the_total_not_to_what_a_node_holds() -> None:
    """Three nodes restarting together, each with its herd in handshakes and few tunnels
    up yet: none is full, since what each holds is counted as the others' announcements
    are (tunnels up); counted as held, the herd made each look full to itself."""
    view = ClusterView()
    for name in ("n2", "n3"):
        view.heard(Announcement(name, agents(40, name), (), ready=True), now=100.0)
    now = 100.0 + READY_GRACE_S
    share = share_of(40, view.nodes.values(), now, pending=256)
    assert (share.held, share.total, share.nodes) == (40, 376, 3)
    assert not share.full
    assert share_of(40 + 256, view.nodes.values(), now).full  # the herd counted as held
    # A node genuinely above its share is full however many are in handshakes.
    assert share_of(300, view.nodes.values(), now, pending=10).full


def test_the_herd_expected_back_is_the_least_total_while_it_comes() -> None:
    """2,000 agents coming back after a restart. n1 holds 300 now; n2 and n3 announced 250
    each a heartbeat ago. Of the 800 up, 300 is more than a fair share (limit 297) and n1
    turned the herd away; of the 2,000 expected it is far from it (limit 737). Once more
    agents are up than the count expected (new ones), the agents up count."""
    view = ClusterView()
    for name in ("n2", "n3"):
        view.heard(Announcement(name, agents(250, name), (), ready=True), now=100.0)
    now = 100.0 + READY_GRACE_S
    assert share_of(300, view.nodes.values(), now).full
    share = share_of(300, view.nodes.values(), now, expected=2000)
    assert (share.total, share.limit, share.full) == (2000, 737, False)
    assert share_of(800, view.nodes.values(), now, expected=2000).excess == 63
    assert share_of(300, view.nodes.values(), now, expected=100).total == 800


def test_ready_is_on_the_wire_and_taken_as_true_from_an_older_node() -> None:
    """A node says whether it is ready; one that does not say is an older one, ready."""
    said = Announcement("n1", ("ag1",), (), ready=False)
    assert Announcement.parse(said.serialize()) == said
    assert Announcement.parse(b'{"node": "n1", "agents": [], "sessions": []}').ready
    with pytest.raises(BadMessage):
        Announcement.parse(b'{"node": "n1", "ready": "yes"}')


def test_an_agent_turned_away_twice_in_a_row_is_let_in() -> None:
    """The ledger refuses a full node's agent MAX_REFUSALS times, then lets it in (counted
    as forced); an admission in between starts its count again."""
    ledger = RefusalLedger()
    assert [ledger.admit("ag1", full=True) for _ in range(MAX_REFUSALS)] == [False] * 2
    assert ledger.admit("ag1", full=True)
    assert ledger.forced == 1
    assert not ledger.admit("ag1", full=True)
    assert ledger.admit("ag1", full=False)
    assert not ledger.admit("ag1", full=True)
    assert ledger.forced == 1


def test_turning_away_before_the_lookup_is_what_admit_would_say() -> None:
    """Asked before the agent is looked up: a full node turns it away while its row of
    refusals is short, counted as admit counts them; the refusal it would be let in on,
    and a node not full, are left to admit (nothing changes)."""
    ledger = RefusalLedger()
    assert not ledger.turns_away("ag1", full=False)
    assert ledger.refused == {}
    assert [ledger.turns_away("ag1", full=True) for _ in range(MAX_REFUSALS)] == [True] * 2
    assert not ledger.turns_away("ag1", full=True)
    assert ledger.refused == {"ag1": MAX_REFUSALS}
    assert ledger.admit("ag1", full=True)
    assert ledger.forced == 1
    assert ledger.turns_away("ag1", full=True)
    assert ledger.admit("ag1", full=False)
    assert ledger.refused == {}


def test_a_node_hands_off_only_agents_without_a_live_session() -> None:
    """The excess is picked at random among agents with no session live here, never more
    than there are."""
    rand = random.Random(1)  # noqa: S311 - a choice to test, no secret
    chosen = pick(["a", "b", "c", "d"], {"b"}, 2, rand)
    assert len(chosen) == 2
    assert "b" not in chosen
    assert sorted(pick(["a", "b"], {"b"}, 5, rand)) == ["a"]


def test_a_peer_counts_as_announced_plus_what_this_node_took_in_since() -> None:
    """Two nodes taking an even herd: each peer's announcement is up to a heartbeat old.
    Counted as announced, the peer looked 60 behind and this node, even with it, looked
    full; counted with this node's arrivals since it was heard, neither is full. A node
    that took in the whole herd alone is still full once it is past its share."""
    view = ClusterView()
    view.heard(Announcement("n2", agents(40, "n2"), (), ready=True), now=90.0)
    arrivals = Arrivals()
    for i in range(60):  # this node took in 60 in the 1.5 s since n2 was heard
        arrivals.note(100.0 + i * 0.025)
    now = 101.5
    view.heard(Announcement("n2", agents(100, "n2"), (), ready=True), now=now - 1.5)
    stale = share_of(160, view.nodes.values(), now)
    assert (stale.total, stale.limit, stale.full) == (260, 146, True)
    even = share_of(160, view.nodes.values(), now, arrived_since=arrivals.since)
    assert (even.total, even.full) == (320, False)
    # The herd all came here: 400 held against the peer's 100 is past any allowance.
    alone = share_of(400, view.nodes.values(), now, arrived_since=arrivals.since)
    assert alone.full


def test_arrivals_count_what_came_since_a_moment_and_forget_the_old() -> None:
    """Buckets of a quarter second: a moment inside a bucket counts it whole (towards
    taking the agent); buckets older than what a peer's lease could need are dropped."""
    arrivals = Arrivals()
    for moment in (10.0, 10.1, 10.3, 12.0):
        arrivals.note(moment)
    assert arrivals.since(9.0) == 4
    assert arrivals.since(10.2) == 4  # 10.0 and 10.1 share the bucket ending at 10.25
    assert arrivals.since(10.25) == 2
    assert arrivals.since(12.5) == 0
    arrivals.note(12.0 + ARRIVALS_KEPT_S - 0.5)
    assert arrivals.since(0.0) == 2  # the buckets of 10.x are gone


def test_a_refusal_tells_one_to_three_seconds_while_the_herd_is_small() -> None:
    spread = RetrySpread()
    waits = [spread.seconds(100.0 + i / 10, rand) for i, rand in enumerate([0.0, 0.5, 0.999])]
    assert waits == [1, 2, 3]
    assert spread.window() == LEAST_WINDOW_S


def test_the_window_grows_with_the_agents_turned_away_in_the_last_second() -> None:
    """400 turned away in one second: the next second's refusals spread over 8 s, the
    longest wait told is 8 s and the shortest 1 s; a quiet second after that shrinks it."""
    spread = RetrySpread(per_second=50)
    for _ in range(400):
        spread.seconds(10.5, 0.5)
    assert spread.window() == 8
    assert spread.seconds(11.2, 0.999) == 8
    assert spread.seconds(11.3, 0.0) == 1
    assert spread.seconds(13.0, 0.999) == LEAST_WINDOW_S  # second 12 turned nobody away


def test_the_window_never_passes_its_cap() -> None:
    spread = RetrySpread(per_second=50)
    waits = {spread.seconds(5.0, 0.999) for _ in range(10_000)}
    assert max(waits) == MOST_WINDOW_S
