"""Publishing an agent package as a signed release: ``secondline agent publish FILE``.

The package is copied into ``agent_packages_dir`` (if it is not there already) with its
manifest (``FILE.manifest``: file, version, arch, SHA-256, size) and the manifest's detached
Ed25519 signature by the broker's release key (``FILE.manifest.sig``). The format and its
check on the agent are in agent.release; the release key is broker.keys.RELEASE_KEY.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.release import ReleaseManifest, sign_manifest
from broker.agents.packages import parse_package_name
from broker.errors import InputError

MANIFEST_SUFFIX = ".manifest"
SIGNATURE_SUFFIX = ".manifest.sig"


def publish(package: Path, packages_dir: Path, key: Ed25519PrivateKey) -> ReleaseManifest:
    """Sign ``package`` and place it, its manifest and signature in ``packages_dir``."""
    name = parse_package_name(package.name)
    if name is None:
        raise InputError(
            f"{package.name} is not an agent package name (secondline-agent_VERSION_ARCH.deb); "
            "publish the file `make agent-deb` built"
        )
    try:
        data = package.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {package}: {exc.strerror or exc}") from None
    manifest = ReleaseManifest(
        file=name.file,
        version=name.version,
        arch=name.arch,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
    )
    body = manifest.serialize()
    packages_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    target = packages_dir / name.file
    if not (target.exists() and os.path.samefile(target, package)):
        # Copy under a temporary name, then rename: the broker never serves half a file.
        partial = packages_dir / f".{name.file}.partial"
        shutil.copyfile(package, partial)
        partial.replace(target)
    _write_atomic(packages_dir / (name.file + MANIFEST_SUFFIX), body)
    _write_atomic(
        packages_dir / (name.file + SIGNATURE_SUFFIX), (sign_manifest(key, body) + "\n").encode()
    )
    return manifest


def _write_atomic(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    partial.replace(path)
