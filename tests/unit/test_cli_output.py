"""The CLI's output never carries a raw control character, whatever the broker stored: tables,
JSON and everything else printed, checked byte by byte."""

from __future__ import annotations

import io
import json
import re

import pytest

from broker.cli.output import TerminalGuard, print_fields, print_json, print_table

# Stored before text was cleaned where it enters: C1 CSI and OSC, a bidi override, ESC, BEL,
# CR, a tag character and a lone surrogate.
HOSTILE = "needs root\x9b2J\x9d0;pwn\x07\u202egnp.exe\x1b[31m\rred\U000e0041\ud800"
# Raw in UTF-8: C0 but line feed, DEL, C1 (U+0080-U+009F), bidi (U+202A-E, U+2066-9), tags.
RAW_CONTROL = re.compile(
    rb"[\x00-\x09\x0b-\x1f\x7f]|\xc2[\x80-\x9f]|\xe2\x80[\xaa-\xae]|\xe2\x81[\xa6-\xa9]"
    rb"|\xf3\xa0[\x80-\x81]"
)


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def test_json_escapes_every_control_and_stays_the_same_json(
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = {"reason": HOSTILE, "n": [1, "ok"]}
    print_json(data)
    out = capsys.readouterr().out
    assert RAW_CONTROL.search(_bytes(out)) is None
    assert b"\\u009b2J\\u009d0;pwn\\u0007\\u202egnp.exe\\u001b[31m\\rred" in _bytes(out)
    assert json.loads(out) == data


def test_table_and_fields_escape_every_control(capsys: pytest.CaptureFixture[str]) -> None:
    print_table([{"actor": "bob", "reason": HOSTILE}], ["actor", "reason"])
    print_fields({"reason": HOSTILE, "tabbed": "a\tb\nc"})
    out = capsys.readouterr().out
    assert RAW_CONTROL.search(_bytes(out)) is None
    assert out.count("\n") == 4  # one row each: nothing in a cell breaks a line
    assert "needs root\\u009b2J\\u009d0;pwn\\u0007\\u202egnp.exe" in out


def test_terminal_guard_escapes_whatever_else_is_printed() -> None:
    stream = io.StringIO()
    guard = TerminalGuard(stream)
    print(f"refused: {HOSTILE}", file=guard)
    print("a\tb", file=guard)
    guard.flush()
    out = stream.getvalue()
    assert RAW_CONTROL.search(_bytes(out.replace("\t", " "))) is None
    assert out.endswith("a\tb\n")
