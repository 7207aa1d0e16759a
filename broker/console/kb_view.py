"""What the knowledge-base pages decide without I/O: which buttons a person gets on an
article, how the edit form reads (and reads back after a refusal), and which fields a save
changes.

The buttons follow ``broker.kb.policy``, the same rules the API applies, so a page offers
only what the API would allow; the API still decides every request (a forged POST is refused
there and the refusal is shown). The form keeps what was typed as text, so a refused save
(a version conflict, a bad tag) shows the form again with nothing lost; it is turned into
an API body only by :meth:`ArticleForm.body`, which raises ``InputError`` on what the API
could not read (an exit status that is not a number).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from multidict import MultiDictProxy

from broker.console.api_calls import Json, json_dict, json_list
from broker.console.render import inline_text
from broker.console.session_store import ConsoleUser
from broker.errors import InputError
from broker.kb.policy import may_change_status, may_read, may_write
from broker.rules.views import Allowed, Refused, StaffView

TEXT_FIELDS: Final = ("problem", "environment", "cause", "solution")
ARTICLE_FIELDS: Final = ("title", *TEXT_FIELDS, "commands", "tags", "os", "language")
ARTICLE_LANGUAGES: Final = ("de", "en")
# Caps on what the form takes: the API's own request limits; its content rules (shorter)
# still refuse with a sentence saying how long a field may be.
FIELD_CAPS: Final = {
    "title": 1_000,
    "problem": 40_000,
    "environment": 8_000,
    "cause": 40_000,
    "solution": 100_000,
    "tags": 1_000,
    "os": 1_200,
    "note": 500,
    "commands_new": 40_000,
}
COMMANDS_MAX: Final = 200
COMMAND_CAP: Final = 4_000
SESSION_CAP: Final = 30
EXIT_STATUS: Final = re.compile(r"-?[0-9]{1,3}")
VERSION: Final = re.compile(r"[1-9][0-9]{0,8}")
SEARCH_STATUSES: Final = ("published", "draft", "retired", "any")
# What the search box takes: more is pasted log, and the API searches 4,000 characters.
SEARCH_TEXT_MAX: Final = 2_000
SEARCH_RESULTS: Final = 20
OS_FILTER_MAX: Final = 100
TAG_FILTER_MAX: Final = 40
_TAG_SPLIT: Final = re.compile(r"[\s,;]+")
_OS_SPLIT: Final = re.compile(r"[,;\n]+")


def staff_view(user: ConsoleUser) -> StaffView:
    """The signed-in person as the KB rules see them (a disabled account has no session)."""
    return StaffView(user.name, user.role, False, user.customers)


@dataclass(frozen=True)
class ArticleActions:
    """The buttons of an article page."""

    edit: bool
    publish: bool
    retire: bool
    reopen: bool


def edit_refused(user: ConsoleUser, status: str, author: str) -> Refused | None:
    """Why ``user`` may not edit an article in ``status`` by ``author``, or None."""
    staff = staff_view(user)
    for decision in (may_read(staff, status, author), may_write(staff, status)):
        if isinstance(decision, Refused):
            return decision
    if status == "retired":
        return Refused("status_refused", "the article is retired; reopen it as a draft to edit it")
    return None


def article_actions(user: ConsoleUser, status: str, author: str) -> ArticleActions:
    """What ``user`` may do with an article in ``status`` written by ``author``."""
    changes = isinstance(may_change_status(staff_view(user), "publish"), Allowed)
    return ArticleActions(
        edit=edit_refused(user, status, author) is None,
        publish=changes and status == "draft",
        retire=changes and status in ("draft", "published"),
        reopen=changes and status == "retired",
    )


def may_write_drafts(user: ConsoleUser) -> Refused | None:
    """Why ``user`` may not write a new draft, or None."""
    decision = may_write(staff_view(user), "draft")
    return decision if isinstance(decision, Refused) else None


def may_see_drafts(user: ConsoleUser) -> bool:
    """Whether ``user`` may list and search drafts and retired articles (level 2 and up)."""
    return isinstance(may_read(staff_view(user), "draft"), Allowed)


@dataclass(frozen=True)
class SearchForm:
    """The search page's query string, checked: unknown statuses fall back to published."""

    q: str = ""
    os: str = ""
    tag: str = ""
    status: str = "published"

    @classmethod
    def from_query(cls, query: Mapping[str, str], *, drafts: bool) -> SearchForm:
        status = query.get("status", "published")
        if not drafts or status not in SEARCH_STATUSES:
            status = "published"
        return cls(
            # Controls and bidi marks go: the box shows the text back, and no word has them.
            q=inline_text(query.get("q", ""), SEARCH_TEXT_MAX),
            os=inline_text(query.get("os", ""), OS_FILTER_MAX).strip(),
            tag=inline_text(query.get("tag", ""), TAG_FILTER_MAX).strip().lower(),
            status=status,
        )

    @property
    def searching(self) -> bool:
        return bool(self.q.strip())

    def api_query(self) -> dict[str, str]:
        """The query of ``GET /kb/search``."""
        out = {"q": self.q, "limit": str(SEARCH_RESULTS)}
        if self.os:
            out["os"] = self.os
        if self.tag:
            out["tag"] = self.tag
        if self.status != "published":
            out["status"] = self.status
        return out


