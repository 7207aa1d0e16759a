"""Article content checks, the status table and article ids (pure)."""

from __future__ import annotations

import pytest

from broker.kb.article import (
    STATUSES,
    TRANSITIONS,
    ArticleContent,
    CommandEntry,
    StatusAction,
    check_content,
    format_article_id,
    os_terms,
    parse_article_id,
    parse_tag,
    publish_gaps,
    secrets_left,
    transition,
)
from broker.kb.errors import ArticleInvalid, StatusRefused

SESSION = "s-" + "A" * 22


def test_content_is_cleaned() -> None:
    """Controls and bidi tricks go, CRLF becomes LF, tags fold and repeat once."""
    c = check_content(
        ArticleContent(
            title="  Drucker\u202e \x07hängt\n ",
            problem="line1\r\nline2\x00\u200b",
            tags=("CUPS", "cups", "printing"),
            os=("Debian 12", "Debian 12", "Windows\u200b 11"),
            commands=(CommandEntry(" lpstat -p\x1b ", 0, SESSION),),
        )
    )
    assert c.title == "Drucker hängt"
    assert c.problem == "line1\nline2"
    assert c.tags == ("cups", "printing")
    assert c.os == ("Debian 12", "Windows 11")
    assert c.commands == (CommandEntry("lpstat -p", 0, SESSION),)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (ArticleContent(title=" \x00 "), "title is empty"),
        (ArticleContent(title="x" * 201), "title is longer"),
        (ArticleContent(title="x", cause="c" * 20_001), "cause is 20001"),
        (ArticleContent(title="x", environment="e" * 4_001), "environment is"),
        (ArticleContent(title="x", tags=("a b",)), "invalid tag"),
        (ArticleContent(title="x", tags=tuple(f"t{i}" for i in range(21))), "at most 20 tags"),
        (ArticleContent(title="x", os=("",)), "OS name"),
        (ArticleContent(title="x", os=("o" * 101,)), "OS name"),
        (ArticleContent(title="x", os=tuple(f"os{i}" for i in range(11))), "at most 10"),
        (ArticleContent(title="x", commands=(CommandEntry(" ", 0),)), "command is empty"),
        (ArticleContent(title="x", commands=(CommandEntry("c" * 2001, 0),)), "longer than"),
        (ArticleContent(title="x", commands=(CommandEntry("ls", 256),)), "exit status"),
        (ArticleContent(title="x", commands=(CommandEntry("ls", True),)), "exit status"),
        (ArticleContent(title="x", commands=(CommandEntry("ls", 0, "s-1"),)), "session id"),
        (ArticleContent(title="x", commands=(CommandEntry("ls", 0),) * 201), "at most 200"),
    ],
)
def test_content_refusals(content: ArticleContent, message: str) -> None:
    """Each limit and syntax rule is refused with a sentence naming it."""
    with pytest.raises(ArticleInvalid, match=message):
        check_content(content)


def test_exit_status_none_and_minus_one_pass() -> None:
    """A command that never ended (None) or was killed (-1) is kept as such."""
    c = check_content(
        ArticleContent(title="x", commands=(CommandEntry("a", None), CommandEntry("b", -1)))
    )
    assert [cmd.exit_status for cmd in c.commands] == [None, -1]


def test_parse_tag() -> None:
    """Tags are lower-cased; leading punctuation is refused."""
    assert parse_tag(" Wi-Fi ") == "wi-fi"
    with pytest.raises(ArticleInvalid):
        parse_tag("-x")


def test_round_trip_and_junk() -> None:
    """Content survives as_dict/from_dict; junk in a stored dict reads as empty values."""
    c = ArticleContent(
        title="t", commands=(CommandEntry("ls", 0, SESSION),), tags=("a",), os=("Debian",)
    )
    assert ArticleContent.from_dict(c.as_dict()) == c
    junk = ArticleContent.from_dict(
        {"title": "t", "commands": [1, {"command": "x", "exit_status": "0"}], "tags": "a"}
    )
    assert junk.commands == (CommandEntry("x", None, None),)
    assert junk.tags == ()
    assert ArticleContent.from_dict({"title": "t", "commands": "x"}).commands == ()


def test_search_texts() -> None:
    """The index reads title, problem, cause with solution, commands and tags."""
    c = ArticleContent(
        title="t",
        problem="p",
        cause="c",
        solution="s",
        commands=(CommandEntry("a", 0), CommandEntry("b", 0)),
        tags=("x", "y"),
    )
    assert c.search_texts() == ("t", "p", "c\ns", "a\nb", "x y")


def test_publish_gaps() -> None:
    """A draft needs a problem and a solution before it is published."""
    assert publish_gaps(ArticleContent(title="t")) == ["problem", "solution"]
    assert publish_gaps(ArticleContent(title="t", problem="p", solution="s")) == []


def test_every_transition() -> None:
    """Each row of the status table leads where it says; everything else is refused."""
    for (status, action), target in TRANSITIONS.items():
        assert transition(status, action, article=1) == target
    actions: tuple[StatusAction, ...] = ("publish", "retire", "reopen")
    refused = [(s, a) for s in STATUSES for a in actions if (s, a) not in TRANSITIONS]
    assert refused
    for status, action in refused:
        with pytest.raises(StatusRefused, match=f"KB-1 is {status}"):
            transition(status, action, article=1)


@pytest.mark.parametrize(("text", "number"), [("KB-12", 12), ("12", 12), (" 7 ", 7)])
def test_parse_article_id(text: str, number: int) -> None:
    """KB-12 and 12 name the same article."""
    assert parse_article_id(text) == number
    assert format_article_id(number) == f"KB-{number}"


@pytest.mark.parametrize("text", ["", "KB-0", "kb-1", "1; drop", "1" * 10, "x" * 30, "KB--1"])
def test_parse_article_id_refusals(text: str) -> None:
    """Anything else is not an article id."""
    with pytest.raises(ArticleInvalid):
        parse_article_id(text)


def test_os_terms() -> None:
    """OS names become padded folded words for the filter."""
    assert os_terms(["Debian GNU/Linux 12", "Windows 11"]) == " debian gnu linux 12 windows 11 "
    assert os_terms([]) == ""


def test_secrets_left_names_field_and_line_never_the_secret() -> None:
    content = ArticleContent(
        title="t",
        problem="p",
        solution="Run:\nmysql -u app -pHunter2 shop",
        commands=(CommandEntry("ls", 0), CommandEntry("curl -u a:Hunter2 https://x", 0)),
    )
    places = secrets_left(content)
    assert places == [
        "the solution, line 2 (password option)",
        "the commands, command 2 (password option)",
    ]
    assert secrets_left(ArticleContent(title="t", solution="mysql -u app -p shop")) == []
