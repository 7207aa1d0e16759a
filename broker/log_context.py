"""Log lines that say whom they are about: session, agent, staff member, or the peer.

A broker serves thousands of tunnels and sessions at once, so a line such as "tick failed"
is useless unless it names the session. :class:`ContextLogger` is a
:class:`logging.LoggerAdapter` that puts ``[session=… agent=… staff=…]`` in front of every
message and the same fields into the record (``record.session`` …) for handlers that want
them as fields. Where there is no session yet (a connection still authenticating), the
peer's address stands in for it; once the session is known the peer is left out, since the
session's own records say where it came from.

Values are ids, staff names and addresses, never secrets. They are cut short and made
printable when bound, so an odd value cannot forge a line or grow one without bound.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, MutableMapping
from typing import Final

#: The fields, in the order they are shown.
FIELDS: Final = ("session", "agent", "staff", "peer")
VALUE_MAX: Final = 64


def _clean(value: str) -> str:
    return "".join(c if c.isprintable() and not c.isspace() else "?" for c in value[:VALUE_MAX])


class ContextLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger whose every line names the session, agent and staff member it concerns."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        session: str = "",
        agent: str = "",
        staff: str = "",
        peer: str = "",
    ) -> None:
        fields = {"session": session, "agent": agent, "staff": staff, "peer": peer}
        context = {name: _clean(value) for name, value in fields.items() if value}
        super().__init__(logger, context)
        self.context: Mapping[str, str] = context
        shown = [
            f"{name}={context[name]}"
            for name in FIELDS
            if name in context and not (name == "peer" and "session" in context)
        ]
        self._prefix = f"[{' '.join(shown)}] " if shown else ""

    def bind(
        self, *, session: str = "", agent: str = "", staff: str = "", peer: str = ""
    ) -> ContextLogger:
        """The same logger with more context (a field given here replaces the old one)."""
        given = {"session": session, "agent": agent, "staff": staff, "peer": peer}
        merged = {**self.context, **{name: value for name, value in given.items() if value}}
        return ContextLogger(self.logger, **merged)

    def process(
        self, msg: object, kwargs: MutableMapping[str, object]
    ) -> tuple[object, MutableMapping[str, object]]:
        extra = kwargs.get("extra")
        kwargs["extra"] = {**self.context, **(extra if isinstance(extra, Mapping) else {})}
        return msg, kwargs

    def log(self, level: int, msg: object, *args: object, **kwargs: object) -> None:
        if not self.isEnabledFor(level):
            return
        text, options = self.process(msg, kwargs)
        if self._prefix:
            # With arguments the message is %-formatted, so a "%" in a value (an IPv6 zone:
            # fe80::1%eth0) must be doubled; without them it is printed as it stands.
            prefix = self._prefix.replace("%", "%%") if args else self._prefix
            text = f"{prefix}{text}"
        # One frame more than LoggerAdapter's own: the record names our caller's line.
        stacklevel = options.pop("stacklevel", 1)
        assert isinstance(stacklevel, int)
        self.logger.log(level, text, *args, stacklevel=stacklevel + 1, **options)  # type: ignore[arg-type]


def context_logger(
    name: str, *, session: str = "", agent: str = "", staff: str = "", peer: str = ""
) -> ContextLogger:
    """``logging.getLogger(name)`` with context on every line."""
    return ContextLogger(
        logging.getLogger(name), session=session, agent=agent, staff=staff, peer=peer
    )