@dataclass(frozen=True)
class CommandRow:
    """A command line of the form, as typed (exit status as text, '' when unknown)."""

    command: str
    exit_status: str = ""
    session: str = ""


def _text(value: str, cap: int) -> str:
    # Browsers send textarea line breaks as CRLF; the API stores LF.
    return value[:cap].replace("\r\n", "\n").replace("\r", "\n")


def split_tags(text: str) -> list[str]:
    """Tags as typed, separated by commas, semicolons or spaces ("cups, printing")."""
    return [t.lower() for t in _TAG_SPLIT.split(text) if t]


def split_os(text: str) -> list[str]:
    """OS names separated by commas, semicolons or lines ("Debian 12, Windows 11")."""
    return [name.strip() for name in _OS_SPLIT.split(text) if name.strip()]


def exit_status(text: str) -> int | None:
    """The exit status typed into the form: '' is unknown; anything else must be a number."""
    text = text.strip()
    if not text:
        return None
    if not EXIT_STATUS.fullmatch(text):
        raise InputError(
            f"exit status {text[:8]!r} is not a number; leave it empty when it is not known",
            code="article_invalid",
            status=422,
        )
    return int(text)


@dataclass(frozen=True)
class ArticleForm:
    """The edit form's content, as typed."""

    title: str = ""
    problem: str = ""
    environment: str = ""
    cause: str = ""
    solution: str = ""
    commands: tuple[CommandRow, ...] = ()
    tags: str = ""
    os: str = ""
    language: str = ""  # de | en; "" lets the KB guess it from the text
    base_version: int | None = None
    note: str = ""

    @classmethod
    def from_article(cls, article: Mapping[str, Json]) -> ArticleForm:
        """The form for an article as the API returned it."""
        rows = []
        for c in json_list(article.get("commands")):
            status = c.get("exit_status")
            rows.append(
                CommandRow(
                    str(c.get("command") or ""),
                    "" if status is None else str(status),
                    str(c.get("session") or ""),
                )
            )
        version = article.get("version")
        return cls(
            title=str(article.get("title") or ""),
            problem=str(article.get("problem") or ""),
            environment=str(article.get("environment") or ""),
            cause=str(article.get("cause") or ""),
            solution=str(article.get("solution") or ""),
            commands=tuple(rows),
            tags=", ".join(str(t) for t in _strings(article.get("tags"))),
            os=", ".join(str(o) for o in _strings(article.get("os"))),
            language=_language(article.get("language")),
            base_version=version if isinstance(version, int) else None,
        )

    @classmethod
    def from_fields(cls, form: MultiDictProxy[str]) -> ArticleForm:
        """The form as posted. Never raises: what cannot be read stays text for the page.

        Command rows come as parallel lists (``cmd_command``, ``cmd_exit``, ``cmd_session``);
        ``cmd_keep`` lists the indexes of the rows still ticked; ``cmd_new`` adds one command
        per line."""
        commands = form.getall("cmd_command", [])[:COMMANDS_MAX]
        exits = form.getall("cmd_exit", [])
        sessions = form.getall("cmd_session", [])
        keep = set(form.getall("cmd_keep", []))
        rows = [
            CommandRow(
                _text(command, COMMAND_CAP).strip(),
                exits[i][:8] if i < len(exits) else "",
                sessions[i][:SESSION_CAP] if i < len(sessions) else "",
            )
            for i, command in enumerate(commands)
            if str(i) in keep and command.strip()
        ]
        added = _text(form.get("cmd_new", ""), FIELD_CAPS["commands_new"])
        rows += [CommandRow(line.strip()[:COMMAND_CAP]) for line in added.split("\n")]
        base = form.get("base_version", "")

        def get(name: str) -> str:
            return _text(form.get(name, ""), FIELD_CAPS[name])

        return cls(
            title=get("title"),
            problem=get("problem"),
            environment=get("environment"),
            cause=get("cause"),
            solution=get("solution"),
            commands=tuple(r for r in rows if r.command)[:COMMANDS_MAX],
            tags=get("tags"),
            os=get("os"),
            language=_language(form.get("language", "")),
            base_version=int(base) if VERSION.fullmatch(base) else None,
            note=get("note"),
        )

    def body(self) -> dict[str, object]:
        """Every field as the KB API takes it (``POST /kb/articles``)."""
        return {
            "title": self.title,
            "problem": self.problem,
            "environment": self.environment,
            "cause": self.cause,
            "solution": self.solution,
            "commands": [
                {
                    "command": c.command,
                    "exit_status": exit_status(c.exit_status),
                    "session": c.session or None,
                }
                for c in self.commands
            ],
            "tags": split_tags(self.tags),
            "os": split_os(self.os),
            "language": self.language or None,  # None: guessed (new) or kept (edit)
        }

    def rebase(
        self, base: Mapping[str, Json], current: Mapping[str, Json]
    ) -> tuple[ArticleForm, list[str]]:
        """After a lost race: the form on top of ``current`` (the newer version), from
        ``base`` (the version this form was opened at). Fields the author left alone take
        the newer version's value, fields the author changed keep the author's text; the
        second value lists the fields both changed, differently, for the author to merge."""
        mine, before = self.body(), ArticleForm.from_article(base).body()
        newer = ArticleForm.from_article(current)
        theirs = newer.body()
        source: dict[str, ArticleForm] = {}
        both: list[str] = []
        for name in ARTICLE_FIELDS:
            changed = _comparable(mine[name]) != _comparable(before[name])
            source[name] = self if changed else newer
            they_changed = _comparable(theirs[name]) != _comparable(before[name])
            if changed and they_changed and _comparable(mine[name]) != _comparable(theirs[name]):
                both.append(name)
        merged = ArticleForm(
            title=source["title"].title,
            problem=source["problem"].problem,
            environment=source["environment"].environment,
            cause=source["cause"].cause,
            solution=source["solution"].solution,
            commands=source["commands"].commands,
            tags=source["tags"].tags,
            os=source["os"].os,
            language=source["language"].language,
            base_version=newer.base_version,
            note=self.note,
        )
        return merged, both

    def changes(self, current: Mapping[str, Json]) -> dict[str, object]:
        """The fields that differ from ``current`` (the article as the API returned it):
        the body of ``PATCH /kb/articles/{id}``, without ``base_version`` and ``note``."""
        out: dict[str, object] = {}
        for name, value in self.body().items():
            if value is not None and _comparable(value) != _comparable(current.get(name)):
                out[name] = value
        return out


