"""The bench's pure statistics: percentiles, ratios, rates and capacity steps."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import MeasurementError
from bench.file_scenarios import sftp_argv
from bench.stats import (
    largest_passing_step,
    median,
    megabytes_per_second,
    per_item,
    percentile,
    ratio,
)


def test_percentile_on_an_exact_rank_returns_that_sample() -> None:
    """A rank that falls on a sample returns the sample, whatever the input order."""
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 50) == 3.0
    assert percentile([5.0, 1.0, 3.0], 0) == 1.0
    assert percentile([5.0, 1.0, 3.0], 100) == 5.0


def test_percentile_interpolates_between_neighbours() -> None:
    """Between two ranks the value is interpolated linearly, like NumPy's default."""
    assert percentile([10.0, 20.0], 50) == pytest.approx(15.0)
    samples = [float(value) for value in range(1, 501)]
    # rank = 0.99 * 499 = 494.01 → between 495 and 496
    assert percentile(samples, 99) == pytest.approx(495.01)


def test_percentile_of_one_sample_is_that_sample() -> None:
    """A single sample is every percentile of itself."""
    assert percentile([7.0], 99) == 7.0


def test_percentile_refuses_empty_input_and_bad_percent() -> None:
    """No samples, or a percent outside 0..100, is a caller's error."""
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 50)
    with pytest.raises(ValueError, match=r"within 0\.\.100"):
        percentile([1.0], 101)
    with pytest.raises(ValueError, match=r"within 0\.\.100"):
        percentile([1.0], float("nan"))


def test_median_of_an_even_count_averages_the_middle_pair() -> None:
    """The median of an even number of samples is the mean of the two middle ones."""
    assert median([4.0, 1.0, 3.0, 2.0]) == pytest.approx(2.5)


def test_ratio_is_none_when_a_side_is_missing_or_zero() -> None:
    """A ratio needs both figures and a non-zero divisor."""
    assert ratio(150.0, 200.0) == pytest.approx(0.75)
    assert ratio(None, 200.0) is None
    assert ratio(150.0, None) is None
    assert ratio(150.0, 0.0) is None


def test_megabytes_per_second_uses_decimal_megabytes() -> None:
    """10^6 bytes in one second is 1 MB/s; a non-positive duration is refused."""
    assert megabytes_per_second(50_000_000, 2.0) == pytest.approx(25.0)
    with pytest.raises(ValueError, match="cannot take"):
        megabytes_per_second(1, 0.0)


def test_per_item_spreads_a_total_and_refuses_no_items() -> None:
    """A total change is divided by the item count, which must be positive."""
    assert per_item(1000.0, 40) == pytest.approx(25.0)
    with pytest.raises(ValueError, match="cannot spread"):
        per_item(1.0, 0)


def test_largest_passing_step_stops_at_the_first_failure() -> None:
    """The capacity is the last load below the limit before the first step that reached it."""
    steps = [(50, 3.0), (100, 12.0), (200, 60.0), (300, 20.0)]
    assert largest_passing_step(steps, 50.0) == 100
    assert largest_passing_step([(50, 80.0)], 50.0) == 0
    assert largest_passing_step([(50, 1.0), (100, 2.0)], 50.0) == 100
    assert largest_passing_step([], 50.0) == 0


def test_sftp_argv_is_the_targets_ssh_options_with_sftps_port_flag() -> None:
    """The SFTP scenarios reach each target with its own ssh options; sftp spells the port
    -P, and a target not reached with ssh is refused rather than measured wrongly."""
    ssh = ["ssh", "-F", "cfg", "-J", "bastion", "-p", "2200", "-i", "key", "T-1@127.0.0.1"]
    assert sftp_argv(ssh, Path("b")) == [
        "sftp", "-b", "b", "-F", "cfg", "-J", "bastion", "-P", "2200", "-i", "key",
        "T-1@127.0.0.1",
    ]  # fmt: skip
    with pytest.raises(MeasurementError):
        sftp_argv(["sh", "-c", "true"], Path("b"))
