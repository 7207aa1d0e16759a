"""The knowledge-base pages' pure decisions: buttons per role and status, the edit form read
as posted and turned into API bodies, the changed fields of a save, the merge after a lost
race, the search form, diffs, and the filters' choices."""

from __future__ import annotations

from typing import Any

import pytest
from multidict import MultiDict, MultiDictProxy

from broker.console.api_calls import Json
from broker.console.kb_view import (
    ArticleActions,
    ArticleForm,
    CommandRow,
    SearchForm,
    article_actions,
    edit_refused,
    exit_status,
    may_see_drafts,
    may_write_drafts,
    os_and_tags,
    split_os,
    split_tags,
    version_diff_lines,
)
from broker.console.render import inline_text
from broker.console.session_store import ConsoleUser
from broker.errors import InputError
from broker.rules.views import Refused, Role


def person(role: Role, name: str = "lena") -> ConsoleUser:
    return ConsoleUser("s", 1, name, "", role, None, "csrf", None)


def code(refused: Refused | None) -> str | None:
    return refused.code if refused is not None else None


def article(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": 7,
        "version": 3,
        "status": "draft",
        "author": "lena",
        "title": "Printer stuck",
        "problem": "Jobs hang.",
        "environment": "Debian 12",
        "cause": "",
        "solution": "Restart CUPS.",
        "commands": [
            {"command": "lpstat -p", "exit_status": 0, "session": "s-abc"},
            {"command": "top", "exit_status": None, "session": None},
        ],
        "tags": ["cups", "printing"],
        "os": ["Debian 12"],
    }
    return {**base, **changes}


def posted(*pairs: tuple[str, str]) -> MultiDictProxy[str]:
    return MultiDictProxy(MultiDict(pairs))


@pytest.mark.parametrize(
    ("role", "status", "author", "expected"),
    [
        ("level1", "draft", "lena", ArticleActions(True, False, False, False)),
        ("level1", "draft", "max", ArticleActions(False, False, False, False)),
        ("level1", "published", "max", ArticleActions(False, False, False, False)),
        ("level2", "draft", "lena", ArticleActions(True, True, True, False)),
        ("level3", "published", "lena", ArticleActions(True, False, True, False)),
        ("level2", "retired", "lena", ArticleActions(False, False, False, True)),
        ("admin", "published", "lena", ArticleActions(False, False, False, False)),
    ],
)
def test_buttons_follow_the_kb_rules(
    role: Role, status: str, author: str, expected: ArticleActions
) -> None:
    """Level 1 edits its own drafts only and never publishes; level 2 and 3 do all that the
    status allows; admins read only."""
    assert article_actions(person(role), status, author) == expected


def test_why_editing_is_refused() -> None:
    """The refusal names the rule: invisible draft, published for level 1, admin, retired."""
    assert code(edit_refused(person("level1"), "draft", "max")) == "not_visible"
    assert (
        code(edit_refused(person("level1"), "published", "max"))
        == "level_too_low_to_edit_published"
    )
    assert code(edit_refused(person("admin"), "draft", "max")) == "admin_not_author"
    assert code(edit_refused(person("level2"), "retired", "max")) == "status_refused"
    assert edit_refused(person("level2"), "published", "max") is None


def test_who_writes_drafts_and_sees_them() -> None:
    """Staff write drafts, admins do not; drafts are listed for level 2 and up."""
    assert may_write_drafts(person("level1")) is None
    assert code(may_write_drafts(person("admin"))) == "admin_not_author"
    assert not may_see_drafts(person("level1"))
    assert may_see_drafts(person("level2"))


def test_tags_and_os_names_split_as_typed() -> None:
    """Tags split on commas, semicolons and spaces and go lower-case; OS names on commas,
    semicolons and lines, keeping their inner spaces."""
    assert split_tags(" CUPS, printing;;queue  ") == ["cups", "printing", "queue"]
    assert split_tags("") == []
    assert split_os("Debian 12, Windows 11;\nmacOS 14 ,") == ["Debian 12", "Windows 11", "macOS 14"]
    assert split_os(" , ") == []


def test_exit_status_is_a_number_or_unknown() -> None:
    """Empty is unknown, -1 to 999 are numbers for the API to check, anything else refused."""
    assert exit_status(" ") is None
    assert exit_status("0") == 0
    assert exit_status("-1") == -1
    with pytest.raises(InputError) as refused:
        exit_status("ok")
    assert refused.value.http_status == 422


def test_form_from_article_round_trips() -> None:
    """An article's form turned back into a body changes nothing."""
    form = ArticleForm.from_article(article())
    assert form.base_version == 3
    assert form.tags == "cups, printing"
    assert form.commands == (CommandRow("lpstat -p", "0", "s-abc"), CommandRow("top", "", ""))
    assert form.changes(article()) == {}
    assert ArticleForm.from_article({"version": "x"}).base_version is None


