"""A draft article pre-filled from a solved ticket (pure).

The ticket's title becomes the title, the requester's description the problem (symptoms in
the words a caller uses, which is what level 1 will type), the escalation reasons a first
note on the cause, the ticket's solution the solution, the linked machines' facts the
environment, and the commands of its sessions that ended with exit status 0 the commands.
Host names and user names from the facts are left out: they belong to one customer, and an
article is read at every customer. Secrets (passwords on command lines, tokens, keys) are
replaced by the one scrubber, :mod:`broker.secret_scrubber`, in every field: the session rows
of old sessions still hold them unscrubbed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from agent.facts import PACKAGE_RE, SERVICE_RE
from broker.kb.article import (
    COMMAND_MAX_CHARS,
    COMMANDS_MAX,
    OS_MAX,
    OS_NAME_MAX,
    TEXT_MAX,
    TITLE_MAX,
    ArticleContent,
    CommandEntry,
)
from broker.kb.languages import guess_language
from broker.rules.names import sanitize_display_text
from broker.secret_scrubber import scrub_secrets

FACT_MAX: Final = 100


@dataclass(frozen=True)
class MachineFacts:
    """The facts an agent reported, as far as an article uses them."""

    os: str = ""
    os_version: str = ""
    kernel: str = ""
    arch: str = ""
    software: frozenset[str] = frozenset()  # installed packages and running services

    @classmethod
    def from_facts(cls, facts: Mapping[str, object]) -> MachineFacts:
        def pick(key: str) -> str:
            value = facts.get(key)
            return sanitize_display_text(value, FACT_MAX) if isinstance(value, str) else ""

        def names(key: str, pattern: re.Pattern[str]) -> set[str]:
            # Checked when stored; checked again, as stored facts may predate the check.
            value = facts.get(key)
            if not isinstance(value, list):
                return set()
            return {n.casefold() for n in value if isinstance(n, str) and pattern.fullmatch(n)}

        software = names("packages", PACKAGE_RE) | names("services", SERVICE_RE)
        return cls(
            pick("os"), pick("os_version"), pick("kernel"), pick("arch"), frozenset(software)
        )

    @property
    def os_name(self) -> str:
        return " ".join(p for p in (self.os, self.os_version) if p)[:OS_NAME_MAX]

    def line(self) -> str:
        extra = [f"kernel {self.kernel}" if self.kernel else "", self.arch]
        details = ", ".join(e for e in extra if e)
        return self.os_name + (f" ({details})" if details else "")


@dataclass(frozen=True)
class SessionCommands:
    """One session of the ticket and the commands its transcript lists."""

    session: str
    commands: tuple[CommandEntry, ...]


@dataclass(frozen=True)
class TicketDigest:
    """What a draft is written from."""

    id: int
    customer: str
    title: str
    description: str
    status: str
    solution: str
    escalation_reasons: tuple[str, ...] = ()
    machines: tuple[MachineFacts, ...] = ()
    sessions: tuple[SessionCommands, ...] = ()

    @property
    def ref(self) -> str:
        return f"T-{self.id}"

    @property
    def solved(self) -> bool:
        return self.status in ("resolved", "closed")


def successful_commands(sessions: Sequence[SessionCommands]) -> tuple[CommandEntry, ...]:
    """Commands that ended with exit status 0, in order, each distinct command line once."""
    seen: set[str] = set()
    out: list[CommandEntry] = []
    for session in sessions:
        for cmd in session.commands:
            line = cmd.command.strip()
            if cmd.exit_status != 0 or not line or line in seen:
                continue
            seen.add(line)
            out.append(CommandEntry(scrub_secrets(line)[:COMMAND_MAX_CHARS], 0, session.session))
    return tuple(out[:COMMANDS_MAX])


def _cap(text: str, field: str) -> str:
    limit = TEXT_MAX[field]
    return text if len(text) <= limit else text[: limit - 1] + "…"


def draft_from_ticket(ticket: TicketDigest) -> ArticleContent:
    """The pre-filled content of a draft written up from ``ticket``."""
    lines = list(dict.fromkeys(m.line() for m in ticket.machines if m.line()))
    oses = list(dict.fromkeys(m.os_name for m in ticket.machines if m.os_name))
    reasons = [r.strip() for r in ticket.escalation_reasons if r.strip()]
    cause = ""
    if reasons:
        cause = "Escalation notes (rewrite as the cause):\n" + "\n".join(f"- {r}" for r in reasons)
    title = sanitize_display_text(scrub_secrets(ticket.title), TITLE_MAX)
    return ArticleContent(
        title=title or f"Solution of {ticket.ref}",
        problem=_cap(scrub_secrets(ticket.description.strip()), "problem"),
        environment=_cap(scrub_secrets("\n".join(lines)), "environment"),
        cause=_cap(scrub_secrets(cause), "cause"),
        solution=_cap(scrub_secrets(ticket.solution.strip()), "solution"),
        commands=successful_commands(ticket.sessions),
        tags=(),
        os=tuple(oses[:OS_MAX]),
        # Written in the ticket's language; its author may switch it (the other language's
        # version is then a task for staff who write both).
        language=guess_language(ticket.title, ticket.description),
    )
