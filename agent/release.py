"""Signed agent releases and the self-update decision (pure: no clock, no files, no network).

A release is a ``secondline-agent_VERSION_ARCH.deb`` with two files beside it, written by
``secondline agent package publish FILE``:

* ``FILE.manifest``: JSON ``{"file", "version", "arch", "sha256", "size"}``;
* ``FILE.manifest.sig``: the base64 Ed25519 signature, by the broker's *release key* (not
  its TLS key), of ``RELEASE_SIGNATURE_CONTEXT + manifest bytes``.

The agent trusts a package only when the manifest's signature verifies with the release
public key pinned at enrollment, the manifest names a version newer than the installed one,
and the downloaded bytes have the manifest's size and SHA-256. The caller performs the I/O
this module decides on and passes in ``now`` where time matters.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from enum import Enum
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from agent.errors import MessageError, ReleaseError
from agent.protocol import load_json_object

#: Domain separation: a signature over a manifest can never be replayed as anything else.
RELEASE_SIGNATURE_CONTEXT: Final = b"secondline-agent-release-v1\n"
#: As the broker's package names (broker.agents.packages): numbers and dots only.
VERSION_RE: Final = re.compile(r"[0-9]{1,6}(?:\.[0-9]{1,6}){0,3}")
ARCH_RE: Final = re.compile(r"[a-z0-9]{1,16}")
SHA256_RE: Final = re.compile(r"[0-9a-f]{64}")
SIGNATURE_RE: Final = re.compile(r"[A-Za-z0-9+/]{86}==")
#: A package larger than this is refused before it is downloaded.
PACKAGE_MAX_BYTES: Final = 512 * 1024 * 1024
MANIFEST_MAX_BYTES: Final = 4096
#: A new version that has not reconnected this long after its install is rolled back.
ROLLBACK_AFTER_SECONDS: Final = 120.0


def version_key(version: str) -> tuple[int, ...]:
    """The version as numbers, so 0.10 is newer than 0.9; refuses anything else."""
    if VERSION_RE.fullmatch(version) is None:
        raise MessageError(f"{version!r} is not an agent version (numbers and dots)")
    parts = tuple(int(p) for p in version.split("."))
    # 1.0 and 1.0.0 are the same version: trailing zeros do not make one newer.
    while len(parts) > 1 and parts[-1] == 0:
        parts = parts[:-1]
    return parts


@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseManifest:
    """What a release's signature vouches for."""

    file: str
    version: str
    arch: str
    sha256: str
    size: int

    def __post_init__(self) -> None:
        version_key(self.version)
        if ARCH_RE.fullmatch(self.arch) is None:
            raise MessageError("release manifest: arch is not a Debian architecture")
        if self.file != f"secondline-agent_{self.version}_{self.arch}.deb":
            raise MessageError("release manifest: file does not name its version and arch")
        if SHA256_RE.fullmatch(self.sha256) is None:
            raise MessageError("release manifest: sha256 is not 64 lowercase hex digits")
        if not 0 < self.size <= PACKAGE_MAX_BYTES:
            raise MessageError("release manifest: size is out of range")

    @classmethod
    def parse(cls, data: bytes) -> ReleaseManifest:
        obj = load_json_object(data, "release manifest", max_bytes=MANIFEST_MAX_BYTES)
        keys = {"file", "version", "arch", "sha256", "size"}
        if set(obj) != keys:
            raise MessageError("release manifest: keys must be " + ", ".join(sorted(keys)))
        strings = {k: obj[k] for k in keys - {"size"}}
        if not all(isinstance(v, str) for v in strings.values()):
            raise MessageError("release manifest: file, version, arch, sha256 must be strings")
        size = obj["size"]
        if not isinstance(size, int) or isinstance(size, bool):
            raise MessageError("release manifest: size is not an integer")
        return cls(
            file=str(obj["file"]),
            version=str(obj["version"]),
            arch=str(obj["arch"]),
            sha256=str(obj["sha256"]),
            size=size,
        )

    def serialize(self) -> bytes:
        body = {
            "file": self.file,
            "version": self.version,
            "arch": self.arch,
            "sha256": self.sha256,
            "size": self.size,
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("ascii")


def sign_manifest(key: Ed25519PrivateKey, manifest_bytes: bytes) -> str:
    """The detached signature (base64) of a manifest's exact bytes."""
    return base64.b64encode(key.sign(RELEASE_SIGNATURE_CONTEXT + manifest_bytes)).decode()


def verify_manifest(
    release_key_raw: bytes, manifest_bytes: bytes, signature: str
) -> ReleaseManifest:
    """The manifest, once its signature verifies with the pinned release key."""
    text = signature.strip()
    if SIGNATURE_RE.fullmatch(text) is None:
        raise ReleaseError("the release signature is malformed; the package was not installed")
    try:
        raw = base64.b64decode(text, validate=True)
        Ed25519PublicKey.from_public_bytes(release_key_raw).verify(
            raw, RELEASE_SIGNATURE_CONTEXT + manifest_bytes
        )
    except (InvalidSignature, binascii.Error, ValueError):
        raise ReleaseError(
            "the release signature does not verify with the broker's release key; "
            "the package was not installed"
        ) from None
    try:
        return ReleaseManifest.parse(manifest_bytes)
    except MessageError as exc:
        raise ReleaseError(f"{exc}; the package was not installed") from None


def check_package(manifest: ReleaseManifest, data: bytes) -> None:
    """Refuse downloaded bytes that are not the ones the manifest names."""
    check_digest(manifest, len(data), hashlib.sha256(data).hexdigest())


def check_digest(manifest: ReleaseManifest, size: int, sha256: str) -> None:
    """Refuse a download (its size and SHA-256) that is not the package the manifest names."""
    if size != manifest.size:
        raise ReleaseError(
            f"the downloaded package has {size} bytes, the signed manifest says "
            f"{manifest.size}; the package was not installed"
        )
    if sha256 != manifest.sha256:
        raise ReleaseError(
            "the downloaded package's SHA-256 is not the signed manifest's; "
            "the package was not installed"
        )


class Verdict(Enum):
    """What to do with an offered release."""

    INSTALL = "install"
    WAIT = "wait"  # a session is live: ask again at a quiet moment
    REFUSE = "refuse"  # never install this offer (audited by the caller)
    NOTHING = "nothing"  # nothing newer on offer


@dataclass(frozen=True, slots=True)
class UpdateDecision:
    verdict: Verdict
    reason: str


def decide_update(
    *, installed: str, arch: str, offered: ReleaseManifest, live_sessions: int
) -> UpdateDecision:
    """Whether to install a verified release now, later, or never."""
    if offered.arch != arch:
        return UpdateDecision(
            Verdict.REFUSE, f"the offered package is for {offered.arch}, this machine is {arch}"
        )
    have, get = version_key(installed), version_key(offered.version)
    if get < have:
        return UpdateDecision(
            Verdict.REFUSE,
            f"the broker offers {offered.version}, older than the installed {installed}: "
            "downgrades are refused",
        )
    if get == have:
        return UpdateDecision(Verdict.NOTHING, f"{installed} is installed already")
    if live_sessions > 0:
        return UpdateDecision(
            Verdict.WAIT, f"{live_sessions} session(s) live; {offered.version} waits for them"
        )
    return UpdateDecision(Verdict.INSTALL, f"installing {offered.version} over {installed}")


def install_command(deb_path: str) -> list[str]:
    """The argv that installs a verified package (no shell: the path is one argument)."""
    return ["dpkg", "--install", "--", deb_path]


#: The transient unit dpkg runs in under systemd (see :func:`install_argv`).
INSTALL_UNIT: Final = "secondline-agent-update"


def install_argv(
    deb_path: str, *, update_command: str | None, is_root: bool, systemd: bool
) -> list[str] | None:
    """How to install a verified package; None when this agent cannot (no root, no command).

    An admin's ``update_command`` gets the path as its one argument. As root, ``dpkg``
    installs it; under systemd it runs in a transient unit of its own, because the
    package's postinst restarts the agent's service, and systemd would kill a dpkg that
    ran inside the service it restarts, half way through.
    """
    if update_command is not None:
        return [update_command, deb_path]
    if not is_root:
        return None
    if not systemd:
        return install_command(deb_path)
    return [
        "systemd-run",
        "--quiet",
        "--collect",
        "--wait",
        f"--unit={INSTALL_UNIT}",
        "--",
        *install_command(deb_path),
    ]


def rollback_due(
    *,
    installed_at: float,
    reconnected: bool,
    now: float,
    after: float = ROLLBACK_AFTER_SECONDS,
) -> bool:
    """Whether a new version that has not reconnected is past its time and must go."""
    return not reconnected and now - installed_at >= after


#: ``uname -m`` names to Debian's architecture names (the package's file name carries one).
_DEBIAN_ARCH: Final = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "armv7l": "armhf",
    "i686": "i386",
    "ppc64le": "ppc64el",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


def debian_arch(machine: str) -> str | None:
    """The Debian architecture of a ``platform.machine()``; None when there is no package."""
    return _DEBIAN_ARCH.get(machine)


def package_path(version: str, arch: str) -> str:
    """Where the broker serves a version's package (manifest and signature beside it)."""
    return f"/agent/packages/{version}/secondline-agent_{version}_{arch}.deb"


# -- the messages of the signed update requests (docs/protocol.md, "Signed releases") ------

UPDATE_PATH: Final = "/agent/v1/update"
UPDATE_REPORT_PATH: Final = "/agent/v1/update/report"
REPORT_OUTCOMES: Final = frozenset(("installed", "refused", "rolled_back"))
REPORT_REASON_MAX: Final = 300
_REASON_CONTROL_RE: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True, slots=True)
class UpdateQuery:
    """``{"version", "arch"}``: what the agent runs, asking what the broker offers."""

    version: str
    arch: str

    @classmethod
    def parse(cls, data: bytes) -> UpdateQuery:
        obj = load_json_object(data, "update query", max_bytes=1024)
        if set(obj) != {"version", "arch"}:
            raise MessageError("update query: keys must be arch, version")
        version, arch = obj["version"], obj["arch"]
        if not isinstance(version, str) or VERSION_RE.fullmatch(version) is None:
            raise MessageError("update query: version is not an agent version")
        if not isinstance(arch, str) or ARCH_RE.fullmatch(arch) is None:
            raise MessageError("update query: arch is not a Debian architecture")
        return cls(version, arch)

    def serialize(self) -> bytes:
        return json.dumps({"version": self.version, "arch": self.arch}).encode()


