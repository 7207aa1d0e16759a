"""What an OpenID Connect ID token proves, checked without I/O (joserfc, Authlib's JOSE).

:func:`verify_id_token` accepts a token only when it is signed by one of the provider's
published keys with an asymmetric algorithm (``alg: none`` and HMAC are never taken, so a
client secret cannot forge one), names our issuer exactly and our client among its
audiences (as ``azp`` too when there are several), is not expired nor issued in the future,
and carries the nonce this browser's sign-in started with (a token replayed from another
sign-in has another nonce). Its ``amr`` says whether the provider did multi-factor.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from broker.directory.rules import Person

# Asymmetric only: with HS256 the client secret (which we hold) would be a signing key.
ALGORITHMS: Final = [
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "EdDSA",
]
LEEWAY: Final = 60  # seconds of clock difference allowed between provider and broker
MAX_TOKEN: Final = 16_384
_USER_RE: Final = re.compile(r"^[a-z][a-z0-9._-]{0,63}$")


class TokenRefused(Exception):
    """The ID token is not acceptable; ``reason`` is for the audit log, not the browser."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class IdToken:
    subject: str
    claims: dict[str, object]

    def mfa(self, mfa_values: frozenset[str]) -> bool:
        amr = self.claims.get("amr")
        return isinstance(amr, list) and any(str(v) in mfa_values for v in amr)


def verify_id_token(
    token: str, keys: dict[str, object], *, issuer: str, client_id: str, nonce: str, now: float
) -> IdToken:
    if len(token) > MAX_TOKEN:
        raise TokenRefused("the ID token is too long")
    try:
        key_set = KeySet.import_key_set(keys)  # type: ignore[arg-type]
        decoded = jwt.decode(token, key_set, algorithms=ALGORITHMS)
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise TokenRefused(f"ID token signature or format: {type(exc).__name__}") from None
    claims = dict(decoded.claims)
    registry = jwt.JWTClaimsRegistry(
        now=int(now),
        leeway=LEEWAY,
        iss={"essential": True, "value": issuer},
        aud={"essential": True, "value": client_id},
        sub={"essential": True},
        exp={"essential": True},
        iat={"essential": True},
        nonce={"essential": True, "value": nonce},
    )
    try:
        registry.validate(claims)
    except JoseError as exc:
        raise TokenRefused(f"ID token claims: {type(exc).__name__} {exc}"[:300]) from None
    iat = claims.get("iat")
    if isinstance(iat, int | float) and iat > now + LEEWAY:
        raise TokenRefused("ID token issued in the future")
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    if len(audiences) > 1 and claims.get("azp") != client_id:
        raise TokenRefused("ID token for several audiences without us as azp")
    subject = str(claims["sub"])
    if not subject or len(subject) > 255:
        raise TokenRefused("ID token subject is empty or too long")
    return IdToken(subject, claims)


def person_of(token: IdToken, groups_claim: str) -> Person | None:
    """The signed-in person as the directory rules see one; None without a usable name."""
    claims = token.claims
    name = str(claims.get("preferred_username") or "").strip().lower()
    if "@" in name:
        name = name.split("@", 1)[0]
    if not _USER_RE.fullmatch(name):
        return None
    raw_groups = claims.get(groups_claim)
    groups = raw_groups if isinstance(raw_groups, list) else []
    display = str(claims.get("name") or "")[:200]
    return Person(
        dn=token.subject,
        name=name,
        display_name=display,
        groups=frozenset(str(g).strip().lower() for g in groups[:1000] if str(g).strip()),
    )
