"""Asking the end user in the agent's own terminal, when ``run`` has one.

Each new request is printed with who asks, in which role, for which ticket, and how to
answer; a line ``y`` or ``n`` typed in the terminal answers the oldest waiting request
(and says whose it was). Broker-supplied
text (staff name, ticket title) is made inert before it reaches the terminal.
``secondline-agent approve|deny`` works at the same time, from any terminal.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import os
from typing import Final, TextIO

from agent.consent import ConsentRequest, ConsentService, Decision
from agent.errors import ConsentError
from agent.protocol import LOCAL_USER_RE, ConsentRole, sanitize_text

logger = logging.getLogger(__name__)

_YES: Final = frozenset(("y", "yes"))
_NO: Final = frozenset(("n", "no"))
_ASKS: Final[dict[ConsentRole, str]] = {
    "owner": "open a session",
    "participant": "join a running session as a participant who types",
    "observer": "watch a running session (they see the screen)",
}

MAY_DO: Final = (
    "If you approve, they may run commands and read and write files on this machine "
    "as its login account."
)


def asks_to(role: ConsentRole) -> str:
    """What a request of ``role`` asks for, as the end of a sentence."""
    return _ASKS[role]


def describe_request(request: ConsentRequest) -> str:
    """The question shown for a request (inert text only)."""
    env = request.env
    title = sanitize_text(env.ticket_title, 200)
    asks = _ASKS[env.asked_role]
    # Files travel in a session of their own (sftp, scp, the console's transfer panel),
    # asked for like a shell: the end user hears that files may be read and written.
    scope = "" if env.asked_role == "observer" else f"  {MAY_DO}\n"
    return (
        f"Secondline: {env.staff} (support level {env.staff_level}) asks to {asks} on "
        f"this machine for ticket {env.ticket}{f' ({title})' if title else ''}.\n"
        f"{scope}"
        f"  Approve? Type y or n and Enter here, or run: "
        f"secondline-agent approve {env.session} {env.staff}\n"
    )


class TerminalPrompt:
    """Prints requests on ``output`` and reads answers from the terminal ``input_fd``."""

    def __init__(self, consent: ConsentService, input_fd: int, output: TextIO) -> None:
        self._consent = consent
        self._input = input_fd
        self._pending_input = b""
        self._output = output
        self._loop = asyncio.get_running_loop()
        self._user = _local_user()
        self._listening = False

    def start(self) -> None:
        """Follow the consent service's requests."""
        self._consent.add_listener(self._on_event)

    def close(self) -> None:
        """Stop reading the terminal."""
        if self._listening:
            self._loop.remove_reader(self._input)
            self._listening = False

    def _on_event(self, event: ConsentRequest | Decision) -> None:
        if isinstance(event, ConsentRequest):
            self._write(describe_request(event))
        elif event.decision == "timeout":
            self._write(
                f"Secondline: the request of {event.key.describe()} for session "
                f"{event.session} timed out.\n"
            )
        waiting = bool(self._consent.book.pending())
        if waiting and not self._listening:
            self._loop.add_reader(self._input, self._on_readable)
            self._listening = True
        elif not waiting:
            self.close()

    def _on_readable(self) -> None:
        try:
            data = os.read(self._input, 1024)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close()  # the terminal went away; the control socket still works
            return
        lines = (self._pending_input + data).split(b"\n")
        self._pending_input = lines.pop()[-1024:]
        for line in lines:
            self._on_line(line.decode("utf-8", "replace"))

    def _on_line(self, line: str) -> None:
        answer = line.strip().lower()
        pending = self._consent.book.pending()
        if not pending or answer not in _YES | _NO:
            if pending:
                self._write("Secondline: type y to approve or n to deny.\n")
            return
        key = pending[0].key
        try:
            decision = self._consent.decide(key, approved=answer in _YES, by=self._user)
        except ConsentError as exc:
            self._write(f"Secondline: {exc}\n")
            return
        self._write(
            f"Secondline: {key.describe()} {decision.decision} for session {key.session}.\n"
        )

    def _write(self, text: str) -> None:
        try:
            self._output.write(text)
            self._output.flush()
        except OSError as exc:
            logger.debug("cannot write to the terminal: %s", exc)


def _local_user() -> str:
    try:
        name = os.getlogin()
    except OSError:
        name = getpass.getuser()
    return name if LOCAL_USER_RE.fullmatch(name) else "terminal"
