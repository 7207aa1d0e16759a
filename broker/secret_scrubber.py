"""One secret scrubber for everything derived from a transcript or shown to every customer
(pure: no I/O, no clock).

Command lines and terminal output carry secrets in a few well-known shapes: password options
(``mysql -pX``, ``--password=X``, ``sshpass -p X``, ``redis-cli -a X``, ``curl -u user:X``,
``smbclient -U user%X``), assignments (``PGPASSWORD=X``, ``api_key: X``), ``user:X@`` in URLs,
``Authorization`` and bearer headers, private-key blocks, and the token shapes of common
services (AWS access key ids, GitHub, GitLab, Slack, Stripe, npm, PyPI, OpenAI and Google API
keys, JWTs). Each finding is replaced by :data:`REDACTED`, visibly, keeping what
surrounds it so the line still says what was done (``mysql -u root -p\u2039redacted\u203a db``).

Why our own patterns and not a detector library: detect-secrets (Yelp, the maintained one on
PyPI) scans source files and reports values, not positions; on command lines it found 6 of
15 test secrets (none of ``-pX``, ``--password=X``, ``PGPASSWORD=X``, ``curl -u``,
``sshpass -p``, a Basic ``Authorization`` header or an AWS secret key), and two of its
values (a GitHub token reported as ``ghp``, a JWT without its signature) would have left
most of the secret in place. docs/security.md has the comparison.

:func:`scrub_secrets` cleans a whole text; :class:`LineScrubber` cleans a stream of lines
(a private-key block spans lines); :func:`find_secrets` says what it would replace and on
which line, for refusing to publish an article that still holds one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

# Angle quotes (U+2039, U+203A), which no shell syntax or secret shape uses.
REDACTED: Final = "\u2039redacted\u203a"

# A value on a command line: a quoted string or a run of characters up to a space or a shell
# separator. A value that is only a variable reference ($DB_PASS) holds no secret and stays.
_VALUE: Final = r"""(?:'[^'\n]*'|"[^"\n]*"|[^\s'";&|<>]+)"""
# Names of options and variables that hold a secret: *password*, *passwd*, *passphrase*,
# *secret*, *token*, *api key*, *access key*, *private key*, MYSQL_PWD-style *pwd*.
# A bare "pass" or "pwd" counts only after a separator (DB_PASS, MYSQL_PWD), not in
# "bypass", nor in the shell's PWD and OLDPWD, which hold directories.
_KEYWORDS: Final = (
    r"(?:pass(?:word|wd|phrase)|(?<![a-z])pass|(?<=[_.-])pwd|secret|token|api[-_]?key|apikey"
    r"|access[-_]?key|private[-_]?key|auth[-_]?key|credentials?)"
)
# Not a secret: a value that only refers to a variable ($DB_PASS, ${TOKEN}).
_NOT_VARIABLE: Final = r"(?!\$\{?\w+\}?(?:[\s'\";&|,]|$))"


# Literals (lower case) every secret name holds: the cheap test before the keyword rules.
_KEYWORD_LITERALS: Final = ("pass", "pwd", "secret", "token", "key", "credential")


@dataclass(frozen=True)
class _Rule:
    """A pattern, and the literals it cannot match without: one of each group of ``needs``
    must be in the lower-cased line, or the pattern is not tried (most lines hold none)."""

    kind: str
    needs: tuple[tuple[str, ...], ...]
    pattern: re.Pattern[str]


def _rule(
    kind: str, needs: tuple[str, ...], pattern: str, flags: int = 0, *, also: tuple[str, ...] = ()
) -> _Rule:
    return _Rule(kind, (needs, also) if also else (needs,), re.compile(pattern, flags))


