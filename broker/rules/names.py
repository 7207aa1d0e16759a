"""Strict syntax of every name and id that reaches the broker from outside.

Each ``parse_*`` function returns its input unchanged (or its parsed value) when it matches,
and otherwise raises :class:`InvalidName` with a sentence that says what is wrong and what is
allowed. Names are checked character by character against fixed ASCII sets, so nothing that
passes can carry a path separator sequence, a shell metacharacter, a control character or a
Unicode look-alike into a file name, a log line or a terminal.

Choices beyond the bare patterns, both to keep names from being mistaken for something else:

- the user names ``.`` and ``..`` are refused (they match the pattern but name directories);
- agent names shaped like an agent id (``ag-`` and 16 letters or digits) are refused, so a
  reference such as ``T-1042+ag-…`` can only ever mean an agent id.

``sanitize_display_text`` is the one function here that never raises: it makes text that came
from an agent or a user safe to show as plain text (the template still escapes HTML), by the
rule of ``outside_text``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from broker.rules.errors import InvalidName
from broker.rules.outside_text import clean_line

_LOWER: Final = "abcdefghijklmnopqrstuvwxyz"
_UPPER: Final = _LOWER.upper()
_DIGITS: Final = "0123456789"

TICKET_ID_MAX: Final = 999_999_999
SSH_TARGET_MAX_LEN: Final = 200
SSH_TARGET_RULE: Final = (
    "the SSH user name names the target: T-<ticket>, T-<ticket>+<agent name or id>, or "
    "T-<ticket>+<session id> to join a live session, e.g. T-1042 or T-1042+web01"
)


def _shown(text: str) -> str:
    """Quote outside text for a message: ASCII only, so it cannot spoof or inject anything."""
    if len(text) <= 40:
        return ascii(text)
    quoted = ascii(text[:40])
    return quoted[:-1] + "..." + quoted[-1]


@dataclass(frozen=True)
class _Syntax:
    """A prefix, then one character from ``first``, then characters from ``rest``."""

    kind: str
    rule: str
    first: frozenset[str]
    rest: frozenset[str]
    min_len: int
    max_len: int
    prefix: str = ""

    def refuse(self, text: str, problem: str) -> InvalidName:
        return InvalidName(f"invalid {self.kind} {_shown(text)}: {problem}; {self.rule}")

    def check(self, text: object) -> str:
        if not isinstance(text, str):
            raise InvalidName(f"{self.kind} must be text, not {type(text).__name__}; {self.rule}")
        if not text:
            raise InvalidName(f"the {self.kind} is empty; {self.rule}")
        if not text.startswith(self.prefix):
            raise self.refuse(text, f"it does not start with {self.prefix!r}")
        body = text[len(self.prefix) :]
        if not self.min_len <= len(body) <= self.max_len:
            raise self.refuse(text, f"it is {len(text)} characters long")
        for position, char in enumerate(body):
            allowed = self.first if position == 0 else self.rest
            if char not in allowed:
                if position > 0:
                    where = "it contains"
                elif self.prefix:
                    where = f"after {self.prefix!r} it has"
                else:
                    where = "it starts with"
                raise self.refuse(text, f"{where} {char!a}, which is not allowed")
        return text


def _chars(*groups: str) -> frozenset[str]:
    return frozenset("".join(groups))


_USER: Final = _Syntax(
    kind="user name",
    rule="use 1 to 64 characters from a-z, 0-9, '.', '_' and '-', starting with a letter or digit",
    first=_chars(_LOWER, _DIGITS),
    rest=_chars(_LOWER, _DIGITS, "._-"),
    min_len=1,
    max_len=64,
)
_CUSTOMER: Final = _Syntax(
    kind="customer name",
    rule="use 1 to 63 characters from a-z, 0-9 and '-', starting with a letter or digit",
    first=_chars(_LOWER, _DIGITS),
    rest=_chars(_LOWER, _DIGITS, "-"),
    min_len=1,
    max_len=63,
)
_AGENT_NAME: Final = _Syntax(
    kind="agent name",
    rule=(
        "use 1 to 63 characters from a-z, 0-9, '.', '_' and '-', starting with a letter or digit"
    ),
    first=_chars(_LOWER, _DIGITS),
    rest=_chars(_LOWER, _DIGITS, "._-"),
    min_len=1,
    max_len=63,
)
_AGENT_ID: Final = _Syntax(
    kind="agent id",
    rule="an agent id is 'ag-' followed by 16 characters from a-z and 0-9",
    first=_chars(_LOWER, _DIGITS),
    rest=_chars(_LOWER, _DIGITS),
    min_len=16,
    max_len=16,
    prefix="ag-",
)
_SESSION_ID: Final = _Syntax(
    kind="session id",
    rule="a session id is 's-' followed by 22 letters (A-Z, a-z) or digits",
    first=_chars(_LOWER, _UPPER, _DIGITS),
    rest=_chars(_LOWER, _UPPER, _DIGITS),
    min_len=22,
    max_len=22,
    prefix="s-",
)
_TICKET_ID: Final = _Syntax(
    kind="ticket id",
    rule="a ticket id is 'T-' and a number from 1 to 999999999 without leading zeros, e.g. T-1042",
    first=_chars(_DIGITS[1:]),
    rest=_chars(_DIGITS),
    min_len=1,
    max_len=9,
    prefix="T-",
)
_LABEL_KEY: Final = _Syntax(
    kind="label key",
    rule=(
        "use 1 to 63 characters from a-z, 0-9, '.', '_', '/' and '-', "
        "starting with a letter or digit"
    ),
    first=_chars(_LOWER, _DIGITS),
    rest=_chars(_LOWER, _DIGITS, "._/-"),
    min_len=1,
    max_len=63,
)
_LABEL_VALUE_CHARS: Final = _chars(_LOWER, _UPPER, _DIGITS, "._:/ -")
_LABEL_VALUE: Final = _Syntax(
    kind="label value",
    rule="use up to 128 characters from A-Z, a-z, 0-9, space, '.', '_', ':', '/' and '-'",
    first=_LABEL_VALUE_CHARS,
    rest=_LABEL_VALUE_CHARS,
    min_len=0,
    max_len=128,
)


def parse_user_name(text: str) -> str:
    """Return a staff user name (``^[a-z0-9][a-z0-9._-]{0,63}$``) or raise.

    The first character is a letter or digit so a name can never read as a command-line
    option (``-rf``) or a hidden or parent directory (``.``, ``..``)."""
    return _USER.check(text)


def parse_customer_name(text: str) -> str:
    """Return a customer name (``^[a-z0-9][a-z0-9-]{0,62}$``) or raise."""
    return _CUSTOMER.check(text)


def is_agent_id(text: str) -> bool:
    """Tell whether ``text`` has the shape of an agent id (``^ag-[a-z0-9]{16}$``)."""
    try:
        _AGENT_ID.check(text)
    except InvalidName:
        return False
    return True


def parse_agent_name(text: str) -> str:
    """Return an agent name (``^[a-z0-9][a-z0-9._-]{0,62}$``, not id-shaped) or raise."""
    name = _AGENT_NAME.check(text)
    if is_agent_id(name):
        raise _AGENT_NAME.refuse(
            name, "names of the form ag-<16 letters or digits> are reserved for agent ids"
        )
    return name


def parse_agent_id(text: str) -> str:
    """Return an agent id (``^ag-[a-z0-9]{16}$``) or raise."""
    return _AGENT_ID.check(text)


def parse_agent_ref(text: str) -> str:
    """Return an agent id or an agent name, whichever ``text`` is, or raise.

    Since agent names may not look like ids, the result is an id exactly when
    :func:`is_agent_id` says so.
    """
    if is_agent_id(text):
        return text
    return parse_agent_name(text)


def parse_session_id(text: str) -> str:
    """Return a session id (``^s-[A-Za-z0-9]{22}$``) or raise."""
    return _SESSION_ID.check(text)


def is_session_id(text: str) -> bool:
    """Tell whether ``text`` has the shape of a session id (``^s-[A-Za-z0-9]{22}$``)."""
    try:
        _SESSION_ID.check(text)
    except InvalidName:
        return False
    return True


def parse_ticket_id(text: str) -> int:
    """Return the number of a ticket id such as ``T-1042`` or raise."""
    return int(_TICKET_ID.check(text)[len(_TICKET_ID.prefix) :])


def parse_ticket_ref(text: str) -> int:
    """Return the number of ``T-1042`` or of a bare ``1042`` (as typed on a command line)."""
    if isinstance(text, str) and not text.startswith(_TICKET_ID.prefix):
        return parse_ticket_id(_TICKET_ID.prefix + text)
    return parse_ticket_id(text)


def format_ticket_id(number: int) -> str:
    """Return ``T-<number>`` for a ticket number from 1 to 999999999, or raise."""
    if isinstance(number, bool) or not isinstance(number, int):
        raise InvalidName(f"a ticket number must be an integer, not {type(number).__name__}")
    if not 1 <= number <= TICKET_ID_MAX:
        raise InvalidName(f"ticket number {number} is out of range; use 1 to {TICKET_ID_MAX}")
    return f"{_TICKET_ID.prefix}{number}"


@dataclass(frozen=True)
class Label:
    """One ``KEY=VALUE`` label of an agent or an enrollment token."""

    key: str
    value: str

    def __str__(self) -> str:
        return f"{self.key}={self.value}"


def parse_label(text: str) -> Label:
    """Return the label of ``KEY=VALUE`` (the value may be empty) or raise."""
    if not isinstance(text, str) or "=" not in text:
        shown = _shown(text) if isinstance(text, str) else type(text).__name__
        raise InvalidName(
            f"invalid label {shown}: it has no '='; a label is KEY=VALUE, e.g. env=prod"
        )
    key, value = text.split("=", 1)
    return Label(key=parse_label_key(key), value=parse_label_value(value))


def parse_label_key(text: str) -> str:
    """Return a label key (``^[a-z0-9][a-z0-9._/-]{0,62}$``) or raise."""
    return _LABEL_KEY.check(text)


def parse_label_value(text: str) -> str:
    """Return a label value (``^[A-Za-z0-9._:/ -]{0,128}$``) or raise."""
    if text == "":
        return text
    return _LABEL_VALUE.check(text)


@dataclass(frozen=True)
class SshTarget:
    """What an SSH user name asks for: a ticket, and optionally one of its agents or one of
    its live sessions (to join or watch it)."""

    ticket: int
    agent: str | None = None
    session: str | None = None

    @property
    def agent_is_id(self) -> bool:
        """True when ``agent`` is an agent id rather than an agent name."""
        return self.agent is not None and is_agent_id(self.agent)

    def __str__(self) -> str:
        ticket = format_ticket_id(self.ticket)
        second = self.session or self.agent
        return ticket if second is None else f"{ticket}+{second}"


def _refuse_target(text: str, problem: str) -> InvalidName:
    return InvalidName(f"invalid SSH user name {_shown(text)}: {problem}; {SSH_TARGET_RULE}")


def parse_ssh_target(text: str) -> SshTarget:
    """Return the target named by an SSH user name (``T-1042``, ``T-1042+web01``) or raise."""
    if not isinstance(text, str):
        raise InvalidName(f"an SSH user name must be text, not {type(text).__name__}")
    if not text:
        raise InvalidName(f"the SSH user name is empty; {SSH_TARGET_RULE}")
    if len(text) > SSH_TARGET_MAX_LEN:
        raise _refuse_target(text, f"it is {len(text)} characters long")
    for char in text:
        if not char.isascii():
            raise _refuse_target(text, f"it contains the non-ASCII character {char!a}")
        if not char.isprintable() or char == " ":
            raise _refuse_target(text, f"it contains the space or control character {char!a}")
    parts = text.split("+")
    if len(parts) > 2:
        raise _refuse_target(text, "it has more than one '+'")
    for part, where in zip(parts, ("before", "after"), strict=False):
        if not part:
            raise _refuse_target(text, f"the part {where} '+' is empty")
    try:
        ticket = parse_ticket_id(parts[0])
        second = parts[1] if len(parts) == 2 else None
        # A session id (mixed case, 22 characters after "s-") is never read as an agent name:
        # an agent whose name looks like one is reached by its id.
        if second is not None and is_session_id(second):
            return SshTarget(ticket=ticket, session=second)
        agent = parse_agent_ref(second) if second is not None else None
    except InvalidName as error:
        raise InvalidName(f"invalid SSH user name {_shown(text)}: {error.message}") from None
    return SshTarget(ticket=ticket, agent=agent)


def sanitize_display_text(text: str, max_len: int) -> str:
    """Return ``text`` without controls or bidi tricks, trimmed, at most ``max_len`` long.

    For agent- or user-supplied text shown to people (hostnames, OS strings, titles): the
    one-line form of the rule in :mod:`broker.rules.outside_text`. It never raises; HTML
    escaping stays the template's job.
    """
    return clean_line(text, max_len)
