"""Markdown export and sanitised HTML of articles; version diffs (pure)."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from broker.kb.article import ArticleContent, CommandEntry
from broker.kb.errors import ArticleTooLarge
from broker.kb.history import diff_contents
from broker.kb.render import (
    RENDER_MAX_CHARS,
    ArticleDoc,
    SourceRef,
    article_html,
    render_html,
    to_markdown,
)


def doc(**fields: object) -> ArticleDoc:
    content = ArticleContent(**{"title": "Printer stuck", **fields})  # type: ignore[arg-type]
    return ArticleDoc(1, "published", 3, "max", "olga", content, [SourceRef("ticket", "T-1001")])


class Elements(HTMLParser):
    """Every element and attribute of an HTML fragment, as a browser would see them."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += [(k, v or "") for k, v in attrs]


def test_markdown_has_every_section() -> None:
    """Export lists id, version, people, tags and OS, then each non-empty section."""
    md = to_markdown(
        doc(
            problem="p",
            environment="Debian 12",
            cause="c",
            solution="1. do it",
            commands=(CommandEntry("lpstat -p", 0), CommandEntry("top", None)),
            tags=("cups",),
            os=("Debian 12",),
        )
    )
    assert md.startswith("# Printer stuck\n")
    assert "*KB-1, version 3, published*" in md
    assert "reviewed by olga" in md
    for heading in ("## Problem", "## Environment", "## Cause", "## Solution", "## Sources"):
        assert heading in md
    assert "$ lpstat -p  # exit 0\n$ top\n" in md
    assert "- ticket T-1001" in md


def test_empty_sections_are_left_out() -> None:
    """An article with a title only exports no empty headings."""
    md = to_markdown(ArticleDoc(2, "draft", 1, "max", None, ArticleContent(title="t")))
    assert "##" not in md
    assert "reviewed" not in md


def test_command_fence_cannot_be_closed_early() -> None:
    """A command holding backticks gets a longer fence."""
    md = to_markdown(doc(commands=(CommandEntry("echo ````; evil", 0),)))
    assert "`````sh\n" in md


def test_title_markup_is_escaped() -> None:
    """Markdown in the title is shown, not interpreted."""
    html = article_html(doc(title="*bold* [x](http://e) <b>"))
    assert "<h1>*bold* [x](http://e) &lt;b&gt;</h1>" in html


@pytest.mark.parametrize(
    "hostile",
    [
        "<script>alert(1)</script>",
        '<img src=x onerror="alert(1)">',
        "[x](javascript:alert(1))",
        "[x](JaVaScRiPt:alert(1))",
        "[x](data:text/html,<script>alert(1)</script>)",
        "<a href='javascript:x' onclick='y'>z</a>",
        "<iframe src='https://evil'></iframe>",
        "<svg onload=alert(1)>",
        "![x](javascript:alert(1))",
        "<style>body{}</style>",
    ],
)
def test_html_is_inert(hostile: str) -> None:
    """Scripts, event handlers, frames, styles and javascript: or data: links never survive."""
    found = Elements(render_html(hostile))
    assert set(found.tags) <= {"p", "a"}
    for name, value in found.attrs:
        assert name in ("href", "rel")
        assert not value.lower().startswith(("javascript:", "data:"))


def test_html_keeps_safe_markup() -> None:
    """Headings, lists, code, tables and http links render; links get rel=noopener."""
    html = render_html(
        "## H\n\n- a\n\n`c`\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n[l](https://e.org)"
    )
    for good in ("<h2>", "<li>", "<code>", "<table>", "<td>", 'href="https://e.org"', "noopener"):
        assert good in html


def test_huge_articles_are_refused() -> None:
    """Beyond the render limit the caller gets a clear error, not half an article."""
    with pytest.raises(ArticleTooLarge, match="split it"):
        render_html("x" * (RENDER_MAX_CHARS + 1))


def test_diff_lists_changed_fields_only() -> None:
    """Diffs come per field, unified, for text, command and list fields."""
    old = ArticleContent(title="t", solution="a\nb", tags=("x",), commands=(CommandEntry("ls", 0),))
    new = ArticleContent(title="t", solution="a\nc", tags=("x", "y"), commands=())
    fields = {d.field: d.lines for d in diff_contents(old, new)}
    assert set(fields) == {"solution", "tags", "commands"}
    assert fields["solution"] == ("@@ -1,2 +1,2 @@", " a", "-b", "+c")
    assert fields["commands"][-1] == "-ls  # exit 0"
    assert diff_contents(old, old) == []
