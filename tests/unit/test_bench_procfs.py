"""Parsing /proc/PID/status and /proc/PID/stat for broker memory and CPU."""

from __future__ import annotations

import os

import pytest

from bench import MeasurementError
from bench.procfs import (
    cpu_seconds,
    parse_cpu_ticks,
    parse_ppid,
    parse_vmrss_kib,
    process_tree,
    processes_cpu_seconds,
    rss_kib,
)

STATUS = "Name:\tpython3\nVmPeak:\t  30000 kB\nVmRSS:\t   12345 kB\nThreads:\t1\n"
# comm holds a space and a ')' on purpose: only the last ')' ends it.
STAT = "4242 (we ird) x) S 17 4242 4242 0 -1 4194304 100 0 0 0 250 50 7 3 20 0 1 0 10 1000 200"


def test_vmrss_is_read_in_kib() -> None:
    """The VmRSS line gives resident memory in KiB."""
    assert parse_vmrss_kib(STATUS) == 12345


def test_missing_vmrss_is_an_error() -> None:
    """A status without VmRSS (kernel thread, zombie) cannot give memory."""
    with pytest.raises(ValueError, match="VmRSS"):
        parse_vmrss_kib("Name:\tkthreadd\nState:\tS\n")


def test_cpu_ticks_sum_own_and_reaped_children_time() -> None:
    """utime, stime, cutime and cstime are summed, even when comm holds ')'."""
    assert parse_cpu_ticks(STAT) == 250 + 50 + 7 + 3


def test_ppid_follows_the_state_field() -> None:
    """The parent pid is the field after the state."""
    assert parse_ppid(STAT) == 17


def test_stat_without_comm_is_refused() -> None:
    """Text that is not /proc/PID/stat is refused rather than misread."""
    with pytest.raises(ValueError, match="not the text"):
        parse_cpu_ticks("garbage")


def test_this_process_has_memory_cpu_and_is_its_tree_root() -> None:
    """The readers work on a live process: this test's own."""
    pid = os.getpid()
    assert process_tree(pid)[0] == pid
    assert rss_kib(pid) > 0
    assert cpu_seconds(pid) > 0.0


def test_a_gone_process_is_a_measurement_error() -> None:
    """Reading a pid that does not exist says so instead of returning 0."""
    with pytest.raises(MeasurementError, match="gone"):
        rss_kib(2**22 + 7)
    with pytest.raises(MeasurementError, match="gone"):
        cpu_seconds(2**22 + 7)


def test_processes_cpu_counts_the_live_ones_and_skips_the_gone() -> None:
    """The ssh clients' CPU is summed over the pids still there; a gone one counts 0."""
    pid = os.getpid()
    own = processes_cpu_seconds([pid])
    assert own > 0.0
    assert processes_cpu_seconds([2**22 + 7]) == 0.0
    assert processes_cpu_seconds([pid, 2**22 + 7]) >= own
