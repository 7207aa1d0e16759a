"""Differences between two versions of an article, field by field (pure)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from broker.kb.article import ArticleContent

FIELDS = ("title", "problem", "environment", "cause", "solution", "commands", "tags", "os")


@dataclass(frozen=True)
class FieldDiff:
    field: str
    lines: tuple[str, ...]  # unified diff lines, without the ---/+++ header


def _field_text(content: ArticleContent, field: str) -> list[str]:
    if field == "commands":
        return [
            c.command + ("" if c.exit_status is None else f"  # exit {c.exit_status}")
            for c in content.commands
        ]
    if field in ("tags", "os"):
        return list(getattr(content, field))
    text: str = getattr(content, field)
    return text.splitlines()


def diff_contents(old: ArticleContent, new: ArticleContent) -> list[FieldDiff]:
    """The fields that differ, each as unified-diff lines with two lines of context."""
    out: list[FieldDiff] = []
    for field in FIELDS:
        a, b = _field_text(old, field), _field_text(new, field)
        if a == b:
            continue
        lines = list(difflib.unified_diff(a, b, lineterm="", n=2))
        out.append(FieldDiff(field, tuple(lines[2:])))
    return out
