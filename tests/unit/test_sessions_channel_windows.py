"""Session channels' windows: a channel alone on its tunnel gets its share of the
broker's budget, within the tunnel's floor and asyncssh's cap; channels sharing a tunnel
get its floor; and they follow as channels come and go (broker.sessions.channel_windows)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from broker.sessions.channel_windows import (
    BROKER_BUDGET,
    ChannelWindows,
    share,
    window_for,
)
from broker.sessions.hub_agent import AGENT_WINDOW_MAX, AGENT_WINDOW_MIN

K = 1024
M = 1024 * K


@dataclass
class Chan:
    """What the windows set on a channel: asyncssh's window to grant up to."""

    _init_recv_window: int = 0


def test_a_share_is_a_power_of_two_at_most_the_even_split() -> None:
    assert share(4 * M, 1) == 4 * M
    assert share(4 * M, 3) == M  # 1.33 MiB rounds down
    assert share(4 * M, 50) == 64 * K  # 80 KiB rounds down
    assert share(4 * M, 0) == 4 * M  # nobody counted yet: the whole budget
    assert share(10, 100) == 0


def test_a_channel_alone_on_its_tunnel_gets_the_cap_and_shared_ones_the_floor() -> None:
    assert window_for(AGENT_WINDOW_MIN, 1, 1) == AGENT_WINDOW_MAX
    # Beside a shell on the same agent, a stream's output is what the shell's echo
    # waits behind: the floor, however few share the tunnel.
    assert window_for(AGENT_WINDOW_MIN, 2, 2) == AGENT_WINDOW_MIN
    assert window_for(AGENT_WINDOW_MIN, 50, 50) == AGENT_WINDOW_MIN
    # A far agent's measured bandwidth-delay product is its floor, whatever the count.
    assert window_for(512 * K, 2, 2) == 512 * K
    assert window_for(AGENT_WINDOW_MAX, 50, 50) == AGENT_WINDOW_MAX


def test_the_broker_budget_bounds_many_agents_with_one_session_each() -> None:
    sessions = 300
    window = window_for(AGENT_WINDOW_MIN, 1, sessions)
    assert window == 128 * K
    assert sessions * window <= max(BROKER_BUDGET, sessions * AGENT_WINDOW_MIN)
    assert window_for(AGENT_WINDOW_MIN, 1, 40) == M  # 64 MiB / 40 rounds down to 1 MiB


def test_windows_follow_as_channels_join_and_leave() -> None:
    windows = ChannelWindows()
    tunnel, other = object(), object()
    first, chan = object(), Chan()
    assert windows.join(first, tunnel, AGENT_WINDOW_MIN) == AGENT_WINDOW_MAX
    windows.made(first, chan)
    assert windows.join(first, tunnel, AGENT_WINDOW_MIN) == AGENT_WINDOW_MAX  # counted once
    keys = [object() for _ in range(4)]
    for key in keys[:2]:
        windows.join(key, tunnel, AGENT_WINDOW_MIN)
    # Three on the tunnel: each gets the floor; the first channel's next grant is up to it.
    assert windows.window(first) == AGENT_WINDOW_MIN == chan._init_recv_window
    # A session alone on another agent's tunnel is not held to the first tunnel's floor.
    assert windows.join(keys[2], other, AGENT_WINDOW_MIN) == AGENT_WINDOW_MAX
    assert chan._init_recv_window == AGENT_WINDOW_MIN
    windows.leave(keys[0])
    assert windows.window(first) == AGENT_WINDOW_MIN  # still two on the tunnel
    for key in keys[1:3]:
        windows.leave(key)
    assert windows.window(first) == AGENT_WINDOW_MAX == chan._init_recv_window
    assert windows.peak == AGENT_WINDOW_MAX
    windows.leave(first)
    windows.leave(first)  # twice (closed, then its close reported): no harm
    assert windows.window(first) is None
    assert len(windows) == 0


def test_lone_channels_follow_the_broker_share_across_its_doublings() -> None:
    """Forty agents with one session each: the share of the broker's budget halves past 32
    sessions for every one of them, and comes back when ten leave."""
    windows = ChannelWindows()
    keys = [object() for _ in range(40)]
    chans = []
    for key in keys:
        chans.append(Chan(windows.join(key, object(), AGENT_WINDOW_MIN)))
        windows.made(key, chans[-1])
    assert {chan._init_recv_window for chan in chans} == {M}  # 64 MiB / 40 rounds down
    for key in keys[:10]:
        windows.leave(key)
    assert {chan._init_recv_window for chan in chans[10:]} == {AGENT_WINDOW_MAX}


def test_a_tunnel_shared_by_many_holds_one_floor_per_channel() -> None:
    windows = ChannelWindows()
    tunnel = object()
    keys = [object() for _ in range(50)]
    for key in keys:
        windows.join(key, tunnel, AGENT_WINDOW_MIN)
    assert {windows.window(key) for key in keys} == {AGENT_WINDOW_MIN}
    assert windows.peak == AGENT_WINDOW_MAX  # the first, while it was alone


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        # Three joins to a leave, so that the counts pass the broker budget's doublings.
        st.tuples(
            st.sampled_from([True, True, True, False]), st.integers(0, 5), st.integers(0, 600)
        ),
        min_size=80,
        max_size=160,
    )
)
def test_every_window_is_what_its_tunnel_and_the_broker_count_say(
    steps: list[tuple[bool, int, int]],
) -> None:
    """After any joins and leaves, each channel's window (and what its channel grants up
    to) is window_for of its tunnel's count and the broker's, though only the windows a
    step could change are revisited; the counts cross the broker budget's doublings."""
    windows = ChannelWindows()
    tunnels = [object() for _ in range(6)]
    floors = [AGENT_WINDOW_MIN, AGENT_WINDOW_MIN, 256 * K, AGENT_WINDOW_MIN, M, AGENT_WINDOW_MIN]
    keys = [object() for _ in range(601)]
    where: dict[int, int] = {}
    chans: dict[int, Chan] = {}
    for joining, tunnel, key in steps:
        if joining and key not in where:
            # The channel opens with the window join returned, as the hub opens it.
            chans[key] = Chan(windows.join(keys[key], tunnels[tunnel], floors[tunnel]))
            windows.made(keys[key], chans[key])
            where[key] = tunnel
        elif not joining and key in where:
            windows.leave(keys[key])
            del where[key]
        on = Counter(where.values())
        for member, at in where.items():
            expected = window_for(floors[at], on[at], len(where))
            assert windows.window(keys[member]) == expected
            assert chans[member]._init_recv_window == expected
    assert len(windows) == len(where)