@dataclass(frozen=True, slots=True)
class UpdateReport:
    """``{"version", "outcome", "reason"}``: what the agent did with an offer (audited)."""

    version: str
    outcome: str
    reason: str

    @classmethod
    def parse(cls, data: bytes) -> UpdateReport:
        obj = load_json_object(data, "update report", max_bytes=4096)
        if set(obj) != {"version", "outcome", "reason"}:
            raise MessageError("update report: keys must be outcome, reason, version")
        version, outcome, reason = obj["version"], obj["outcome"], obj["reason"]
        # An unparseable offer has no trustworthy version: the agent reports "unknown".
        if not isinstance(version, str) or (
            version != "unknown" and VERSION_RE.fullmatch(version) is None
        ):
            raise MessageError("update report: version is not an agent version")
        if outcome not in REPORT_OUTCOMES:
            raise MessageError("update report: outcome is not installed, refused or rolled_back")
        if (
            not isinstance(reason, str)
            or len(reason) > REPORT_REASON_MAX
            or _REASON_CONTROL_RE.search(reason)
        ):
            raise MessageError(
                f"update report: reason is not a line of at most {REPORT_REASON_MAX} characters"
            )
        return cls(version, str(outcome), reason)

    def serialize(self) -> bytes:
        body = {"version": self.version, "outcome": self.outcome, "reason": self.reason}
        return json.dumps(body).encode()


