"""Ed25519 keys for sealing and verifying transcripts, and their fingerprints.

The fingerprint is OpenSSH's: ``SHA256:`` and the unpadded base64 of the SHA-256 of the
key's SSH wire form, so ``ssh-keygen -lf key.pub`` shows the same string for the same key.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Final

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from broker.transcript.errors import KeyFormatError

MAX_KEY_FILE: Final = 16384


def public_key_fingerprint(key: Ed25519PublicKey) -> str:
    """OpenSSH-style fingerprint of ``key``: ``SHA256:<base64 without padding>``."""
    line = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    blob = base64.b64decode(line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def public_key_document(key: Ed25519PublicKey) -> str:
    """The public key as an auditor keeps it: two comment lines naming it and its
    fingerprint, then the PEM. OpenSSL and :func:`load_public_key` skip the lines before
    ``-----BEGIN``, so the file is used as it is."""
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")
    return (
        "Secondline transcript signing key (Ed25519, public half)\n"
        f"fingerprint {public_key_fingerprint(key)}\n{pem}"
    )


def public_key_beside(path: Path) -> Path:
    """Where ``transcript export`` puts the public key next to an exported file."""
    path = Path(path)
    return path.with_name(path.name + ".pub.pem")


def _read(source: Path | bytes) -> bytes:
    if isinstance(source, bytes):
        data = source
    else:
        try:
            with open(source, "rb") as fh:
                data = fh.read(MAX_KEY_FILE + 1)
        except OSError as exc:
            raise KeyFormatError(f"cannot read the key file {source}: {exc.strerror}") from None
    if len(data) > MAX_KEY_FILE:
        raise KeyFormatError("the key file is too large to be an Ed25519 key")
    return data


def load_public_key(source: Path | bytes) -> Ed25519PublicKey:
    """Read an Ed25519 public key: PEM, an OpenSSH ``ssh-ed25519`` line, or a private PEM.

    A private key is accepted so that ``verify`` works on the broker host with the key
    the broker signs with; only its public half is used.
    """
    data = _read(source).strip()
    key: object = None
    try:
        if data.startswith(b"ssh-"):
            key = serialization.load_ssh_public_key(data)
        elif b"PRIVATE KEY" in data:
            key = _private(data).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise KeyFormatError("this is not a public key in PEM or OpenSSH format") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFormatError("this key is not an Ed25519 key")
    return key


def _private(data: bytes) -> Ed25519PrivateKey:
    if data.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----"):
        key: object = serialization.load_ssh_private_key(data, password=None)
    else:
        key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFormatError("this key is not an Ed25519 key")
    return key


def load_signing_key(source: Path | bytes) -> Ed25519PrivateKey:
    """Read an unencrypted Ed25519 private key (PKCS#8 PEM or OpenSSH format)."""
    try:
        return _private(_read(source).strip())
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise KeyFormatError("this is not an unencrypted Ed25519 private key") from None
