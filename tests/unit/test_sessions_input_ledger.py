"""The agent's input reports and the broker's ledger of input waiting for them (pure)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.input_reports import (
    MAX_REPORT_LINE,
    InputReport,
    InputReportReader,
    encode_input_report,
)
from broker.sessions.input_ledger import InputLedger


def test_reports_round_trip_in_any_chunking() -> None:
    """Reports split at any byte come out whole and in order; nothing else is mixed in."""
    stream = encode_input_report(3, True) + encode_input_report(12, False)
    for cut in range(len(stream) + 1):
        reader = InputReportReader()
        first, other1 = reader.feed(stream[:cut])
        second, other2 = reader.feed(stream[cut:])
        assert first + second == [InputReport(3, True), InputReport(12, False)]
        assert other1 + other2 == b""
        assert reader.close() == b""


def test_text_that_is_not_a_report_is_handed_back_whole() -> None:
    """An agent's own error line (or anything malformed) is other bytes, never a report."""
    reader = InputReportReader()
    text = b"secondline-agent: cannot start /bin/zsh as bob (No such file)\r\n"
    for bad in (b"sl:input 0 on\n", b"sl:input 5 maybe\n", b"sl:input -1 off\n", text):
        assert reader.feed(bad) == ([], bad)
    long = b"x" * (MAX_REPORT_LINE + 1)
    assert reader.feed(long) == ([], long)
    assert reader.feed(b"tail") == ([], b"")
    assert reader.close() == b"tail"


def test_ledger_cuts_pieces_by_reported_counts() -> None:
    """Counts need not match the chunks sent; pieces keep their kind and order."""
    ledger = InputLedger()
    assert ledger.sent("typed", b"abc") == []
    assert ledger.sent("reply", b"\x1b[1;1R") == []
    assert ledger.sent("typed", b"xy") == []
    assert ledger.reported(2, True) == [("typed", b"ab", True)]
    assert ledger.reported(4, False) == [("typed", b"c", False), ("reply", b"\x1b[1", False)]
    assert ledger.reported(5, True) == [("reply", b";1R", True), ("typed", b"xy", True)]
    assert ledger.unreported == 0
    assert ledger.reported(3, True) == []
    assert ledger.excess == 3


def test_ledger_gives_up_unreported_input_as_hidden() -> None:
    """An agent that never reports (an older one): past the bound, and at the end, the
    waiting input counts as not echoed, so nothing unconfirmed is ever recorded as typed."""
    ledger = InputLedger(max_unreported=4)
    assert ledger.sent("typed", b"abc") == []
    assert ledger.sent("typed", b"def") == [("typed", b"ab", False)]
    assert ledger.close() == [("typed", b"c", False), ("typed", b"def", False)]
    assert ledger.unreported == 0


@settings(max_examples=200, deadline=None)
@given(
    chunks=st.lists(st.binary(min_size=1, max_size=20), max_size=20),
    counts=st.lists(st.integers(min_value=1, max_value=30), max_size=30),
)
def test_ledger_hands_back_every_byte_once_in_order(chunks: list[bytes], counts: list[int]) -> None:
    """Whatever the counts, the bytes handed back are the bytes sent, in order, once."""
    ledger = InputLedger()
    for chunk in chunks:
        ledger.sent("typed", chunk)
    out = b"".join(data for count in counts for _, data, _ in ledger.reported(count, True))
    out += b"".join(data for _, data, _ in ledger.close())
    assert out == b"".join(chunks)
