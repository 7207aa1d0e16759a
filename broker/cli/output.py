"""How the CLI prints: aligned tables for people, JSON for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence


def print_json(data: object) -> None:
    json.dump(data, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ",".join(_cell(v) for v in value) or "-"
    text = str(value)
    # Agent- or user-supplied text must not drive the terminal.
    return "".join(c if c.isprintable() else "?" for c in text)


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
