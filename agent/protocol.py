"""Constants and small wire units of the agent <-> broker protocol (docs/protocol.md).

Pure: no I/O, no clock. The broker imports these so both sides agree on names, paths,
character sets and the messages exchanged over SSH channels (session environment,
consent answer).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

from agent.errors import MessageError

ENROLL_PATH: Final = "/agent/v1/enroll"
TUNNEL_PATH: Final = "/agent/v1/tunnel"
HELP_PATH: Final = "/agent/v1/help"

AGENT_ID_HEADER: Final = "X-Secondline-Agent"
TIMESTAMP_HEADER: Final = "X-Secondline-Timestamp"
SIGNATURE_HEADER: Final = "X-Secondline-Signature"

#: The SSH user name the broker's client authenticates as on the agent's server.
BROKER_SSH_USERNAME: Final = "secondline"
KEEPALIVE_INTERVAL: Final = 15.0
KEEPALIVE_COUNT_MAX: Final = 2
#: Largest binary WebSocket message either side sends on the tunnel.
MAX_TUNNEL_MESSAGE: Final = 256 * 1024

FACTS_COMMAND: Final = "sl:facts"
CONSENT_COMMAND: Final = "sl:consent"
#: How long an approval lets shells and commands of the same session start.
CONSENT_VALIDITY_SECONDS: Final = 300.0
DEFAULT_CONSENT_TIMEOUT_SECONDS: Final = 120.0
END_BY_USER_SIGNAL: Final = "TERM"
END_BY_USER_MESSAGE: Final = "ended by the end user on the machine"

HELP_TEXT_MAX: Final = 2000
SIGNATURE_MAX_SKEW_SECONDS: Final = 300
TICKET_TITLE_MAX: Final = 200
FACT_TEXT_MAX: Final = 256
FACT_USERS_MAX: Final = 64

TOKEN_RE: Final = re.compile(r"sle1\.[a-z0-9]{12}\.[A-Za-z0-9]{32}\.[0-9a-f]{64}")
AGENT_NAME_RE: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
AGENT_ID_RE: Final = re.compile(r"ag-[a-z0-9]{16}")
CUSTOMER_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
LOCAL_USER_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,32}")
SESSION_ID_RE: Final = re.compile(r"s-[A-Za-z0-9]{22}")
TICKET_ID_RE: Final = re.compile(r"T-[0-9]{1,9}")
STAFF_NAME_RE: Final = re.compile(r"[A-Za-z0-9._@-]{1,64}")
STAFF_LEVEL_RE: Final = re.compile(r"[1-3]")
FINGERPRINT_RE: Final = re.compile(r"[0-9a-f]{64}")
TERM_TYPE_RE: Final = re.compile(r"[A-Za-z0-9._+-]{1,64}")

#: The only environment names the agent reads from a channel.
SESSION_ENV_NAMES: Final = (
    "SL_SESSION",
    "SL_STAFF",
    "SL_STAFF_LEVEL",
    "SL_TICKET",
    "SL_TICKET_TITLE",
    "SL_ROLE",
)

_ED25519_LINE_RE: Final = re.compile(
    r"ssh-ed25519 ([A-Za-z0-9+/]{68})(?: [\x21-\x7e][\x20-\x7e]{0,99})?"
)
_ED25519_BLOB_PREFIX: Final = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20"
# C0 controls, DEL and C1 controls: what a terminal could act on.
_CONTROL_RE: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")

#: The part a staff member asks to play in a session (``SL_ROLE``): each asks on its own.
ConsentRole = Literal["owner", "participant", "observer"]
CONSENT_ROLES: Final[tuple[ConsentRole, ...]] = ("owner", "participant", "observer")

ConsentDecision = Literal["approved", "denied", "timeout", "not_required"]
CONSENT_DECISIONS: Final[tuple[ConsentDecision, ...]] = (
    "approved",
    "denied",
    "timeout",
    "not_required",
)


def sanitize_text(text: str, max_len: int) -> str:
    """Return ``text`` with control characters replaced by spaces, cut to ``max_len``."""
    return _CONTROL_RE.sub(" ", text[:max_len])


def has_control_chars(text: str) -> bool:
    """Say whether ``text`` holds a character a terminal could act on."""
    return _CONTROL_RE.search(text) is not None


def cert_fingerprint(der: bytes) -> str:
    """SHA-256 of a DER certificate, lowercase hex, as carried by enrollment tokens."""
    return hashlib.sha256(der).hexdigest()


def iso_utc(timestamp: float) -> str:
    """Format a Unix time as ISO-8601 UTC with a ``Z`` suffix, to the second."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_iso_utc(text: object, field: str) -> datetime:
    """Parse an ISO-8601 UTC time; raise :class:`MessageError` naming ``field`` otherwise."""
    if not isinstance(text, str) or len(text) > 40:
        raise MessageError(f"{field} is not an ISO-8601 time")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise MessageError(f"{field} is not an ISO-8601 time") from None
    if moment.utcoffset() != timedelta(0):
        raise MessageError(f"{field} is not in UTC")
    return moment


