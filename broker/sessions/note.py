"""The internal note a session leaves on its ticket, as plain text (pure).

Everything in it that came from the agent or from typing (command lines) is made inert
(controls shown as ``\\xHH``) and length-capped; the ticket system shows it as text.

The note is written in the customer's language: the caller passes that language's
``gettext`` (the console's catalogues, ``broker/console/locale``, hold the texts); names,
times, digests and command lines are never translated.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from broker.rules import sanitize_display_text
from broker.transcript import END_KILLED, Command
from broker.transcript.render import visible_controls

MAX_COMMANDS: Final = 200
MAX_COMMAND_CHARS: Final = 300
# Ticket systems cap a note (the built-in store at 20,000 characters): the command list
# gives way first, the rest of the note is short and bounded.
NOTE_BUDGET: Final = 18_000

Gettext = Callable[[str], str]


def N_(message: str) -> str:
    """Marks a text for extraction; it is translated where it is used."""
    return message


# The standard end reasons and roles, as the note says them (other reasons stay as given).
_REASONS: Final = {
    reason: reason
    for reason in (
        N_("ended"),
        N_("agent disconnected"),
        N_("killed"),
        N_("interrupted"),
        N_("disk full"),
        N_("write error"),
        N_("broker shut down"),
        N_("ended by the end user"),
        N_("interrupted (the broker stopped)"),
    )
}
_ROLES: Final = {"owner": N_("owner"), "joiner": N_("joiner"), "observer": N_("observer")}
_DECISIONS: Final = {
    "approved": N_("approved"),
    "denied": N_("denied"),
    "timeout": N_("no answer in time"),
}


def _english(message: str) -> str:
    return message


@dataclass(frozen=True, kw_only=True)
class NoteFacts:
    """Everything the note states about one session."""

    session_id: str
    ticket_ref: str
    owner: str
    agent_name: str
    agent_id: str
    kind: str
    command: str | None
    started_at: dt.datetime | None
    ended_at: dt.datetime
    end_reason: str
    end_message: str
    exit_status: int | None
    exit_signal: str | None
    consent: str | None
    consent_by: str | None
    consent_at: dt.datetime | None
    participants: Sequence[tuple[str, str]]
    commands: Sequence[Command]
    digest: str | None
    complete: bool | None
    event_count: int | None
    attachments: Sequence[str]
    left_out: Sequence[str] = ()
    #: An SFTP session's file operations, as recorded (``upload /tmp/a size=… sha256=…``).
    files: Sequence[str] = ()


def _when(moment: dt.datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration_text(seconds: float) -> str:
    """``H:MM:SS`` for a non-negative number of seconds."""
    whole = max(0, int(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def _inert(text: str, limit: int) -> str:
    shown = visible_controls(text)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def _status(exit_status: int | None, exit_signal: str | None, _: Gettext) -> str:
    if exit_status is not None:
        return _("exit status %(status)s") % {"status": exit_status}
    if exit_signal is not None:
        return _("signal %(signal)s") % {"signal": sanitize_display_text(exit_signal, 20)}
    return _("no exit status")


def _killer(message: str) -> str:
    return message.removeprefix("the session was ended by ")


def _consent(facts: NoteFacts, _: Gettext) -> str:
    if facts.consent in (None, "not_required"):
        return _("not required (unattended agent)")
    decision = _(_DECISIONS.get(str(facts.consent), str(facts.consent)))
    when = _when(facts.consent_at)
    if facts.consent_by:
        return _("%(decision)s by %(name)s at %(when)s") % {
            "decision": decision,
            "name": sanitize_display_text(facts.consent_by, 32),
            "when": when,
        }
    return _("%(decision)s at %(when)s") % {"decision": decision, "when": when}


def _participants(people: Sequence[tuple[str, str]], _: Gettext) -> str:
    seen: list[str] = []
    for name, role in people:
        entry = f"{sanitize_display_text(name, 64)} ({_(_ROLES.get(role, role))})"
        if entry not in seen:
            seen.append(entry)
    return ", ".join(seen) or "-"


def _labelled(rows: Sequence[tuple[str, str]]) -> list[str]:
    """``Label:   value`` lines, the values aligned (labels differ in length per language)."""
    width = max(len(label) for label, _value in rows) + 2
    return [f"{label + ':':<{width}}{value}" for label, value in rows]


def _command_line(command: Command) -> str:
    status = "exit ?" if command.exit_status is None else f"exit {command.exit_status}"
    took = "" if command.duration is None else f", {command.duration:.1f} s"
    return f"  [{status}{took}] {_inert(command.command_line, MAX_COMMAND_CHARS) or '(empty)'}"


def session_note(facts: NoteFacts, _: Gettext = _english) -> str:
    """The note's text, in the language of ``_`` (English by default)."""
    lines = [
        _("Remote session %(session)s on %(agent)s (%(agent_id)s) by %(owner)s")
        % {
            "session": facts.session_id,
            "agent": sanitize_display_text(facts.agent_name, 63),
            "agent_id": facts.agent_id,
            "owner": sanitize_display_text(facts.owner, 64),
        },
        "",
    ]
    rows = [(_("Started"), _when(facts.started_at)), (_("Ended"), _when(facts.ended_at))]
    if facts.started_at is not None:
        seconds = (facts.ended_at - facts.started_at).total_seconds()
        rows.append((_("Duration"), duration_text(seconds)))
    reason = sanitize_display_text(facts.end_reason, 120)
    rows.append(
        (
            _("End"),
            f"{_(_REASONS.get(reason, reason))} "
            f"({_status(facts.exit_status, facts.exit_signal, _)})",
        )
    )
    if facts.end_reason == END_KILLED and facts.end_message:
        # Who ended it and why (`secondline session kill --reason`): the next reader asks.
        rows.append((_("Ended by"), sanitize_display_text(_killer(facts.end_message), 300)))
    rows += [
        (_("Consent"), _consent(facts, _)),
        (_("Participants"), _participants(facts.participants, _)),
    ]
    if facts.kind == "exec" and facts.command is not None:
        rows.append((_("Command"), _inert(facts.command, MAX_COMMAND_CHARS)))
    tail_rows = _tail(facts, _)
    labelled = _labelled(rows + tail_rows)
    lines += labelled[: len(rows)]
    tail = labelled[len(rows) :]
    budget = NOTE_BUDGET - sum(len(line) + 1 for line in lines + tail)
    if facts.kind == "sftp":
        return "\n".join([*lines, "", *_files_lines(facts.files, budget, _), "", *tail]) + "\n"
    lines += ["", _("Commands run:")]
    if not facts.commands:
        lines.append("  " + _("(none recorded)"))
    shown = 0
    for command in facts.commands[:MAX_COMMANDS]:
        line = _command_line(command)
        budget -= len(line) + 1
        if budget < 100:
            break
        lines.append(line)
        shown += 1
    if shown < len(facts.commands):
        more = _("... and %(count)s more (see the transcript)")
        lines.append("  " + more % {"count": len(facts.commands) - shown})
    return "\n".join([*lines, "", *tail]) + "\n"