def _language(value: object) -> str:
    return value if isinstance(value, str) and value in ARTICLE_LANGUAGES else ""


def _strings(value: Json) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _comparable(value: object) -> object:
    """A field value as the API stores it, for telling whether a save changes it: text
    trimmed, commands reduced to what the form edits."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items() if k in ("command", "exit_status")}
    return value


def version_diff_lines(diff: Json) -> list[tuple[str, list[tuple[str, str]]]]:
    """A ``/diff`` answer as (field, [(kind, line)]), kind one of add, del, hunk, same."""
    out: list[tuple[str, list[tuple[str, str]]]] = []
    for field in json_list(json_dict(diff).get("fields")):
        lines: list[tuple[str, str]] = []
        for line in _strings(field.get("lines")):
            kind = (
                "hunk"
                if line.startswith("@@")
                else "add"
                if line.startswith("+")
                else "del"
                if line.startswith("-")
                else "same"
            )
            lines.append((kind, line))
        out.append((str(field.get("field") or ""), lines))
    return out


def os_and_tags(articles: Sequence[Mapping[str, Json]]) -> tuple[list[str], list[str]]:
    """The OS names and tags of ``articles``, each once, sorted: the search filters' choices."""
    oses = {o for a in articles for o in _strings(a.get("os"))}
    tags = {t for a in articles for t in _strings(a.get("tags"))}
    return sorted(oses, key=str.casefold), sorted(tags)