# Each pattern's group "s" is what gets replaced. Order matters only for readability: every
# rule runs on the result of the ones before, and REDACTED matches none of them.
_RULES: Final = (
    # Private-key material on one line (a key pasted into an echo, say): BEGIN to END.
    _rule(
        "private key",
        ("private key",),
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?P<s>.+?)"
        r"(?=-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|$)",
    ),
    # MySQL and MariaDB clients take the password glued to -p (-p alone prompts for it).
    _rule(
        "password option",
        ("mysql", "mariadb"),
        r"\b(?:mysql\w*|mariadb[\w-]*)\b[^\n|;&]*?\s-p(?P<s>" + _NOT_VARIABLE + _VALUE + r")",
    ),
    # sshpass -p X, redis-cli -a X, docker login -p X: a short option holding the password.
    _rule("password option", ("sshpass",), r"\bsshpass\s+(?:-\w+\s+)*?-p\s*(?P<s>" + _VALUE + r")"),
    _rule(
        "password option", ("redis-cli",), r"\bredis-cli\b[^\n|;&]*?\s-a\s*(?P<s>" + _VALUE + r")"
    ),
    _rule(
        "password option",
        ("login",),
        r"\b(?:docker|podman)\s+login\b[^\n|;&]*?\s-p\s*(?P<s>" + _VALUE + r")",
    ),
    # curl -u user:X, curl --user user:X; smbclient -U user%X (docker -u 1000:1000 is no
    # secret, hence the command names).
    _rule(
        "password option",
        ("curl",),
        r"\bcurl\b[^\n|;&]*?(?:\s-u\s*|\s--user[=\s]\s*)['\"]?[^\s:'\"]+:(?P<s>[^\s'\"]+)",
    ),
    _rule(
        "password option",
        ("smb", "rpcclient"),
        r"\b(?:smbclient|rpcclient|smbget|smbcacls)\b[^\n|;&]*?\s(?:-U\s*|--user=)['\"]?"
        r"[^\s%'\"]+%(?P<s>[^\s'\"]+)",
        also=("%",),
    ),
    # aws configure set aws_secret_access_key X (the value is the next word).
    _rule(
        "password option",
        ("configure",),
        r"\baws\s+configure\s+set\s+\S*(?:secret_access_key|session_token)\s+(?P<s>"
        + _VALUE
        + r")",
    ),
    # --password=X, --db-password X, --api-key X, --token=X (not --password-file, --no-...).
    _rule(
        "password option",
        _KEYWORD_LITERALS,
        r"(?<![\w-])--(?!no-)(?:\w+[-_])*"
        + _KEYWORDS
        + r"(?:=|\s+)(?!-)(?P<s>"
        + _NOT_VARIABLE
        + _VALUE
        + r")",
        re.IGNORECASE,
        also=("--",),
    ),
    # Authorization headers: the credentials after the scheme; bearer tokens anywhere.
    _rule(
        "authorization header",
        ("authorization",),
        r"\b(?:proxy-)?authorization\s*:\s*(?:(?:bearer|basic|token|digest|negotiate|apikey)"
        r"\s+)?(?P<s>[^\s'\"]+(?:[ \t]+[^\s'\"]+)*)",
        re.IGNORECASE,
    ),
    _rule("bearer token", ("bearer",), r"\bbearer\s+(?P<s>[A-Za-z0-9._~+/=-]{8,})", re.IGNORECASE),
    # PGPASSWORD=X, MYSQL_PWD=X, db_password = "X", "api_key": "X", secret: X. "=" takes
    # a value right after it or spaces on both sides ("X= cmd" sets nothing); "passwd:" is
    # left alone, it starts passwd's own messages ("passwd: password updated").
    _rule(
        "assignment",
        _KEYWORD_LITERALS,
        r"(?<![\w-])[\"']?(?!passwd\b)[\w.-]*" + _KEYWORDS + r"[\"']?"
        r"(?:=(?!\s)|\s+=\s*|:\s*(?=\S))(?P<s>"
        + _NOT_VARIABLE
        + r"""(?:'[^'\n]+'|"[^"\n]+"|[^\s'";&|,<>)]+))""",
        re.IGNORECASE,
    ),
    # user:X@ in URLs (scheme://user:password@host).
    _rule(
        "password in URL",
        ("://",),
        r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@'\"]+:(?P<s>[^/\s@'\"]+)@",
        also=("@",),
    ),
    # Token shapes (published formats of each service).
    _rule(
        "AWS access key id",
        ("akia", "asia", "abia", "acca", "a3t"),
        r"\b(?P<s>(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16})\b",
    ),
    _rule(
        "GitHub token",
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
        r"\b(?P<s>(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255}))",
    ),
    _rule("GitLab token", ("glpat-",), r"\b(?P<s>glpat-[A-Za-z0-9_-]{20,})"),
    _rule("Slack token", ("xox",), r"\b(?P<s>xox[abposr]-[A-Za-z0-9-]{10,})"),
    _rule(
        "Slack webhook",
        ("hooks.slack.com",),
        r"hooks\.slack\.com/services/(?P<s>T[A-Za-z0-9_]+/B[A-Za-z0-9_]+/\w+)",
    ),
    _rule(
        "Stripe key",
        ("sk_live_", "sk_test_", "rk_live_", "rk_test_"),
        r"\b(?P<s>[rs]k_(?:live|test)_[A-Za-z0-9]{16,})",
    ),
    _rule("npm token", ("npm_",), r"\b(?P<s>npm_[A-Za-z0-9]{36})\b"),
    _rule("PyPI token", ("pypi-",), r"\b(?P<s>pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,})"),
    _rule("OpenAI key", ("sk-",), r"(?<![\w-])(?P<s>sk-(?:proj-|svcacct-)?[A-Za-z0-9_-]{32,})"),
    _rule("Google API key", ("aiza",), r"\b(?P<s>AIza[0-9A-Za-z_-]{35})"),
    _rule(
        "JSON web token",
        ("eyj",),
        r"\b(?P<s>eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*)",
    ),
)

