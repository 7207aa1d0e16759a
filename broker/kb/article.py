"""What an article holds, how it is checked, and its status table (pure).

An article's content is one frozen value (:class:`ArticleContent`); every save stores a copy
of it as a new version. Outside text is cleaned, not refused, where cleaning loses nothing a
reader needs (controls and bidi tricks go, line breaks stay in multi-line fields); limits and
syntax rules (tags, OS names, session ids) are refused with a sentence saying what is allowed.

Statuses: ``draft`` → ``published`` → ``retired``; a draft can be retired (discarded), and a
retired article reopens as a draft. Published articles may be edited (each save a version).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Final, Literal

from broker.kb.analysis import fold, words
from broker.kb.errors import ArticleInvalid, StatusRefused
from broker.kb.languages import LANGUAGE_RULE, LANGUAGES, guess_language
from broker.rules import InvalidName
from broker.rules.names import parse_session_id, sanitize_display_text
from broker.rules.outside_text import UNWANTED, clean_lines
from broker.secret_scrubber import find_secrets

ArticleStatus = Literal["draft", "published", "retired"]
StatusAction = Literal["publish", "retire", "reopen"]

STATUSES: Final[tuple[ArticleStatus, ...]] = ("draft", "published", "retired")
TRANSITIONS: Final = MappingProxyType[tuple[ArticleStatus, StatusAction], ArticleStatus](
    {
        ("draft", "publish"): "published",
        ("draft", "retire"): "retired",
        ("published", "retire"): "retired",
        ("retired", "reopen"): "draft",
    }
)

TITLE_MAX: Final = 200
TEXT_MAX: Final = MappingProxyType(
    {"problem": 20_000, "environment": 4_000, "cause": 20_000, "solution": 50_000}
)
COMMANDS_MAX: Final = 200
COMMAND_MAX_CHARS: Final = 2_000
TAGS_MAX: Final = 20
OS_MAX: Final = 10
OS_NAME_MAX: Final = 100
TAG_RULE: Final = (
    "a tag is 1 to 40 characters from a-z, 0-9, '.', '+', '_' and '-', starting with a letter "
    "or digit, e.g. printing or cups"
)
TAG: Final = re.compile(r"[a-z0-9][a-z0-9.+_-]{0,39}")
ARTICLE_REF: Final = re.compile(r"(?:KB-)?([1-9][0-9]{0,8})")


@dataclass(frozen=True)
class CommandEntry:
    """A command from a session transcript, with its exit status (None: it never ended)."""

    command: str
    exit_status: int | None
    session: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {"command": self.command, "exit_status": self.exit_status, "session": self.session}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> CommandEntry:
        status = data.get("exit_status")
        session = data.get("session")
        return cls(
            command=str(data.get("command", "")),
            exit_status=status if isinstance(status, int) else None,
            session=session if isinstance(session, str) else None,
        )


@dataclass(frozen=True)
class ArticleContent:
    """Everything an author edits; one version of an article."""

    title: str
    problem: str = ""
    environment: str = ""
    cause: str = ""
    solution: str = ""
    commands: tuple[CommandEntry, ...] = ()
    tags: tuple[str, ...] = ()
    os: tuple[str, ...] = ()
    language: str = ""  # de | en; "" until check_content guesses it from the text

    def as_dict(self) -> dict[str, object]:
        return {
            "language": self.language,
            "title": self.title,
            "problem": self.problem,
            "environment": self.environment,
            "cause": self.cause,
            "solution": self.solution,
            "commands": [c.as_dict() for c in self.commands],
            "tags": list(self.tags),
            "os": list(self.os),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> ArticleContent:
        """Read a stored version back (stored values were checked when saved)."""
        commands = data.get("commands")
        tags = data.get("tags")
        oses = data.get("os")
        return cls(
            title=str(data.get("title", "")),
            problem=str(data.get("problem", "")),
            environment=str(data.get("environment", "")),
            cause=str(data.get("cause", "")),
            solution=str(data.get("solution", "")),
            commands=tuple(
                CommandEntry.from_dict(c) for c in (commands or []) if isinstance(c, dict)
            )
            if isinstance(commands, list)
            else (),
            tags=tuple(str(t) for t in tags) if isinstance(tags, list) else (),
            os=tuple(str(o) for o in oses) if isinstance(oses, list) else (),
            language=str(data.get("language", "")),
        )

    def search_texts(self) -> tuple[str, str, str, str, str]:
        """Title, problem, solution (with the cause), commands and tags, as the index holds them."""
        return (
            self.title,
            self.problem,
            "\n".join(t for t in (self.cause, self.solution) if t),
            "\n".join(c.command for c in self.commands),
            " ".join(self.tags),
        )


def clean_text(text: str, limit: int, field: str) -> str:
    """Multi-line text without controls, CRLF as LF, trimmed; refused beyond ``limit``."""
    cleaned = clean_lines(text)
    if len(cleaned) > limit:
        raise ArticleInvalid(
            f"{field} is {len(cleaned)} characters long; keep it under {limit} characters"
        )
    return cleaned


def parse_tag(text: str) -> str:
    tag = text.strip().lower()
    if not TAG.fullmatch(tag):
        shown = sanitize_display_text(text, 40)
        raise ArticleInvalid(f"invalid tag {shown!r}: {TAG_RULE}")
    return tag


def os_terms(names: Sequence[str]) -> str:
    """OS names as the filter matches them: folded words, space-padded (" debian 12 ")."""
    terms = dict.fromkeys(fold(w) for name in names for w in words(name))
    return " " + " ".join(terms) + " " if terms else ""


def check_command(entry: CommandEntry) -> CommandEntry:
    command = UNWANTED.sub("", entry.command).strip()
    if not command:
        raise ArticleInvalid("a command is empty; remove it or give the command line")
    if len(command) > COMMAND_MAX_CHARS:
        raise ArticleInvalid(f"a command is longer than {COMMAND_MAX_CHARS} characters")
    status = entry.exit_status
    if status is not None and (isinstance(status, bool) or not -1 <= status <= 255):
        raise ArticleInvalid(f"exit status {status!r} is not a number from -1 to 255")
    session = entry.session
    if session is not None:
        try:
            parse_session_id(session)
        except InvalidName as exc:
            raise ArticleInvalid(exc.message) from None
    return CommandEntry(command, status, session)


def check_content(content: ArticleContent) -> ArticleContent:
    """Return ``content`` cleaned, or raise ArticleInvalid naming the first problem."""
    title = sanitize_display_text(content.title, TITLE_MAX + 1)
    if not title:
        raise ArticleInvalid("the title is empty; give the article a title")
    if len(title) > TITLE_MAX:
        raise ArticleInvalid(f"the title is longer than {TITLE_MAX} characters; shorten it")
    if len(content.commands) > COMMANDS_MAX:
        raise ArticleInvalid(f"an article keeps at most {COMMANDS_MAX} commands; pick fewer")
    if len(content.tags) > TAGS_MAX:
        raise ArticleInvalid(f"an article has at most {TAGS_MAX} tags")
    if len(content.os) > OS_MAX:
        raise ArticleInvalid(f"an article names at most {OS_MAX} operating systems")
    language = content.language or guess_language(content.title, content.problem)
    if language not in LANGUAGES:
        raise ArticleInvalid(
            f"unknown language {sanitize_display_text(language, 10)!r}: {LANGUAGE_RULE}"
        )
    oses: list[str] = []
    for name in content.os:
        shown = sanitize_display_text(name, OS_NAME_MAX + 1)
        if not shown or len(shown) > OS_NAME_MAX:
            raise ArticleInvalid(f"an OS name is 1 to {OS_NAME_MAX} characters, e.g. Debian 12")
        if shown not in oses:
            oses.append(shown)
    return replace(
        content,
        title=title,
        problem=clean_text(content.problem, TEXT_MAX["problem"], "problem"),
        environment=clean_text(content.environment, TEXT_MAX["environment"], "environment"),
        cause=clean_text(content.cause, TEXT_MAX["cause"], "cause"),
        solution=clean_text(content.solution, TEXT_MAX["solution"], "solution"),
        commands=tuple(check_command(c) for c in content.commands),
        tags=tuple(dict.fromkeys(parse_tag(t) for t in content.tags)),
        os=tuple(oses),
        language=language,
    )


def publish_gaps(content: ArticleContent) -> list[str]:
    """What a draft still lacks before it may be published (empty: nothing)."""
    return [name for name in ("problem", "solution") if not getattr(content, name).strip()]


def secrets_left(content: ArticleContent) -> list[str]:
    """Where the article still holds a secret the scrubber detects, as "the solution, line
    3 (a password option)": an article is read at every customer, so it is not published
    with one. The secret itself is never named."""
    places: list[str] = []
    fields = [(name, getattr(content, name)) for name in ("title", *TEXT_MAX)]
    fields.append(("commands", "\n".join(c.command for c in content.commands)))
    for name, text in fields:
        for finding in find_secrets(text):
            what = "command" if name == "commands" else "line"
            places.append(f"the {name}, {what} {finding.line} ({finding.kind})")
    return places


def transition(status: str, action: StatusAction, *, article: int) -> ArticleStatus:
    """The status after ``action``, or StatusRefused saying what to do instead."""
    for (current, act), target in TRANSITIONS.items():
        if current == status and act == action:
            return target
    hint = {
        "publish": "only drafts are published; reopen a retired article as a draft first",
        "retire": "the article is retired already",
        "reopen": "only retired articles are reopened",
    }[action]
    raise StatusRefused(f"article {format_article_id(article)} is {status}; {hint}")


def format_article_id(number: int) -> str:
    return f"KB-{number}"


def parse_article_id(text: str) -> int:
    """Read ``KB-12`` or ``12``; raise ArticleInvalid otherwise."""
    match = ARTICLE_REF.fullmatch(text.strip()) if len(text) <= 20 else None
    if match is None:
        shown = sanitize_display_text(text, 20)
        raise ArticleInvalid(f"{shown!r} is not an article id; write KB-12 or 12")
    return int(match.group(1))
