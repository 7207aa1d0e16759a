"""Digest chain, seal signing and parsing, chain file format, and key loading."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import io
import json
import subprocess
from pathlib import Path
from typing import Any, cast

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.transcript.chain import (
    SEAL_SIZE,
    ChainFileReader,
    DigestChain,
    chain_entry,
    chain_header_line,
    check_reason,
    format_utc,
    padded_seal,
    parse_chain_entry,
    parse_chain_header,
    parse_seal,
    pending_placeholder,
    sign_seal,
)
from broker.transcript.errors import InvalidValue, KeyFormatError, SealFormatError
from broker.transcript.keys import load_public_key, load_signing_key, public_key_fingerprint

SID = "s-" + "Q" * 22
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))


def seal(**changes: object) -> dict[str, object]:
    made = sign_seal(
        session_id=SID,
        event_count=3,
        final_hash=b"\x01" * 32,
        complete=True,
        end_reason="ended",
        now=1700000000.5,
        key=KEY,
    )
    return {**made.to_json(), **changes}


def test_chain_is_sha256_of_previous_and_line() -> None:
    """h0 hashes the header line; each h_i hashes h_{i-1} followed by the event line."""
    chain = DigestChain(b"header")
    h0 = hashlib.sha256(b"header").digest()
    assert chain.h0 == h0 == chain.head
    h1 = chain.add(b"event one")
    assert h1 == hashlib.sha256(h0 + b"event one").digest()
    assert chain.add(b"event two") == hashlib.sha256(h1 + b"event two").digest()
    assert chain.count == 2


def test_seal_signs_every_field() -> None:
    """The signature verifies, and changing any signed field breaks it."""
    made = parse_seal(json.dumps(seal()).encode())
    assert made is not None
    assert made.signature_valid(KEY.public_key())
    assert not made.signature_valid(OTHER.public_key())
    for field, value in (
        ("session_id", "s-" + "R" * 22),
        ("event_count", 4),
        ("final_hash", "02" * 32),
        ("complete", False),
        ("end_reason", "killed"),
        ("sealed_at", "2023-11-14T22:13:21Z"),
        ("key_fingerprint", public_key_fingerprint(OTHER.public_key())),
    ):
        changes = cast("dict[str, Any]", {field: value})
        assert not dataclasses.replace(made, **changes).signature_valid(KEY.public_key())


def test_signed_message_is_canonical() -> None:
    """The signed bytes are a fixed prefix and the fields as sorted compact JSON."""
    made = parse_seal(json.dumps(seal()).encode())
    assert made is not None
    message = made.signed_message()
    prefix, body = message.split(b"\n", 1)
    assert prefix == b"secondline-transcript-seal-v1"
    doc = json.loads(body)
    assert list(doc) == sorted(doc)
    assert b" " not in body
    assert doc["format"] == "secondline-seal"
    assert doc["sealed_at"] == "2023-11-14T22:13:20Z"
    assert "signature" not in doc


def test_garbled_signature_does_not_verify() -> None:
    """A signature that is not base64 of 64 bytes is simply invalid."""
    made = parse_seal(json.dumps(seal()).encode())
    assert made is not None
    assert not dataclasses.replace(made, signature="!!").signature_valid(KEY.public_key())
    short = base64.b64encode(b"x" * 10).decode()
    assert not dataclasses.replace(made, signature=short).signature_valid(KEY.public_key())


def test_placeholder_and_padding() -> None:
    """The placeholder and a padded seal both fill exactly the reserved size."""
    placeholder = pending_placeholder()
    assert len(placeholder) == SEAL_SIZE
    assert parse_seal(placeholder) is None
    made = parse_seal(json.dumps(seal()).encode())
    assert made is not None
    padded = padded_seal(made)
    assert len(padded) == SEAL_SIZE
    assert parse_seal(padded) == made
    assert parse_seal(made.encode()) == made


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"{", "not JSON"),
        (b"\xff", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"a": NaN}', "not JSON"),
        (b'{"format": "secondline-seal"}', "fields of a seal"),
        (b" " * 70000, "too large"),
    ],
)
def test_parse_seal_refuses_non_seals(data: bytes, reason: str) -> None:
    """Anything but a seal or the placeholder is a SealFormatError."""
    with pytest.raises(SealFormatError, match=reason):
        parse_seal(data)


@pytest.mark.parametrize(
    "changes",
    [
        {"format": "other"},
        {"version": 2},
        {"session_id": "s-bad"},
        {"final_hash": "XY" * 32},
        {"end_reason": "bad\nreason"},
        {"sealed_at": "yesterday"},
        {"key_fingerprint": "MD5:aa"},
        {"signature": "short"},
        {"event_count": -1},
        {"event_count": 2**53},
        {"event_count": "3"},
        {"event_count": True},
        {"complete": 1},
        {"session_id": 5},
    ],
)
def test_parse_seal_refuses_bad_fields(changes: dict[str, object]) -> None:
    """Each field is checked for its type and pattern."""
    with pytest.raises(SealFormatError):
        parse_seal(json.dumps(seal(**changes)).encode())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_parse_seal_raises_only_seal_format_errors(data: bytes) -> None:
    """Arbitrary bytes give a seal, None or SealFormatError."""
    with contextlib.suppress(SealFormatError):
        parse_seal(data)


def test_sign_seal_refuses_bad_reason_and_session() -> None:
    """End reasons are short plain text; session ids match the pattern."""
    with pytest.raises(InvalidValue):
        check_reason("")
    with pytest.raises(InvalidValue):
        check_reason("x" * 121)
    assert check_reason("ended by the end user on the machine")
    with pytest.raises(InvalidValue):
        sign_seal(
            session_id="nope",
            event_count=0,
            final_hash=b"",
            complete=True,
            end_reason="ended",
            now=0,
            key=KEY,
        )


def test_format_utc() -> None:
    """Seal times are ISO 8601 UTC to the second."""
    assert format_utc(0) == "1970-01-01T00:00:00Z"


def test_chain_file_lines() -> None:
    """The chain file's header and entries parse back; malformed ones do not."""
    h0 = hashlib.sha256(b"h").digest()
    head = chain_header_line(SID, h0)
    assert head.endswith(b"\n")
    assert parse_chain_header(head[:-1]) == (SID, h0)
    assert parse_chain_header(b"secondline-chain 2 x y") is None
    assert parse_chain_entry(chain_entry(h0)[:-1]) == h0
    assert parse_chain_entry(b"zz" * 32) is None
    assert parse_chain_entry(b"ab") is None