# No rule matches a text without one of these: a block of output without any is passed on
# after a few substring searches (no regular expression, no Python step per line), which keeps
# a million-line output (`yes`) as cheap to render as before the scrubber.
_FIRST_NEEDS: Final = {word for rule in _RULES for word in rule.needs[0]}
# A word that holds another ("sshpass" holds "pass") adds nothing to the search.
_TRIGGERS: Final = tuple(
    sorted(w for w in _FIRST_NEEDS if not any(o != w and o in w for o in _FIRST_NEEDS))
)
# The rules each first-group word can set off, in rule order.
_RULES_BY_WORD: Final = {
    word: tuple(i for i, rule in enumerate(_RULES) if word in rule.needs[0])
    for word in _FIRST_NEEDS
}


def _may_hold_secret(text: str) -> bool:
    low = text.lower()
    return any(word in low for word in _TRIGGERS)


# A multi-line private key: the BEGIN line, body lines (base64, PEM headers such as
# "Proc-Type:", possibly behind a heredoc's "> " prompt), the END line. A line that looks
# like neither ends the block, so a grep for "BEGIN RSA PRIVATE KEY" hides nothing after it.
_KEY_BEGIN: Final = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----")
_KEY_END: Final = re.compile(r"-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----")
_KEY_BODY: Final = re.compile(r"\s*(?:>\s*)?(?:[A-Za-z0-9+/=]*|[A-Za-z-]+:.*)\s*")
_KEY_MAX_LINES: Final = 200


@dataclass(frozen=True)
class Finding:
    """A secret found: its kind and its line (1-based) in the text scrubbed."""

    kind: str
    line: int


def _scrub_line(line: str, found: list[str]) -> str:
    low = line.lower()
    if not any(word in low for word in _TRIGGERS):
        return line
    picked = {i for word in _FIRST_NEEDS if word in low for i in _RULES_BY_WORD[word]}
    rules = [
        _RULES[i]
        for i in sorted(picked)
        if all(any(w in low for w in group) for group in _RULES[i].needs[1:])
    ]
    return _apply_rules(line, found, rules) if rules else line


def _apply_rules(line: str, found: list[str], rules: Sequence[_Rule] = _RULES) -> str:
    for rule in rules:

        def replace(m: re.Match[str], kind: str = rule.kind) -> str:
            if m.group("s") in ("", REDACTED):
                return m.group()
            found.append(kind)
            start, end = m.span("s")
            base = m.start()
            whole = m.group()
            return whole[: start - base] + REDACTED + whole[end - base :]

        line = rule.pattern.sub(replace, line)
    return line


class LineScrubber:
    """Scrub lines in order; a private-key block's body is replaced by one :data:`REDACTED`.

    :meth:`line` returns the cleaned line, or None for a further body line of a key block
    (dropped: the block shows as its BEGIN line, one :data:`REDACTED` and its END line).
    """

    def __init__(self) -> None:
        self._in_key = 0  # body lines seen in an open private-key block, 0 when none is open
        self.findings: list[Finding] = []
        self._number = 0

    def line(self, text: str) -> str | None:
        self._number += 1
        if self._in_key:
            end = _KEY_END.search(text)
            if end is not None:
                self._in_key = 0
                return text[end.start() :] if end.start() else text
            if _KEY_BODY.fullmatch(text) and self._in_key <= _KEY_MAX_LINES:
                self._in_key += 1
                if self._in_key == 2:
                    self.findings.append(Finding("private key", self._number))
                    return REDACTED
                return None
            self._in_key = 0
        found: list[str] = []
        cleaned = _scrub_line(text, found)
        self.findings.extend(Finding(kind, self._number) for kind in found)
        begin = _KEY_BEGIN.search(cleaned)
        if (
            begin is not None
            and _KEY_END.search(cleaned, begin.end()) is None
            and cleaned[begin.end() :].strip() in ("", REDACTED)
        ):
            self._in_key = 1
        return cleaned

    def lines(self, lines: Sequence[str]) -> Iterable[str]:
        """Every cleaned line of ``lines``, key-block body lines after the first left out."""
        if not self._in_key and not _may_hold_secret("\n".join(lines)):
            self._number += len(lines)
            return lines  # one search for a whole block of plain output
        return list(self._each(lines))

    def _each(self, lines: Iterable[str]) -> Iterator[str]:
        for text in lines:
            cleaned = self.line(text)
            if cleaned is not None:
                yield cleaned


def scrub_secrets(text: str) -> str:
    """``text`` with every secret found replaced by :data:`REDACTED` (line ends kept)."""
    if not text:
        return text
    scrubber = LineScrubber()
    out: list[str] = []
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        cleaned = scrubber.line(body)
        if cleaned is not None:
            out.append(cleaned + line[len(body) :])
    return "".join(out)


def find_secrets(text: str) -> list[Finding]:
    """What :func:`scrub_secrets` would replace in ``text``, with line numbers, in order."""
    scrubber = LineScrubber()
    for line in text.splitlines():
        scrubber.line(line)
    return scrubber.findings
