"""Enrollment wire units: the token, the request, the answer and the error body.

Pure (no I/O, no clock) and strict: unknown keys, wrong types and characters outside the
contract's sets are refused with :class:`MessageError` (:class:`TokenError` for tokens).
The broker imports these classes to parse what agents send and to build its answers;
the agent's HTTPS client lives in :mod:`agent.broker_client`.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import string
from dataclasses import dataclass, field
from typing import Final, Literal
from urllib.parse import urlsplit

from cryptography import x509

from agent.errors import MessageError, TokenError
from agent.facts import Facts
from agent.protocol import (
    AGENT_ID_RE,
    AGENT_NAME_RE,
    CUSTOMER_RE,
    FINGERPRINT_RE,
    TOKEN_RE,
    Ed25519PublicKey,
    cert_fingerprint,
    load_json_object,
    require_match,
    sanitize_text,
)

TOKEN_PREFIX: Final = "sle1"  # noqa: S105 - the format's name, not a secret
REQUEST_MAX_BYTES: Final = 64 * 1024
ANSWER_MAX_BYTES: Final = 64 * 1024
CERT_PEM_MAX: Final = 16 * 1024
URL_MAX: Final = 2048
ERROR_MESSAGE_MAX: Final = 500

ConsentPolicy = Literal["attended", "unattended"]
CONSENT_POLICIES: Final[tuple[ConsentPolicy, ...]] = ("attended", "unattended")

_TOKEN_ID_ALPHABET: Final = string.ascii_lowercase + string.digits
_TOKEN_SECRET_ALPHABET: Final = string.ascii_letters + string.digits
_ERROR_CODE_RE: Final = re.compile(r"[a-z0-9_]{1,64}")
_PEM_RE: Final = re.compile(
    r"-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+)-----END CERTIFICATE-----"
)
_URL_CHARS_RE: Final = re.compile(r"[\x21-\x7e]+")
_NAME_BAD_CHARS_RE: Final = re.compile(r"[^a-z0-9._-]+")
_NOT_A_TOKEN: Final = (
    "this is not a Secondline enrollment token: it looks like sle1.<12 letters or digits>."  # noqa: S105 - a message, not a secret
    "<32 letters or digits>.<64 hex digits>; copy it again from the helpdesk"
)


@dataclass(frozen=True, slots=True)
class EnrollmentToken:
    """``sle1.<id>.<secret>.<fingerprint>``; its ``repr`` never shows the secret."""

    token_id: str
    secret: str = field(repr=False)
    fingerprint: str

    @classmethod
    def parse(cls, text: object) -> EnrollmentToken:
        """Parse a token as typed by a user (surrounding whitespace is ignored)."""
        if not isinstance(text, str):
            raise TokenError(_NOT_A_TOKEN)
        candidate = text.strip()
        if TOKEN_RE.fullmatch(candidate) is None:
            raise TokenError(_NOT_A_TOKEN)
        _, token_id, secret, fingerprint = candidate.split(".")
        return cls(token_id=token_id, secret=secret, fingerprint=fingerprint)

    @classmethod
    def generate(cls, fingerprint: str) -> EnrollmentToken:
        """A new random token pinning the certificate with SHA-256 ``fingerprint``."""
        if FINGERPRINT_RE.fullmatch(fingerprint) is None:
            raise MessageError("the certificate fingerprint is not 64 lowercase hex digits")
        return cls(
            token_id="".join(secrets.choice(_TOKEN_ID_ALPHABET) for _ in range(12)),
            secret="".join(secrets.choice(_TOKEN_SECRET_ALPHABET) for _ in range(32)),
            fingerprint=fingerprint,
        )

    def serialize(self) -> str:
        """The token text."""
        return f"{TOKEN_PREFIX}.{self.token_id}.{self.secret}.{self.fingerprint}"


def default_agent_name(hostname: str) -> str:
    """The agent name derived from a host name: lowercased and reduced to the allowed set."""
    name = _NAME_BAD_CHARS_RE.sub("-", hostname.lower().split(".", 1)[0] or hostname.lower())
    name = name.lstrip("._-")[:63].rstrip("._-")
    return name if AGENT_NAME_RE.fullmatch(name) else "agent"


def _check_keys(
    obj: dict[str, object],
    allowed: frozenset[str],
    what: str,
    *,
    ignore_unknown: bool = False,
) -> None:
    for key in obj:
        if key not in allowed and not ignore_unknown:
            raise MessageError(f"{what}: unknown key {key[:40]!r}")
    for key in sorted(allowed):
        if key not in obj:
            raise MessageError(f"{what}: missing key {key!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class EnrollmentRequest:
    """The body of ``POST /agent/v1/enroll``."""

    token: EnrollmentToken
    name: str
    public_key: Ed25519PublicKey
    facts: Facts

    def __post_init__(self) -> None:
        require_match(AGENT_NAME_RE, self.name, "name")

    @classmethod
    def parse(cls, data: bytes | str) -> EnrollmentRequest:
        """Parse and validate a request body."""
        obj = load_json_object(data, "enrollment request", max_bytes=REQUEST_MAX_BYTES)
        _check_keys(obj, _REQUEST_KEYS, "enrollment request")
        try:
            token = EnrollmentToken.parse(obj["token"])
        except TokenError:
            raise MessageError("enrollment request: the token is malformed") from None
        return cls(
            token=token,
            name=require_match(AGENT_NAME_RE, obj["name"], "name"),
            public_key=Ed25519PublicKey.parse(obj["public_key"], "public_key"),
            facts=Facts.from_dict(obj["facts"]),
        )

    def serialize(self) -> bytes:
        """The JSON body."""
        body = {
            "token": self.token.serialize(),
            "name": self.name,
            "public_key": self.public_key.serialize(),
            "facts": self.facts.to_dict(),
        }
        return json.dumps(body, separators=(",", ":")).encode()


_REQUEST_KEYS: Final = frozenset(("token", "name", "public_key", "facts"))
_ANSWER_KEYS: Final = frozenset(
    ("agent_id", "name", "customer", "consent", "broker_ssh_key", "tunnel_url", "tls_cert_pem")
)
#: Brokers before signed self-updates send no release key; such an agent never self-updates.
#: Keys the agent does not know are ignored in the broker's answers (not in what the broker
#: parses from agents): a newer broker may add fields, and an agent in the field must still
#: enroll with it (forward compatibility). The fields it knows are checked as strictly.


def check_url(value: object, field_name: str, scheme: str) -> str:
    """Validate an absolute URL with the given scheme and a host; return it unchanged."""
    if not isinstance(value, str) or len(value) > URL_MAX or not _URL_CHARS_RE.fullmatch(value):
        raise MessageError(f"{field_name} is not a valid {scheme}:// URL")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise MessageError(f"{field_name} is not a valid {scheme}:// URL") from None
    if parts.scheme != scheme or not parts.hostname or parts.username or parts.password:
        raise MessageError(f"{field_name} is not a valid {scheme}:// URL")
    if parts.fragment or (port is not None and port == 0):
        raise MessageError(f"{field_name} is not a valid {scheme}:// URL")
    return value


def pem_to_der(pem: object, field_name: str = "tls_cert_pem") -> bytes:
    """Decode one PEM certificate; refuse anything else."""
    if not isinstance(pem, str) or len(pem) > CERT_PEM_MAX:
        raise MessageError(f"{field_name} is not a PEM certificate")
    match = _PEM_RE.fullmatch(pem.strip())
    if match is None:
        raise MessageError(f"{field_name} is not one PEM certificate")
    try:
        der = base64.b64decode("".join(match.group(1).split()), validate=True)
        x509.load_der_x509_certificate(der)
    except ValueError:
        raise MessageError(f"{field_name} is not a valid certificate") from None
    return der


@dataclass(frozen=True, slots=True, kw_only=True)
class EnrollmentAnswer:
    """The broker's 200 answer to an enrollment request."""

    agent_id: str
    name: str
    customer: str
    consent: ConsentPolicy
    broker_ssh_key: Ed25519PublicKey
    tunnel_url: str
    tls_cert_pem: str
    release_key: Ed25519PublicKey | None = None

    def __post_init__(self) -> None:
        require_match(AGENT_ID_RE, self.agent_id, "agent_id")
        require_match(AGENT_NAME_RE, self.name, "name")
        require_match(CUSTOMER_RE, self.customer, "customer")
        if self.consent not in CONSENT_POLICIES:
            raise MessageError("consent is neither 'attended' nor 'unattended'")
        check_url(self.tunnel_url, "tunnel_url", "wss")
        pem_to_der(self.tls_cert_pem)

    @property
    def tls_cert_fingerprint(self) -> str:
        """SHA-256 of the certificate, to compare with the token's."""
        return cert_fingerprint(pem_to_der(self.tls_cert_pem))

    @classmethod
    def parse(cls, data: bytes | str) -> EnrollmentAnswer:
        """Parse and validate an answer body."""
        obj = load_json_object(data, "enrollment answer", max_bytes=ANSWER_MAX_BYTES)
        _check_keys(obj, _ANSWER_KEYS, "enrollment answer", ignore_unknown=True)
        consent = obj["consent"]
        if consent not in CONSENT_POLICIES:
            raise MessageError("consent is neither 'attended' nor 'unattended'")
        return cls(
            agent_id=require_match(AGENT_ID_RE, obj["agent_id"], "agent_id"),
            name=require_match(AGENT_NAME_RE, obj["name"], "name"),
            customer=require_match(CUSTOMER_RE, obj["customer"], "customer"),
            consent=consent,
            broker_ssh_key=Ed25519PublicKey.parse(obj["broker_ssh_key"], "broker_ssh_key"),
            tunnel_url=check_url(obj["tunnel_url"], "tunnel_url", "wss"),
            tls_cert_pem=_require_str(obj["tls_cert_pem"], "tls_cert_pem"),
            release_key=(
                Ed25519PublicKey.parse(obj["release_key"], "release_key")
                if "release_key" in obj
                else None
            ),
        )

    def serialize(self) -> bytes:
        """The JSON body."""
        body = {
            "agent_id": self.agent_id,
            "name": self.name,
            "customer": self.customer,
            "consent": self.consent,
            "broker_ssh_key": self.broker_ssh_key.serialize(),
            "tunnel_url": self.tunnel_url,
            "tls_cert_pem": self.tls_cert_pem,
        }
        if self.release_key is not None:
            body["release_key"] = self.release_key.serialize()
        return json.dumps(body, separators=(",", ":")).encode()


def _require_str(value: object, field_name: str) -> str:
    if not isinstance(value, str):
        raise MessageError(f"{field_name} is not a string")
    return value


@dataclass(frozen=True, slots=True)
class ErrorBody:
    """``{"error": {"code": ..., "message": ...}}``, the body of every 4xx/5xx answer."""

    code: str
    message: str

    @classmethod
    def parse(cls, data: bytes | str) -> ErrorBody:
        """Parse an error body; the message is made inert for a terminal."""
        obj = load_json_object(data, "error answer", max_bytes=ANSWER_MAX_BYTES)
        error = obj.get("error")
        if not isinstance(error, dict):
            raise MessageError("error answer has no 'error' object")
        code = require_match(_ERROR_CODE_RE, error.get("code"), "error code")
        message = error.get("message")
        if not isinstance(message, str):
            raise MessageError("error answer has no message")
        return cls(code=code, message=sanitize_text(message, ERROR_MESSAGE_MAX).strip())

    def serialize(self) -> bytes:
        """The JSON body."""
        body = {"error": {"code": self.code, "message": self.message}}
        return json.dumps(body, separators=(",", ":")).encode()
