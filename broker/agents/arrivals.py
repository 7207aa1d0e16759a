"""How many agents came online on this node lately, counted in time buckets, pure.

A cluster node counts each peer as what it last announced plus what this node took in since
(broker.cluster.share): in a herd the load balancer spreads evenly, the peer took in about
as many, and its announcement is up to a heartbeat old."""

from __future__ import annotations

from collections import deque
from typing import Final

#: Arrivals are counted in buckets this long, and kept for as long as a peer's announcement
#: can be counted (its lease and a heartbeat): memory stays bounded.
ARRIVALS_BUCKET_S: Final = 0.25
ARRIVALS_KEPT_S: Final = 10.0


class Arrivals:
    """How many agent tunnels this node took in since a given moment (monotonic), in
    buckets of :data:`ARRIVALS_BUCKET_S`: what a peer heard at that moment has likely taken
    in since (see the module's docstring)."""

    __slots__ = ("_buckets",)

    def __init__(self) -> None:
        self._buckets: deque[list[int]] = deque()  # [bucket number, count]

    def note(self, now: float) -> None:
        """One tunnel came up at ``now``."""
        bucket = int(now // ARRIVALS_BUCKET_S)
        if self._buckets and self._buckets[-1][0] == bucket:
            self._buckets[-1][1] += 1
        else:
            self._buckets.append([bucket, 1])
        oldest = int((now - ARRIVALS_KEPT_S) // ARRIVALS_BUCKET_S)
        while self._buckets[0][0] < oldest:
            self._buckets.popleft()

    def since(self, moment: float) -> int:
        """Tunnels taken in at or after ``moment`` (to a bucket's precision: a bucket counts
        whole once it ends after ``moment``, which errs towards taking the agent)."""
        count = 0
        for bucket, arrived in reversed(self._buckets):
            if (bucket + 1) * ARRIVALS_BUCKET_S <= moment:
                break
            count += arrived
        return count
