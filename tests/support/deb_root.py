"""A throwaway Debian root for package tests: the host's root file system under a
copy-on-write overlay, entered with chroot in a private mount namespace.

Why an overlay and not a fresh mmdebstrap/debootstrap root: it takes no download and no
minute of building, and the lower layer is a real Debian 12 system with what the package
depends on. Everything the package does lands in the upper directory, so "removal leaves
nothing behind" is a plain listing of that directory. Each command mounts the overlay in a
new mount namespace (``unshare --mount``), so no mount outlives it, even when a test
fails. Needs root (the tests run as root in CI).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

#: Mount the overlay and the kernel file systems, then run "$@" chrooted into it. Every
#: value comes in as an argument: nothing is pasted into the script.
_ENTER = r"""
set -eu
upper=$1 work=$2 merged=$3
shift 3
mount -t overlay overlay -o "lowerdir=/,upperdir=$upper,workdir=$work" "$merged"
mount -t proc proc "$merged/proc"
mount --rbind /dev "$merged/dev"
mount -t tmpfs tmpfs "$merged/run"
exec chroot "$merged" "$@"
"""

#: Written by dpkg, apt, debconf and man-db about every package; not the package's own traces.
BOOKKEEPING = (
    "var/lib/dpkg/",
    "var/log/",
    "var/cache/debconf/",
    "var/cache/apt/",
    "var/cache/man/",
)
#: Backups adduser/deluser leave of the account files (the files themselves must return to
#: what they were).
ACCOUNT_BACKUPS = ("etc/passwd-", "etc/group-", "etc/shadow-", "etc/gshadow-")


@dataclass
class DebRoot:
    """One overlay root under ``base``."""

    base: Path

    def __post_init__(self) -> None:
        for name in ("upper", "work", "merged"):
            (self.base / name).mkdir(parents=True, exist_ok=True)

    @property
    def upper(self) -> Path:
        return self.base / "upper"

    def environment(self, env: dict[str, str] | None = None) -> dict[str, str]:
        """The environment commands in the root get (nothing of the test's own)."""
        return {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            "HOME": "/root",
            "DEBIAN_FRONTEND": "noninteractive",
            **(env or {}),
        }

    def argv(self, *argv: str) -> list[str]:
        """The host command that runs ``argv`` inside the root as root."""
        return [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            _ENTER,
            "enter",
            str(self.upper),
            str(self.base / "work"),
            str(self.base / "merged"),
            *argv,
        ]

    def run(
        self,
        *argv: str,
        env: dict[str, str] | None = None,
        input_text: str | None = None,
        timeout: float = 300,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the root as root; its status and output (never raises)."""
        return subprocess.run(
            self.argv(*argv),
            capture_output=True,
            text=True,
            env=self.environment(env),
            input=input_text,
            timeout=timeout,
            check=False,
        )

    def ok(
        self, *argv: str, env: dict[str, str] | None = None, input_text: str | None = None
    ) -> str:
        """``run`` that must succeed; its stdout."""
        result = self.run(*argv, env=env, input_text=input_text)
        assert result.returncode == 0, (argv, result.returncode, result.stdout, result.stderr)
        return result.stdout

    def put(self, source: Path, path: str) -> None:
        """Place a host file at ``path`` in the root (written into the upper layer)."""
        dest = self.upper / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)

    def mode(self, path: str) -> tuple[str, str, str]:
        """Octal mode, owner and group of ``path`` inside the root."""
        out = self.ok("stat", "-c", "%a %U %G", path).split()
        return out[0], out[1], out[2]

    def traces(self) -> list[str]:
        """What the root holds beyond the host's files: each path of the upper layer that
        is not bookkeeping, not an account-file backup, and not identical to the host's."""
        found = []
        for path in sorted(self.upper.rglob("*")):
            rel = path.relative_to(self.upper).as_posix()
            if path.is_dir() and not path.is_symlink():
                continue
            if rel.startswith(BOOKKEEPING) or rel in ACCOUNT_BACKUPS:
                continue
            info = path.lstat()
            if stat.S_ISCHR(info.st_mode) and info.st_rdev == 0:
                found.append(f"{rel} (deleted from the host's files)")
                continue
            host = Path("/") / rel
            if _same_file(path, host):
                continue
            found.append(rel)
        return found

    def cleanup(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.is_symlink() or b.is_symlink():
            return a.is_symlink() and b.is_symlink() and os.readlink(a) == os.readlink(b)
        return a.is_file() and b.is_file() and a.read_bytes() == b.read_bytes()
    except OSError:
        return False
