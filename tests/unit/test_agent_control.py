"""Unit tests of the control socket's wire format."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.control import ControlRequest, decode_answer, encode_answer
from agent.errors import ControlError, MessageError

SESSION = "s-" + "C" * 22


def test_requests_round_trip() -> None:
    """Requests serialize to one JSON line and parse back."""
    for request in (ControlRequest("status"), ControlRequest("approve", SESSION)):
        line = request.serialize()
        assert line.endswith(b"\n")
        assert line.count(b"\n") == 1
        assert ControlRequest.parse(line) == request


@pytest.mark.parametrize(
    "line",
    [
        b'{"op":"reboot"}',
        b'{"op":"approve"}',
        b'{"op":"status","session":"' + SESSION.encode() + b'"}',
        b'{"op":"end","session":"s-../../etc"}',
        b'{"op":"end","session":5}',
        b'{"op":"status","who":"root"}',
        b"not json",
    ],
)
def test_bad_requests_are_refused(line: bytes) -> None:
    """Unknown operations, missing or extra fields and bad session ids are MessageErrors."""
    with pytest.raises(MessageError):
        ControlRequest.parse(line)


@given(st.binary(max_size=300))
def test_request_parsing_raises_only_message_error(line: bytes) -> None:
    """Any bytes parse into a request or raise MessageError."""
    with contextlib.suppress(MessageError):
        ControlRequest.parse(line)


def test_answers() -> None:
    """Results come back; errors become ControlError with the agent's sentence."""
    assert decode_answer(encode_answer({"x": 1})) == {"x": 1}
    with pytest.raises(ControlError, match="no such session"):
        decode_answer(encode_answer(error="no such session"))
    with pytest.raises(ControlError, match="could not be read"):
        decode_answer(b"")