def test_form_as_posted() -> None:
    """Unticked rows go, new lines come, CRLF becomes LF, a bad base version is dropped."""
    form = ArticleForm.from_fields(
        posted(
            ("title", "Printer stuck"),
            ("problem", "Jobs hang.\r\nAll of them."),
            ("cmd_command", "lpstat -p"),
            ("cmd_exit", "0"),
            ("cmd_session", "s-abc"),
            ("cmd_keep", "0"),
            ("cmd_command", "top"),
            ("cmd_exit", ""),
            ("cmd_session", ""),
            ("cmd_command", "  "),
            ("cmd_keep", "2"),
            ("cmd_new", "systemctl restart cups\r\n\r\n journalctl -u cups \n"),
            ("base_version", "3x"),
            ("note", "n" * 600),
        )
    )
    assert form.problem == "Jobs hang.\nAll of them."
    assert [c.command for c in form.commands] == [
        "lpstat -p",
        "systemctl restart cups",
        "journalctl -u cups",
    ]
    assert form.base_version is None
    assert len(form.note) == 500
    assert ArticleForm.from_fields(posted(("base_version", "12"))).base_version == 12


def test_posted_rows_without_their_companions() -> None:
    """A row whose exit status or session field is missing reads them as empty."""
    form = ArticleForm.from_fields(posted(("cmd_command", "uptime"), ("cmd_keep", "0")))
    assert form.commands == (CommandRow("uptime", "", ""),)


def test_body_and_changed_fields() -> None:
    """The body carries every field typed; a save sends only what differs, ignoring
    surrounding space and line-ending noise."""
    form = ArticleForm.from_article(article())
    body = form.body()
    assert body["commands"] == [
        {"command": "lpstat -p", "exit_status": 0, "session": "s-abc"},
        {"command": "top", "exit_status": None, "session": None},
    ]
    assert body["os"] == ["Debian 12"]
    edited = ArticleForm(**{**form.__dict__, "solution": "Restart CUPS.\n", "tags": "cups"})
    assert edited.changes(article()) == {"tags": ["cups"]}
    bad = ArticleForm(**{**form.__dict__, "commands": (CommandRow("top", "x"),)})
    with pytest.raises(InputError):
        bad.changes(article())


def test_rebase_after_a_lost_race() -> None:
    """Fields only the author changed keep the author's text, fields only the other save
    changed take theirs, and fields both changed differently are named."""
    base = article()
    theirs = article(version=4, cause="Broken filter.", solution="Reinstall.", title="T2")
    mine = ArticleForm(
        **{
            **ArticleForm.from_article(base).__dict__,
            "solution": "Restart CUPS twice.",
            "problem": "Jobs hang at 99%.",
            "title": "T2",
            "note": "why",
        }
    )
    merged, both = mine.rebase(base, theirs)
    assert merged.cause == "Broken filter."
    assert merged.problem == "Jobs hang at 99%."
    assert merged.solution == "Restart CUPS twice."
    assert merged.title == "T2"
    assert merged.base_version == 4
    assert merged.note == "why"
    assert both == ["solution"]
    assert merged.changes(theirs) == {
        "problem": "Jobs hang at 99%.",
        "solution": "Restart CUPS twice.",
    }


def test_search_form_from_the_query_string() -> None:
    """Statuses other than published need the right to see drafts; text is capped and
    cleaned of controls; the API query carries only what is set."""
    query = {
        "q": "drucker\u202e\x00 " + "x" * 3000,
        "os": " Debian ",
        "tag": "CUPS",
        "status": "any",
    }
    level1 = SearchForm.from_query(query, drafts=False)
    assert level1.status == "published"
    assert level1.q.startswith("drucker x")
    assert len(level1.q) == 2000
    assert level1.os == "Debian"
    assert level1.tag == "cups"
    assert level1.searching
    assert level1.api_query() == {"q": level1.q, "limit": "20", "os": "Debian", "tag": "cups"}
    level2 = SearchForm.from_query(query, drafts=True)
    assert level2.api_query()["status"] == "any"
    assert SearchForm.from_query({"status": "bogus"}, drafts=True).status == "published"
    empty = SearchForm.from_query({"q": "   "}, drafts=True)
    assert not empty.searching
    assert empty.api_query() == {"q": "   ", "limit": "20"}


def test_diff_lines_are_classified() -> None:
    """Hunk headers, additions, removals and context are told apart; junk is skipped."""
    diff: Json = {
        "fields": [
            {"field": "solution", "lines": ["@@ -1 +1 @@", "-old", "+new", " same"]},
            "junk",
        ]
    }
    assert version_diff_lines(diff) == [
        ("solution", [("hunk", "@@ -1 +1 @@"), ("del", "-old"), ("add", "+new"), ("same", " same")])
    ]
    assert version_diff_lines(None) == []


def test_filter_choices_from_articles() -> None:
    """OS names and tags are offered once each, sorted."""
    oses, tags = os_and_tags(
        [article(), article(os=["windows 11", "Debian 12"], tags=["vpn"]), {"os": None}]
    )
    assert oses == ["Debian 12", "windows 11"]
    assert tags == ["cups", "printing", "vpn"]


def test_inline_text_keeps_spaces_and_drops_controls() -> None:
    """A highlight piece keeps its spaces; controls and bidi marks go; it is capped."""
    assert inline_text(" Der \u202eDrucker\x1b ") == " Der Drucker "
    assert inline_text(None) == ""
    assert inline_text("abcdef", 3) == "abc"
