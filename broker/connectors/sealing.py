"""Connector credentials encrypted at rest (pure).

An API token or a webhook's shared secret is stored as ``fernet:<token>``: Fernet
(AES-128-CBC with HMAC-SHA256, from ``cryptography``) under a key derived with HKDF from the
broker's audit signing key. Deriving it from key material every broker node holds already
means no new key file to create, back up or copy between nodes, and a database dump alone
does not reveal a credential. A value stored before credentials were encrypted (no
``fernet:`` prefix) is read as it is and sealed when the broker next starts
(:meth:`broker.connectors.store.ConnectorStore.seal_plain`).
"""

from __future__ import annotations

import base64
from typing import Final

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SEALED: Final = "fernet:"
# Names what the derived key is for, so the same signing key never yields it for anything else.
_INFO: Final = b"secondline connector credentials v1"


class CredentialUnreadable(ValueError):
    """A stored credential does not decrypt with this broker's keys."""


class CredentialSealer:
    """Seals and opens connector credentials with a key derived from ``signing_key``."""

    def __init__(self, signing_key: ed25519.Ed25519PrivateKey) -> None:
        raw = signing_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(raw)
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    def seal(self, credential: str) -> str:
        return SEALED + self._fernet.encrypt(credential.encode()).decode("ascii")

    def open(self, stored: str) -> str:
        if not is_sealed(stored):
            return stored
        try:
            return self._fernet.decrypt(stored[len(SEALED) :].encode("ascii")).decode()
        except (InvalidToken, UnicodeError) as exc:
            raise CredentialUnreadable(
                "the stored credential does not decrypt with this broker's keys (were the "
                "keys replaced?); `connector remove` the connector and add it again"
            ) from exc


def is_sealed(stored: str) -> bool:
    return stored.startswith(SEALED)
