"""What the broker accepts as an agent's facts (hostname, OS, kernel, arch, users, and from
newer agents installed packages and running services).

Agent data is hostile. The wire unit :class:`agent.facts.Facts` already refuses unknown
keys, wrong types, control characters (escape sequences, NUL), texts over 256 characters,
bad user, package and service names, and more of them than the caps; on top of it the
broker refuses markup characters (``<``, ``>``) and oversized output, and strips bidi and
invisible characters with :func:`broker.rules.names.sanitize_display_text`, so what is
stored is plain, short text that looks like what it is. Pure: bytes or objects in, a dict
to store out.
"""

from __future__ import annotations

from typing import Final

from agent.errors import MessageError
from agent.facts import FACTS_JSON_MAX, Facts
from agent.protocol import FACT_TEXT_MAX
from broker.errors import InputError
from broker.rules.names import sanitize_display_text

FACT_TEXT_FIELDS: Final = ("hostname", "os", "os_version", "kernel", "arch")
#: Largest `sl:facts` output read; more is refused, not truncated.
FACTS_OUTPUT_MAX: Final = FACTS_JSON_MAX
_MARKUP: Final = frozenset("<>")


class FactsRefused(InputError):
    """Facts sent by an agent are not acceptable; nothing of them is stored."""

    def __init__(self, message: str, *, code: str = "facts_invalid", status: int = 422) -> None:
        super().__init__(message, code=code, status=status)


def clean_facts(obj: object) -> dict[str, object]:
    """Validate decoded facts and return the dict to store, or raise :class:`FactsRefused`."""
    try:
        facts = Facts.from_dict(obj)
    except MessageError as exc:
        raise FactsRefused(f"the agent's facts were refused: {exc}") from None
    stored: dict[str, object] = {}
    for name in FACT_TEXT_FIELDS:
        value: str = getattr(facts, name)
        if _MARKUP.intersection(value):
            raise FactsRefused(
                f"the agent's facts were refused: facts: {name} holds markup characters "
                "('<' or '>')"
            )
        stored[name] = sanitize_display_text(value, FACT_TEXT_MAX)
    stored["users"] = list(facts.users)
    # Absent for an agent that does not report them (older agents, the enrollment request):
    # the ranking then knows nothing of the machine's software, as before.
    if facts.packages:
        stored["packages"] = list(facts.packages)
    if facts.services:
        stored["services"] = list(facts.services)
    return stored


def parse_facts_output(data: bytes) -> dict[str, object]:
    """Validate the stdout of ``sl:facts`` and return the dict to store."""
    if len(data) > FACTS_OUTPUT_MAX:
        raise FactsRefused(
            f"the agent's facts were refused: they are larger than {FACTS_OUTPUT_MAX} bytes",
            code="facts_too_large",
            status=413,
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise FactsRefused("the agent's facts were refused: they are not UTF-8") from None
    try:
        facts = Facts.parse(text)
    except MessageError as exc:
        raise FactsRefused(f"the agent's facts were refused: {exc}") from None
    return clean_facts(facts.to_dict())
