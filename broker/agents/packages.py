"""Agent packages the broker hands out: ``secondline-agent_VERSION_ARCH.deb`` files in
``agent_packages_dir`` (default ``DATA_DIR/agent-packages``), served without sign-in at
the versioned path ``/agent/packages/VERSION/FILE``.

Their SHA-256 goes into the install command (broker.agents.install_command), so a package
swapped on the way, or on this disk after the command was printed, is refused by the
machine installing it. Names are parsed here (pure); the thin part lists the directory
and hashes files, remembering each digest by name, size and mtime.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization

#: The versions ``make agent-deb`` makes (the project's version: numbers and dots).
PACKAGE_NAME_RE: Final = re.compile(
    r"secondline-agent_([0-9]{1,6}(?:\.[0-9]{1,6}){0,3})_([a-z0-9]{1,16})\.deb"
)
PACKAGES_PREFIX: Final = "/agent/packages"
DEB_CONTENT_TYPE: Final = "application/vnd.debian.binary-package"


@dataclass(frozen=True, slots=True)
class PackageName:
    """What a package's file name says."""

    file: str
    version: str
    arch: str

    @property
    def version_key(self) -> tuple[int, ...]:
        return tuple(int(part) for part in self.version.split("."))

    @property
    def path(self) -> str:
        """The versioned path the broker serves it at."""
        return f"{PACKAGES_PREFIX}/{self.version}/{self.file}"


def parse_package_name(file: str) -> PackageName | None:
    """The name's version and architecture, or None for any other file."""
    found = PACKAGE_NAME_RE.fullmatch(file)
    if found is None:
        return None
    return PackageName(file, found.group(1), found.group(2))


def newest(names: list[PackageName], arch: str) -> PackageName | None:
    """The highest version for ``arch``."""
    fitting = [n for n in names if n.arch == arch]
    return max(fitting, key=lambda n: n.version_key) if fitting else None


def spki_pin(cert_pem: bytes) -> str:
    """``sha256//BASE64`` of the certificate's public key: what ``curl --pinnedpubkey``
    takes (curl pins a key, not a certificate digest)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    der = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256//" + base64.b64encode(hashlib.sha256(der).digest()).decode("ascii")


@dataclass(frozen=True, slots=True)
class PackageFile:
    """A package on disk with its digest."""

    name: PackageName
    size: int
    sha256: str


class PackageShelf:
    """The packages directory; digests are computed once per file version."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._digests: dict[tuple[str, int, int], str] = {}

    def names(self) -> list[PackageName]:
        try:
            entries = list(self.directory.iterdir())
        except FileNotFoundError:
            return []
        parsed = (parse_package_name(p.name) for p in entries if p.is_file())
        return [n for n in parsed if n is not None]

    def file(self, name: PackageName) -> PackageFile:
        """Size and SHA-256 of one package (blocking: call it in a thread)."""
        path = self.directory / name.file
        info = path.stat()
        key = (name.file, info.st_size, info.st_mtime_ns)
        digest = self._digests.get(key)
        if digest is None:
            sha = hashlib.sha256()
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    sha.update(block)
            digest = sha.hexdigest()
            self._digests[key] = digest
        return PackageFile(name, info.st_size, digest)


PACKAGE_SHELF: Final = web.AppKey("agent_package_shelf", PackageShelf)


#: What ``secondline agent publish`` writes beside a package (broker.agents.releases).
RELEASE_SUFFIXES: Final = {
    ".manifest": "application/json",
    ".manifest.sig": "text/plain; charset=us-ascii",
}


async def package_handler(request: web.Request) -> web.StreamResponse:
    """``GET /agent/packages/{version}/{file}``: the file, if its name says that version;
    also the package's signed release manifest and signature (``FILE.manifest[.sig]``)."""
    file = request.match_info["file"]
    content_type = DEB_CONTENT_TYPE
    for suffix, kind in RELEASE_SUFFIXES.items():
        if file.endswith(suffix):
            file, content_type = file.removesuffix(suffix), kind
            break
    name = parse_package_name(file)
    if name is None or name.version != request.match_info["version"]:
        raise web.HTTPNotFound(text="no such agent package\n")
    path = request.app[PACKAGE_SHELF].directory / request.match_info["file"]
    if not path.is_file():
        raise web.HTTPNotFound(text="no such agent package\n")
    return web.FileResponse(path, headers={"Content-Type": content_type})
