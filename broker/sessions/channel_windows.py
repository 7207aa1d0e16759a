"""Session channels' windows: what the broker lets each agent send ahead, shared out.

A channel's window is what the agent may send before the broker grants more (asyncssh
grants once half of it is used), and the most a held session (a staff client that stopped
reading, a full recorder, its turn not come: broker.sessions.output_turns) keeps in the
broker. Three things pull it apart:

- **Throughput.** The grant's round trip is not the network's (tens of microseconds on a
  LAN, which is what the tunnel's bandwidth-delay product measures) but two event loops':
  the broker decrypts, records and writes a packet before its grant goes out, and the
  agent reads the grant on its next turn, milliseconds on a busy machine. With one
  stream and the LAN's 128 KiB window the agent waited for grants with both processes
  below a core: 36-43 MB/s, against 58-62 MB/s with 1-2 MiB (bench.relay_cpu,
  docs/benchmarks.md). Fewer, larger grants also cost the broker less per byte.
- **Memory.** Every held session keeps up to its window in the broker, so 2 MiB for
  each of 300 sessions would be 600 MB.
- **What an echo waits behind.** Every channel of an agent shares its tunnel's one TCP
  stream, so a keystroke's echo waits behind every byte the other channels were let
  send ahead: with 2 MiB each, the echo behind one stream on the same agent took twice
  as long (p99 25 against 11-12 ms, docs/benchmarks.md) as with the floor.

So a channel alone on its tunnel, where nothing waits behind its output but its own
echoes, gets a large window: its share of :data:`BROKER_BUDGET` among all of the broker's
session channels, rounded down to a power of two, at most
:data:`~broker.sessions.hub_agent.AGENT_WINDOW_MAX`. Channels that share a tunnel get its
floor each (:func:`broker.sessions.hub_agent.channel_window`: its bandwidth-delay product,
at least 128 KiB), as every channel had before: fairness first. One stream alone gets
2 MiB; a stream beside a shell on the same agent 128 KiB; what held sessions keep in the
broker stays within ``max(BROKER_BUDGET, sessions x floor)``.

When the count changes the other channels' windows follow at their next grant: asyncssh
grants up to the channel's window (its ``_init_recv_window``, the one private attribute
set here, guarded by tests/unit/test_library_guards.py), so a smaller window takes effect
as the agent uses what it was already granted (a grant is never taken back) and a larger
one at the next packet. File sessions keep their own window (``sftp_window_bytes``) and
are not counted. The bookkeeping is pure; the only I/O is that attribute.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass, field
from typing import Final, Protocol

from broker.sessions.hub_agent import AGENT_WINDOW_MAX

#: What every session channel of the broker shares: the bound, with the floor, on what
#: held sessions keep in the broker.
BROKER_BUDGET: Final = 64 << 20


def share(budget: int, members: int) -> int:
    """``budget`` split ``members`` ways, rounded down to a power of two (so that windows
    change only when the count crosses a doubling, not at every session)."""
    each = budget // max(1, members)
    return 1 << (each.bit_length() - 1) if each > 0 else 0


def window_for(floor: int, on_tunnel: int, on_broker: int) -> int:
    """The window of a channel whose tunnel's floor is ``floor`` bytes, with ``on_tunnel``
    session channels on its tunnel and ``on_broker`` on the broker (itself included)."""
    if on_tunnel > 1:
        return floor
    return max(floor, min(AGENT_WINDOW_MAX, share(BROKER_BUDGET, on_broker)))


class Windowed(Protocol):
    """A channel whose window can follow its share (asyncssh's channel)."""

    _init_recv_window: int


@dataclass(eq=False)
class _Member:
    tunnel: object
    floor: int
    window: int
    chan: Windowed | None = None


@dataclass(eq=False)
class ChannelWindows:
    """The session channels of one event loop (one broker process) and their windows."""

    _members: dict[object, _Member] = field(default_factory=dict)
    #: Each tunnel's members (by the tunnel's id: a member holds its tunnel, so the id is
    #: not reused while it is counted). A channel coming or going changes its own tunnel's
    #: windows, and everyone's only when the broker's share crosses a power of two: a
    #: broker with thousands of sessions does not revisit them all at every open and close.
    _by_tunnel: dict[int, dict[object, _Member]] = field(default_factory=dict)
    #: The largest window handed out so far: with what a line adds, the bound on what a
    #: held session keeps (a grant is never taken back, so a window shrunk since counts).
    peak: int = 0

    @classmethod
    def for_loop(cls) -> ChannelWindows:
        """The running event loop's windows: every session channel of one broker process
        shares its budget."""
        loop = asyncio.get_running_loop()
        windows = _BY_LOOP.get(loop)
        if windows is None:
            windows = _BY_LOOP[loop] = cls()
        return windows

    def join(self, key: object, tunnel: object, floor: int) -> int:
        """Count a channel about to open on ``tunnel`` (whose floor is ``floor``) and
        return its window; the others' follow."""
        if key in self._members:
            return self._members[key].window
        member = _Member(tunnel, floor, 0)
        before = share(BROKER_BUDGET, len(self._members))
        self._members[key] = member
        self._by_tunnel.setdefault(id(tunnel), {})[key] = member
        self._follow(tunnel, before)
        return member.window

    def made(self, key: object, chan: Windowed) -> None:
        """The channel ``key`` joined for is open: its window follows from now on."""
        member = self._members.get(key)
        if member is not None:
            member.chan = chan

    def leave(self, key: object) -> None:
        """The channel closed (or never opened): its share goes to the others."""
        before = share(BROKER_BUDGET, len(self._members))
        member = self._members.pop(key, None)
        if member is None:
            return
        same = self._by_tunnel[id(member.tunnel)]
        del same[key]
        if not same:
            del self._by_tunnel[id(member.tunnel)]
        self._follow(member.tunnel, before)

    def window(self, key: object) -> int | None:
        """The window of ``key``'s channel now (None: not counted)."""
        member = self._members.get(key)
        return None if member is None else member.window

    def __len__(self) -> int:
        return len(self._members)

    def _follow(self, tunnel: object, share_before: int) -> None:
        """Set the windows a join or leave on ``tunnel`` changed."""
        if share(BROKER_BUDGET, len(self._members)) != share_before:
            self._refresh(list(self._members.values()))
        else:
            self._refresh(list(self._by_tunnel.get(id(tunnel), {}).values()))

    def _refresh(self, members: list[_Member]) -> None:
        total = len(self._members)
        for member in members:
            on_tunnel = len(self._by_tunnel[id(member.tunnel)])
            window = window_for(member.floor, on_tunnel, total)
            if window == member.window:
                continue
            member.window = window
            self.peak = max(self.peak, window)
            if member.chan is not None:
                member.chan._init_recv_window = window


_BY_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ChannelWindows] = (
    weakref.WeakKeyDictionary()
)
