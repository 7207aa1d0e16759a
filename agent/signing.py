"""Signed agent requests outside the tunnel (``POST /agent/v1/help``).

The agent signs ``b"POST\\n/agent/v1/help\\n" + timestamp + b"\\n" + sha256hex(body)``
with its Ed25519 key; the broker verifies with the public key it pinned at enrollment and
refuses timestamps more than 300 s off. Pure: the caller passes ``now``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PublicKey as CryptoEd25519PublicKey,
)

from agent.errors import MessageError, SignatureError
from agent.protocol import (
    AGENT_ID_HEADER,
    HELP_PATH,
    HELP_TEXT_MAX,
    SIGNATURE_HEADER,
    SIGNATURE_MAX_SKEW_SECONDS,
    TICKET_ID_RE,
    TIMESTAMP_HEADER,
    Ed25519PublicKey,
    load_json_object,
    require_match,
)

_TIMESTAMP_RE: Final = re.compile(r"[0-9]{1,12}")
_SIGNATURE_RE: Final = re.compile(r"[A-Za-z0-9+/]{86}==")
_HELP_CONTROL_RE: Final = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def signing_payload(method: str, path: str, timestamp: str, body: bytes) -> bytes:
    """The bytes an agent signs for a request."""
    digest = hashlib.sha256(body).hexdigest()
    return f"{method}\n{path}\n{timestamp}\n{digest}".encode("ascii")


def sign_request(
    key: Ed25519PrivateKey, agent_id: str, body: bytes, now: float, *, path: str = HELP_PATH
) -> dict[str, str]:
    """The headers that authenticate a ``POST`` of ``body`` to ``path`` by this agent."""
    timestamp = str(int(now))
    signature = key.sign(signing_payload("POST", path, timestamp, body))
    return {
        AGENT_ID_HEADER: agent_id,
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: base64.b64encode(signature).decode("ascii"),
    }


def verify_request(
    public_key: Ed25519PublicKey,
    *,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    now: float,
    path: str = HELP_PATH,
) -> None:
    """Check a signed ``POST``; raise :class:`SignatureError` saying what is wrong."""
    if timestamp is None or _TIMESTAMP_RE.fullmatch(timestamp) is None:
        raise SignatureError("the request has no valid timestamp")
    if abs(int(timestamp) - now) > SIGNATURE_MAX_SKEW_SECONDS:
        raise SignatureError("the request's timestamp is too far from the broker's clock")
    if signature is None or _SIGNATURE_RE.fullmatch(signature) is None:
        raise SignatureError("the request has no valid signature")
    try:
        raw = base64.b64decode(signature, validate=True)
    except binascii.Error:
        raise SignatureError("the request has no valid signature") from None
    verifier = CryptoEd25519PublicKey.from_public_bytes(public_key.raw)
    try:
        verifier.verify(raw, signing_payload("POST", path, timestamp, body))
    except InvalidSignature:
        raise SignatureError("the request's signature does not verify") from None


@dataclass(frozen=True, slots=True)
class HelpRequest:
    """``{"text": ...}``: what the end user asks for help with."""

    text: str

    def __post_init__(self) -> None:
        if not isinstance(self.text, str) or not self.text.strip():
            raise MessageError("the help text is empty")
        if len(self.text) > HELP_TEXT_MAX:
            raise MessageError(f"the help text is longer than {HELP_TEXT_MAX} characters")
        if _HELP_CONTROL_RE.search(self.text):
            raise MessageError("the help text holds control characters")

    @classmethod
    def parse(cls, data: bytes | str) -> HelpRequest:
        """Parse a request body."""
        obj = load_json_object(data, "help request", max_bytes=4 * HELP_TEXT_MAX + 64)
        if set(obj) != {"text"}:
            raise MessageError("help request: only the key 'text' is allowed")
        text = obj["text"]
        if not isinstance(text, str):
            raise MessageError("help request: text is not a string")
        return cls(text)

    def serialize(self) -> bytes:
        """The JSON body."""
        return json.dumps({"text": self.text}, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class HelpAnswer:
    """``{"ticket": "T-1042"}``: the ticket opened for a help request."""

    ticket: str

    @classmethod
    def parse(cls, data: bytes | str) -> HelpAnswer:
        """Parse an answer body."""
        obj = load_json_object(data, "help answer", max_bytes=4096)
        return cls(require_match(TICKET_ID_RE, obj.get("ticket"), "ticket"))

    def serialize(self) -> bytes:
        """The JSON body."""
        return json.dumps({"ticket": self.ticket}, separators=(",", ":")).encode()
