"""The broker's keys: TLS certificate, SSH host key, the key it shows agents, and the
Ed25519 keys that sign transcripts and the audit log. All private files are 0600."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import asyncssh
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

SSH_HOST_KEY: Final = "ssh_host_ed25519"
AGENT_CLIENT_KEY: Final = "agent_client_ed25519"
TRANSCRIPT_KEY: Final = "transcript_ed25519.pem"
AUDIT_KEY: Final = "audit_ed25519.pem"
#: Signs agent releases (broker.agents.releases); never the TLS key, so a stolen or
#: replaced TLS certificate cannot push software onto agents.
RELEASE_KEY: Final = "release_ed25519.pem"


def write_private(path: Path, data: bytes) -> None:
    """Create a file readable by its owner only, refusing to overwrite."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _tls_names(public_url: str) -> list[x509.GeneralName]:
    host = urlsplit(public_url).hostname or "localhost"
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    try:
        addr = ipaddress.ip_address(host)
        if str(addr) != "127.0.0.1":
            names.append(x509.IPAddress(addr))
    except ValueError:
        if host != "localhost":
            names.append(x509.DNSName(host))
    return names


def make_tls_certificate(public_url: str, now: dt.datetime) -> tuple[bytes, bytes]:
    """A self-signed ECDSA P-256 certificate (browsers do not take Ed25519) for 5 years."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Secondline broker")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=5 * 365))
        .add_extension(x509.SubjectAlternativeName(_tls_names(public_url)), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def certificate_fingerprint(cert_pem: bytes) -> str:
    """SHA-256 of the certificate's DER form, lowercase hex: what enrollment tokens carry."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _ed25519_pem() -> bytes:
    return ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def create_keys(keys_dir: Path, public_url: str, now: dt.datetime, *, with_tls: bool) -> None:
    """Generate every key init needs; refuses to overwrite an existing one."""
    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if with_tls:
        cert_pem, key_pem = make_tls_certificate(public_url, now)
        write_private(keys_dir / "tls.key", key_pem)
        write_private(keys_dir / "tls.crt", cert_pem)
    for name in (SSH_HOST_KEY, AGENT_CLIENT_KEY):
        key = asyncssh.generate_private_key("ssh-ed25519")
        write_private(keys_dir / name, key.export_private_key())
        write_private(keys_dir / f"{name}.pub", key.export_public_key())
    write_private(keys_dir / TRANSCRIPT_KEY, _ed25519_pem())
    write_private(keys_dir / AUDIT_KEY, _ed25519_pem())
    write_private(keys_dir / RELEASE_KEY, _ed25519_pem())


def release_key(keys_dir: Path) -> ed25519.Ed25519PrivateKey:
    """The release signing key, created on first use for data dirs made before it existed."""
    path = keys_dir / RELEASE_KEY
    with contextlib.suppress(FileExistsError):
        write_private(path, _ed25519_pem())
    return load_ed25519(path)


def load_ed25519(path: Path) -> ed25519.Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 key")
    return key


def public_pem(key: ed25519.Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass(frozen=True)
class BrokerKeys:
    """Key material loaded once at start-up and handed to whoever needs it."""

    ssh_host_key: asyncssh.SSHKey
    agent_client_key: asyncssh.SSHKey
    transcript_key: ed25519.Ed25519PrivateKey
    audit_key: ed25519.Ed25519PrivateKey
    tls_cert_pem: bytes
    release_key: ed25519.Ed25519PrivateKey

    @property
    def tls_fingerprint(self) -> str:
        return certificate_fingerprint(self.tls_cert_pem)


def load_keys(keys_dir: Path, tls_cert_path: Path) -> BrokerKeys:
    return BrokerKeys(
        ssh_host_key=asyncssh.read_private_key(str(keys_dir / SSH_HOST_KEY)),
        agent_client_key=asyncssh.read_private_key(str(keys_dir / AGENT_CLIENT_KEY)),
        transcript_key=load_ed25519(keys_dir / TRANSCRIPT_KEY),
        audit_key=load_ed25519(keys_dir / AUDIT_KEY),
        tls_cert_pem=tls_cert_path.read_bytes(),
        release_key=release_key(keys_dir),
    )
