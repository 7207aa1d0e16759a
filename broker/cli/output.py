"""How the CLI prints: aligned tables for people, JSON for scripts.

Nothing the CLI writes carries a raw control character to a terminal, whatever the broker
stored (rows written before text was cleaned where it enters may hold them): table cells and
JSON escape every non-printable character as ``\\uHHHH`` (JSON's own escape, so the output
stays valid JSON), and :class:`TerminalGuard` does the same for every other line printed.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import TextIO

from broker.rules.outside_text import escape_controls


class TerminalGuard:
    """A text stream that writes to ``stream`` with every control character escaped but line
    feed and tab; the CLI puts one in front of stdout and stderr."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        return self.stream.write(escape_controls(text, keep_breaks=True))

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str) -> object:
        return getattr(self.stream, name)


def print_json(data: object) -> None:
    # json.dumps escapes C0 itself; C1, DEL, bidi and the rest it leaves raw with
    # ensure_ascii=False, and raw line feeds are only ever its own indentation.
    text = json.dumps(data, indent=2, ensure_ascii=False)
    sys.stdout.write(escape_controls(text, keep_breaks=True) + "\n")


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ",".join(_cell(v) for v in value) or "-"
    # Agent- or user-supplied text must not drive the terminal, nor break the row.
    return escape_controls(str(value))


def print_table(rows: Sequence[Mapping[str, object]], columns: Sequence[str]) -> None:
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def print_fields(obj: Mapping[str, object], fields: Sequence[str] | None = None) -> None:
    keys = list(fields or obj.keys())
    width = max(len(k) for k in keys) if keys else 0
    for key in keys:
        print(f"{key.ljust(width)}  {_cell(obj.get(key))}")
