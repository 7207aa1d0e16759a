"""A mirrored ticket named by the number staff know from the external system: the SSH user
name ``RT-1234`` (or ``RT-1234+web01``) works like ``T-…`` (pure).

The prefix is the connector's (``connector list`` shows it); ``T`` stays the built-in
store's, so ``T-…`` never reaches this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from broker.rules import parse_agent_ref

_EXTERNAL: Final = re.compile(r"([A-Z][A-Z0-9]{0,9})-([1-9][0-9]{0,17})")


@dataclass(frozen=True)
class ExternalTarget:
    prefix: str
    external_id: str
    agent: str | None

    @property
    def ref(self) -> str:
        return f"{self.prefix}-{self.external_id}"


def parse_external_target(text: str) -> ExternalTarget | None:
    """``PREFIX-<number>[+agent]``, or None when ``text`` is not shaped like that.

    An agent part that is not a valid agent name or id raises ``InvalidName``."""
    head, plus, agent = text.partition("+")
    found = _EXTERNAL.fullmatch(head)
    if found is None or found.group(1) == "T":
        return None
    return ExternalTarget(
        prefix=found.group(1),
        external_id=found.group(2),
        agent=parse_agent_ref(agent) if plus else None,
    )