def _files_lines(files: Sequence[str], budget: int, _: Gettext) -> list[str]:
    """The files an SFTP session moved, each with its size and SHA-256 as recorded."""
    lines = [_("Files moved:")]
    if not files:
        lines.append("  " + _("(none recorded)"))
    shown = 0
    for item in files[:MAX_COMMANDS]:
        line = "  " + _inert(item, MAX_COMMAND_CHARS)
        budget -= len(line) + 1
        if budget < 100:
            break
        lines.append(line)
        shown += 1
    if shown < len(files):
        more = _("... and %(count)s more (see the transcript)")
        lines.append("  " + more % {"count": len(files) - shown})
    return lines


def _tail(facts: NoteFacts, _: Gettext) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    if facts.digest is not None:
        sealed = _("sealed complete") if facts.complete else _("sealed cut short")
        rows.append(
            (
                _("Transcript"),
                _("%(count)s events, %(sealed)s, SHA-256 chain digest %(digest)s")
                % {"count": facts.event_count, "sealed": sealed, "digest": facts.digest},
            )
        )
    else:
        rows.append((_("Transcript"), _("not sealed (tell an admin)")))
    rows.append((_("Verify with"), f"secondline transcript verify {facts.session_id}"))
    if facts.attachments:
        rows.append((_("Attached"), ", ".join(facts.attachments)))
    for what in facts.left_out:
        rows.append((_("Not attached"), what))
    return rows


def exec_commands(
    command: str | None, exit_status: int | None, duration: float
) -> tuple[Command, ...]:
    """The command list of a one-command session (no prompt marks come without a shell)."""
    if command is None:
        return ()
    return (Command(command, 0.0, round(max(0.0, duration), 6), exit_status),)
