"""Articles as Markdown (export) and as safe HTML (console), pure.

HTML comes from markdown-it-py with raw HTML disabled, then nh3 cleans it against a short
list of tags, attributes and URL schemes: whatever an author or a requester typed, no
script, event handler, style or ``javascript:`` link survives. Oversized input is refused
with a clear error instead of being cut, so a reader never sees half an article unawares.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import nh3
from markdown_it import MarkdownIt

from broker.kb.article import ArticleContent, format_article_id
from broker.kb.errors import ArticleTooLarge

RENDER_MAX_CHARS: Final = 256 * 1024

ALLOWED_TAGS: Final = frozenset(
    {
        "a", "blockquote", "br", "code", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr",
        "li", "ol", "p", "pre", "strong", "table", "tbody", "td", "th", "thead", "tr", "ul",
        "del", "s",
    }
)  # fmt: skip
ALLOWED_ATTRIBUTES: Final = {"a": {"href", "title"}, "th": {"align"}, "td": {"align"}}
URL_SCHEMES: Final = frozenset({"http", "https", "mailto"})

_BACKTICKS: Final = re.compile(r"`+")


@dataclass(frozen=True)
class SourceRef:
    """A ticket or session an article came from, as the reader may see it."""

    kind: str  # "ticket" or "session"
    ref: str


@dataclass(frozen=True)
class ArticleDoc:
    """What an export shows besides the content."""

    id: int
    status: str
    version: int
    author: str
    reviewer: str | None
    content: ArticleContent
    sources: Sequence[SourceRef] = ()


def _markdown() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")


def _fence(body: str) -> str:
    """A code fence longer than any run of backticks in ``body``, so it cannot be closed early."""
    longest = max((len(m) for m in _BACKTICKS.findall(body)), default=0)
    return "`" * max(3, longest + 1)


def _escape_inline(text: str) -> str:
    return re.sub(r"([\\`*_\[\]#<>!|])", r"\\\1", text)


def to_markdown(doc: ArticleDoc) -> str:
    """The article as one Markdown document (``kb export``)."""
    c = doc.content
    lines = [f"# {_escape_inline(c.title)}", ""]
    meta = [f"{format_article_id(doc.id)}, version {doc.version}, {doc.status}"]
    meta.append(f"author {doc.author}" + (f", reviewed by {doc.reviewer}" if doc.reviewer else ""))
    if c.tags:
        meta.append("tags: " + ", ".join(c.tags))
    if c.os:
        meta.append("OS: " + ", ".join(_escape_inline(o) for o in c.os))
    lines += [f"*{_escape_inline(m)}*  " for m in meta]
    lines.append("")
    for heading, body in (
        ("Problem", c.problem),
        ("Environment", c.environment),
        ("Cause", c.cause),
        ("Solution", c.solution),
    ):
        if body:
            lines += [f"## {heading}", "", body, ""]
    if c.commands:
        shell = "\n".join(
            f"$ {cmd.command}" + ("" if cmd.exit_status is None else f"  # exit {cmd.exit_status}")
            for cmd in c.commands
        )
        fence = _fence(shell)
        lines += ["## Commands", "", f"{fence}sh", shell, fence, ""]
    if doc.sources:
        lines += ["## Sources", ""]
        lines += [f"- {s.kind} {_escape_inline(s.ref)}" for s in doc.sources]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def render_html(markdown_text: str) -> str:
    """Sanitised HTML for ``markdown_text``; ArticleTooLarge beyond RENDER_MAX_CHARS."""
    if len(markdown_text) > RENDER_MAX_CHARS:
        raise ArticleTooLarge(
            f"the article is {len(markdown_text)} characters long and cannot be shown; "
            f"the limit is {RENDER_MAX_CHARS}: split it into several articles"
        )
    html = _markdown().render(markdown_text)
    return nh3.clean(
        html,
        tags=set(ALLOWED_TAGS),
        attributes={k: set(v) for k, v in ALLOWED_ATTRIBUTES.items()},
        url_schemes=set(URL_SCHEMES),
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )


def article_html(doc: ArticleDoc) -> str:
    """The whole article as sanitised HTML."""
    return render_html(to_markdown(doc))