def test_chain_file_reader_stops_at_malformed_entry() -> None:
    """The reader yields digests in order and ends at the first malformed entry."""
    h0, h1, h2 = (hashlib.sha256(bytes([i])).digest() for i in range(3))
    data = chain_header_line(SID, h0) + chain_entry(h1) + b"garbage" * 10 + chain_entry(h2)
    reader = ChainFileReader(io.BytesIO(data))
    assert (reader.session_id, reader.h0) == (SID, h0)
    assert reader.next_digest() == h1
    assert reader.next_digest() is None
    assert reader.next_digest() is None
    assert reader.entries == 1
    broken = ChainFileReader(io.BytesIO(b"not a chain file\n" + chain_entry(h1)))
    assert broken.h0 is None
    assert broken.next_digest() is None


# -- keys -------------------------------------------------------------------------------


def _pem_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_load_public_key_formats(tmp_path: Path) -> None:
    """PEM, OpenSSH and a private PEM all give the same public key."""
    openssh = KEY.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    private_pem = KEY.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    private_ssh = KEY.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    expected = public_key_fingerprint(KEY.public_key())
    for data in (_pem_public(KEY), openssh + b" comment\n", private_pem, private_ssh):
        assert public_key_fingerprint(load_public_key(data)) == expected
    path = tmp_path / "key.pub"
    path.write_bytes(openssh)
    assert public_key_fingerprint(load_public_key(path)) == expected
    assert public_key_fingerprint(load_signing_key(private_pem).public_key()) == expected


def test_fingerprint_matches_ssh_keygen(tmp_path: Path) -> None:
    """The fingerprint is the one ssh-keygen -l shows for the same key."""
    path = tmp_path / "key.pub"
    path.write_bytes(
        KEY.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
    )
    try:
        shown = subprocess.run(
            ["ssh-keygen", "-l", "-f", str(path)], capture_output=True, check=True, text=True
        ).stdout
    except FileNotFoundError:
        pytest.skip("ssh-keygen is not installed")
    assert public_key_fingerprint(KEY.public_key()) in shown


def test_load_key_refusals(tmp_path: Path) -> None:
    """Non-keys, other algorithms, huge and missing files are KeyFormatError."""
    ecdsa = ec.generate_private_key(ec.SECP256R1())
    ecdsa_pub = ecdsa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    ecdsa_priv = ecdsa.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    for data in (b"garbage", b"ssh-ed25519 !!!", ecdsa_pub, ecdsa_priv, b"x" * 20000):
        with pytest.raises(KeyFormatError):
            load_public_key(data)
    for data in (b"garbage", ecdsa_priv, _pem_public(KEY)):
        with pytest.raises(KeyFormatError):
            load_signing_key(data)
    with pytest.raises(KeyFormatError, match="cannot read"):
        load_public_key(tmp_path / "missing.pub")
