"""Pure statistics of the bench: percentiles, medians, ratios and rates.

Nothing here reads the clock or touches a file, so it is tested synchronously.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

MEGABYTE: float = 1_000_000.0
"""MB in every throughput figure is 10^6 bytes (what `dd` and network tools print)."""


def percentile(samples: Sequence[float], pct: float) -> float:
    """Return the `pct`-th percentile with linear interpolation between closest ranks.

    This is NumPy's default ("linear") method: for n samples the rank is
    ``pct / 100 * (n - 1)``, interpolated between the two neighbouring sorted values.
    """
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0.0 <= pct <= 100.0 or math.isnan(pct):
        raise ValueError(f"percentile must be within 0..100, not {pct}")
    ordered = sorted(samples)
    rank = pct / 100.0 * (len(ordered) - 1)
    low = math.floor(rank)
    high = math.ceil(rank)
    if low == high:
        return ordered[low]
    weight = rank - low
    return ordered[low] * (1.0 - weight) + ordered[high] * weight


def median(samples: Sequence[float]) -> float:
    """Return the median (the 50th percentile) of `samples`."""
    return percentile(samples, 50.0)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """Return numerator / denominator, or None when either is missing or the divisor is 0."""
    if numerator is None or denominator is None or denominator == 0.0:
        return None
    return numerator / denominator


def megabytes_per_second(byte_count: int, seconds: float) -> float:
    """Return a throughput in MB/s (10^6 bytes per second)."""
    if seconds <= 0.0:
        raise ValueError(f"a transfer cannot take {seconds} s")
    return byte_count / MEGABYTE / seconds


def per_item(total_delta: float, items: int) -> float:
    """Return a total change spread over `items` (e.g. broker RSS growth per agent)."""
    if items <= 0:
        raise ValueError(f"cannot spread over {items} items")
    return total_delta / items


def largest_passing_step(steps: Sequence[tuple[int, float]], limit: float) -> int:
    """Return the largest step whose figure stayed below `limit`, or 0 if none did.

    `steps` are (load, figure) pairs in the order they were measured; the search stops
    at the first step that reached the limit, since a higher load that passed by chance
    after a failure is not a capacity the service can promise.
    """
    best = 0
    for load, figure in steps:
        if figure >= limit:
            break
        best = max(best, load)
    return best
