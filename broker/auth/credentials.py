"""Password hashing (argon2id) and API token minting and parsing (pure except randomness)."""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets
import string
from dataclasses import dataclass
from typing import Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_HASHER: Final = PasswordHasher()  # argon2id with the library's current recommended cost
_ALPHABET: Final = string.ascii_letters + string.digits
_LOWER: Final = string.ascii_lowercase + string.digits
TOKEN_RE: Final = re.compile(r"^slt_([a-z0-9]{12})_([A-Za-z0-9]{40})$")
MIN_PASSWORD: Final = 10


@functools.cache
def _dummy_hash() -> str:
    """Verified when the user is unknown, so both answers cost the same time. Made on first
    use, not at import: every CLI command imports this module, and one argon2 hash costs
    tens of milliseconds of CPU (a second under load) that most commands never need."""
    return _HASHER.hash("not a real password, only for timing")


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"the password must have at least {MIN_PASSWORD} characters")
    if len(password) > 1024:
        raise ValueError("the password is longer than 1024 characters")
    return _HASHER.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    try:
        return _HASHER.verify(stored or _dummy_hash(), password[:1024]) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


def random_string(length: int, alphabet: str = _ALPHABET) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def random_id(length: int) -> str:
    return random_string(length, _LOWER)


@dataclass(frozen=True)
class MintedToken:
    token_id: str
    secret_hash: str
    plaintext: str


def mint_api_token() -> MintedToken:
    token_id = random_id(12)
    secret = random_string(40)
    return MintedToken(token_id, digest_secret(secret), f"slt_{token_id}_{secret}")


def digest_secret(secret: str) -> str:
    # Tokens carry 238 bits of randomness, so a plain SHA-256 cannot be brute-forced.
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_api_token(text: str) -> tuple[str, str] | None:
    """Split a bearer token into (id, secret), or None when it is not one of ours."""
    match = TOKEN_RE.fullmatch(text)
    return (match.group(1), match.group(2)) if match else None


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(digest_secret(secret), stored_hash)