@dataclass(frozen=True, slots=True)
class UpdateOffer:
    """The broker's answer to an update query: the newest published release, unverified.

    Keys the agent does not know are ignored (a newer broker may add some); the path must
    be the versioned package path, so an offer can never point the download elsewhere.
    """

    path: str
    manifest: bytes
    signature: str

    @classmethod
    def parse(cls, data: bytes) -> UpdateOffer | None:
        obj = load_json_object(data, "update offer", max_bytes=4 * MANIFEST_MAX_BYTES)
        offer = obj.get("offer")
        if offer is None:
            return None
        if not isinstance(offer, dict):
            raise MessageError("update offer: offer is not an object")
        path, manifest, signature = offer.get("path"), offer.get("manifest"), offer.get("signature")
        if not isinstance(path, str) or _OFFER_PATH_RE.fullmatch(path) is None:
            raise MessageError("update offer: path is not an agent package's versioned path")
        if not isinstance(manifest, str) or len(manifest) > MANIFEST_MAX_BYTES:
            raise MessageError("update offer: manifest is not a string of at most 4096 bytes")
        if not isinstance(signature, str) or len(signature) > MANIFEST_MAX_BYTES:
            raise MessageError("update offer: signature is not a string")
        return cls(path, manifest.encode("utf-8"), signature)


_OFFER_PATH_RE: Final = re.compile(
    r"/agent/packages/(?P<v>[0-9.]{1,27})/secondline-agent_(?P=v)_[a-z0-9]{1,16}\.deb"
)