@dataclass(frozen=True, slots=True)
class Ed25519PublicKey:
    """An OpenSSH ``ssh-ed25519`` public key line, checked and normalised."""

    raw: bytes

    @classmethod
    def parse(cls, line: object, field: str = "public key") -> Ed25519PublicKey:
        """Parse ``ssh-ed25519 BASE64 [comment]``; the comment is dropped."""
        if not isinstance(line, str):
            raise MessageError(f"{field} is not an ssh-ed25519 public key line")
        match = _ED25519_LINE_RE.fullmatch(line.strip())
        if match is None:
            raise MessageError(f"{field} is not an ssh-ed25519 public key line")
        try:
            blob = base64.b64decode(match.group(1), validate=True)
        except binascii.Error:
            raise MessageError(f"{field} is not valid base64") from None
        if len(blob) != len(_ED25519_BLOB_PREFIX) + 32 or not blob.startswith(_ED25519_BLOB_PREFIX):
            raise MessageError(f"{field} does not hold an Ed25519 key")
        return cls(raw=blob[len(_ED25519_BLOB_PREFIX) :])

    def serialize(self) -> str:
        """The OpenSSH public key line, without comment."""
        blob = _ED25519_BLOB_PREFIX + self.raw
        return "ssh-ed25519 " + base64.b64encode(blob).decode("ascii")


def require_match(pattern: re.Pattern[str], value: object, field: str) -> str:
    """Return ``value`` if it is a string matching ``pattern`` fully, else raise."""
    if not isinstance(value, str) or pattern.fullmatch(value) is None:
        raise MessageError(f"{field} is missing or has characters that are not allowed")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionEnv:
    """The environment the broker sends on every session channel it opens."""

    session: str
    staff: str
    staff_level: int
    ticket: str
    ticket_title: str = ""
    #: None when the broker sent no ``SL_ROLE`` (an older broker): the owner, asked once,
    #: and the ``sl:consent`` channel closes after its answer (no later withdrawal).
    role: ConsentRole | None = None

    @property
    def asked_role(self) -> ConsentRole:
        """The role the end user is asked about."""
        return self.role or "owner"

    @classmethod
    def parse(cls, env: Mapping[str, str]) -> SessionEnv:
        """Validate the ``SL_*`` variables of a channel; other names are ignored."""
        title = env.get("SL_TICKET_TITLE", "")
        if len(title) > TICKET_TITLE_MAX:
            raise MessageError(f"SL_TICKET_TITLE is longer than {TICKET_TITLE_MAX} characters")
        role: ConsentRole | None = None
        if "SL_ROLE" in env:
            raw_role = env["SL_ROLE"]
            if raw_role not in CONSENT_ROLES:
                raise MessageError("SL_ROLE is not one of owner, participant, observer")
            role = CONSENT_ROLES[CONSENT_ROLES.index(raw_role)]
        return cls(
            session=require_match(SESSION_ID_RE, env.get("SL_SESSION"), "SL_SESSION"),
            staff=require_match(STAFF_NAME_RE, env.get("SL_STAFF"), "SL_STAFF"),
            staff_level=int(
                require_match(STAFF_LEVEL_RE, env.get("SL_STAFF_LEVEL"), "SL_STAFF_LEVEL")
            ),
            ticket=require_match(TICKET_ID_RE, env.get("SL_TICKET"), "SL_TICKET"),
            # The title is free text shown to the end user: made inert, never refused for it.
            ticket_title=sanitize_text(title, TICKET_TITLE_MAX),
            role=role,
        )

    def to_env(self) -> dict[str, str]:
        """The mapping to pass as asyncssh ``env=`` when opening a channel."""
        env = {
            "SL_SESSION": self.session,
            "SL_STAFF": self.staff,
            "SL_STAFF_LEVEL": str(self.staff_level),
            "SL_TICKET": self.ticket,
            "SL_TICKET_TITLE": self.ticket_title,
        }
        if self.role is not None:
            env["SL_ROLE"] = self.role
        return env


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsentAnswer:
    """What ``sl:consent`` writes on stdout."""

    decision: ConsentDecision
    by: str | None
    at: datetime

    @property
    def allows(self) -> bool:
        """True when the session may start (approved, or no consent needed)."""
        return self.decision in ("approved", "not_required")

    @classmethod
    def parse(cls, data: bytes | str) -> ConsentAnswer:
        """Parse the JSON object written by ``sl:consent``."""
        obj = load_json_object(data, "consent answer", max_bytes=4096)
        decision = obj.get("decision")
        if decision not in CONSENT_DECISIONS:
            raise MessageError("consent answer has an unknown decision")
        by = obj.get("by")
        if by is not None:
            by = require_match(LOCAL_USER_RE, by, "consent answer 'by'")
        return cls(decision=decision, by=by, at=parse_iso_utc(obj.get("at"), "consent answer 'at'"))

    def serialize(self) -> bytes:
        """The JSON line written on the channel's stdout."""
        at = self.at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        body = {"decision": self.decision, "by": self.by, "at": at}
        return json.dumps(body, separators=(",", ":")).encode() + b"\n"


def load_json_object(data: bytes | str, what: str, *, max_bytes: int) -> dict[str, object]:
    """Decode a JSON object of at most ``max_bytes``; anything else is a MessageError."""
    if len(data) > max_bytes:
        raise MessageError(f"{what} is larger than {max_bytes} bytes")
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        raise MessageError(f"{what} is not valid JSON") from None
    if not isinstance(obj, dict):
        raise MessageError(f"{what} is not a JSON object")
    return obj
