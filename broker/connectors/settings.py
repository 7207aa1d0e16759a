"""What an admin configures for a connector, checked as pure functions.

A connector is named like a customer (``rt-acme``), has a kind (``rt``, ``zammad``, ``znuny``,
``webhook``), the base URL of the system, the ticket-number prefix staff type in SSH user
names (``RT`` for ``RT-1234``), and a level map: which part of the external system's
structure is which of our three support levels (RT and Znuny: queue names; Zammad: group
names). The map is text on the command line, ``"1=Support,2=Second level,3=Engineering"``;
every level needs a place. The credential is one line: an API token (RT, Zammad) or an
agent's ``LOGIN:PASSWORD`` (Znuny, whose web service has no tokens).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from broker.connectors.webhook_signing import check_secret
from broker.rules import LEVELS, sanitize_display_text

KINDS: Final = ("rt", "zammad", "znuny", "webhook")
DEFAULT_PREFIX: Final = {"rt": "RT", "zammad": "ZM", "znuny": "ZN", "webhook": "WH"}
# Where each kind's tickets of a level sit unless configured; `connector test` says which
# are missing. RT: three queues named for the levels. Zammad: "Users", the group a new
# Zammad files tickets in, then two groups to create. Znuny: "Raw", where new mail lands.
DEFAULT_LEVELS: Final = {
    "rt": {1: "Level 1", 2: "Level 2", 3: "Level 3"},
    "zammad": {1: "Users", 2: "2nd Level", 3: "3rd Level"},
    "znuny": {1: "Raw", 2: "2nd Level", 3: "3rd Level"},
}
NAME: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
PREFIX: Final = re.compile(r"[A-Z][A-Z0-9]{0,9}")
URL_MAX: Final = 500
PLACE_MAX: Final = 200
CREDENTIAL_MAX: Final = 4096


class ConnectorSettingsError(ValueError):
    """A setting is malformed; the message says what is allowed."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class LevelMap:
    """Our level (1-3) for each place of the external system, and back."""

    places: Mapping[int, str]

    def level_of(self, place: str) -> int | None:
        for level, name in self.places.items():
            if name == place:
                return level
        return None

    def place_of(self, level: int) -> str:
        return self.places[level]

    def as_text(self) -> str:
        return ",".join(f"{level}={self.places[level]}" for level in sorted(self.places))

    def as_json(self) -> dict[str, str]:
        return {str(level): name for level, name in sorted(self.places.items())}

    @classmethod
    def from_json(cls, data: object) -> LevelMap:
        if not isinstance(data, dict):
            raise ConnectorSettingsError("the stored level map is not an object")
        return cls({int(k): str(v) for k, v in data.items()})


def check_name(value: str) -> str:
    if not NAME.fullmatch(value):
        raise ConnectorSettingsError(
            f"invalid connector name {value[:40]!a}: use 1-32 lower-case letters, digits "
            "and '-', starting with a letter or digit, e.g. rt-acme"
        )
    return value


def check_kind(value: str) -> str:
    if value not in KINDS:
        raise ConnectorSettingsError(
            f"unknown connector kind {value[:20]!a}; kinds are: {', '.join(KINDS)}"
        )
    return value


def check_prefix(value: str) -> str:
    if not PREFIX.fullmatch(value) or value == "T":
        raise ConnectorSettingsError(
            f"invalid ticket prefix {value[:20]!a}: 1-10 upper-case letters and digits, "
            "starting with a letter, not 'T' (that is the built-in store's), e.g. RT"
        )
    return value


def check_url(value: str) -> str:
    """An http(s) base URL without credentials, query or fragment; no trailing slash."""
    if len(value) > URL_MAX:
        raise ConnectorSettingsError(f"the URL is longer than {URL_MAX} characters")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise ConnectorSettingsError(f"the URL does not parse: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConnectorSettingsError(
            "the URL must be http:// or https:// with a host, e.g. https://rt.example.com"
        )
    if parts.username or parts.password:
        raise ConnectorSettingsError(
            "the URL must not hold credentials; put the token in the --credential-file"
        )
    if parts.query or parts.fragment:
        raise ConnectorSettingsError("the URL must not have a query or fragment")
    del port
    return value.rstrip("/")


def parse_levels(text: str) -> LevelMap:
    """``"1=Support,2=Second level,3=Engineering"`` → a map with a place for every level."""
    places: dict[int, str] = {}
    for item in text.split(","):
        level_text, sep, place = item.partition("=")
        level_text, place = level_text.strip(), place.strip()
        if not sep or level_text not in {str(n) for n in LEVELS}:
            raise ConnectorSettingsError(
                f"invalid level mapping {item[:60]!a}: write LEVEL=PLACE for levels 1, 2 "
                'and 3, separated by commas, e.g. "1=Level 1,2=Level 2,3=Level 3"'
            )
        cleaned = sanitize_display_text(place, PLACE_MAX)
        if not cleaned or cleaned != place:
            raise ConnectorSettingsError(
                f"invalid place {place[:60]!a} for level {level_text}: it must be "
                f"1-{PLACE_MAX} characters without control characters"
            )
        if int(level_text) in places:
            raise ConnectorSettingsError(f"level {level_text} is mapped twice")
        places[int(level_text)] = place
    missing = [str(n) for n in LEVELS if n not in places]
    if missing:
        raise ConnectorSettingsError(f"level {', '.join(missing)} has no place in the mapping")
    if len(set(places.values())) != len(places):
        raise ConnectorSettingsError("two levels are mapped to the same place")
    return LevelMap(places)


def default_levels(kind: str) -> LevelMap:
    return LevelMap(dict(DEFAULT_LEVELS.get(kind, DEFAULT_LEVELS["rt"])))


def check_credential(text: str, kind: str = "rt") -> str:
    """The credential file's content: one line (a token, for Znuny LOGIN:PASSWORD, for a
    webhook the shared secret of at least 32 characters), stripped of its line end."""
    value = text.strip()
    if not value:
        raise ConnectorSettingsError("the credential file is empty")
    what = {"znuny": "the agent's LOGIN:PASSWORD", "webhook": "the shared secret"}.get(
        kind, "the API token"
    )
    if len(value) > CREDENTIAL_MAX or any(c in value for c in "\r\n\x00"):
        raise ConnectorSettingsError(
            f"the credential file must hold one line ({what}), at most {CREDENTIAL_MAX} characters"
        )
    if kind == "znuny":
        login, sep, password = value.partition(":")
        if not sep or not login or not password:
            raise ConnectorSettingsError(
                "the credential file of a Znuny connector must hold one line "
                "LOGIN:PASSWORD (the agent Secondline logs in as)"
            )
    if kind == "webhook":
        try:
            check_secret(value)
        except ValueError as exc:
            raise ConnectorSettingsError(str(exc)) from None
    return value
