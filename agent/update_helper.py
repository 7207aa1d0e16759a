"""``secondline-agent install-update``: root's half of the packaged agent's self-update.

The package's service runs the agent as an unprivileged account that cannot install
packages. When it has verified a release, it puts the package with its manifest and
signature into ``updates/`` of its state dir and writes ``updates/install-request`` (the
package's file name). systemd's ``secondline-agent-update.path`` sees that file and starts
``secondline-agent-update.service``, which runs this as root:

1. The request is read and removed (the path unit must not fire again for it).
2. Everything the unprivileged account wrote is distrusted: package, manifest and signature
   are copied into a directory only root can reach, and checked again there against the
   release key **root** pinned (``/var/lib/secondline-agent-update/release_key``, by the
   package's postinst after enrollment; never the copy in the agent's ``state.json``,
   which that account could change).
3. Only a newer version than the installed one goes in, or the rollback of the update
   this helper itself made last (``/var/lib/secondline-agent-update/last.json``): so the
   agent's account can never install an older, signed but vulnerable, release.
4. ``dpkg --install`` runs here, in this unit of its own; the package's postinst restarts
   the agent. A refusal is written to ``updates/install-result`` for the agent to report.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from agent.errors import AgentError, MessageError, ReleaseError
from agent.protocol import Ed25519PublicKey
from agent.release import (
    MANIFEST_MAX_BYTES,
    PACKAGE_MAX_BYTES,
    VERSION_RE,
    check_digest,
    install_command,
    verify_manifest,
    version_key,
)

PIN: Final = Path("/var/lib/secondline-agent-update/release_key")
RECORD: Final = PIN.with_name("last.json")
REQUEST: Final = "install-request"
RESULT: Final = "install-result"
#: The unit file that says this helper is installed (agent.updater looks for it).
PATH_UNIT: Final = Path("/lib/systemd/system/secondline-agent-update.path")
#: A rollback is taken this long after the update it undoes (the agent's longest
#: rollback_after_seconds, plus time to start), never later.
ROLLBACK_WINDOW_SECONDS: Final = 3600.0 + 600.0


def may_install(
    installed: str | None, offered: str, last: dict[str, object] | None, now: float
) -> str | None:
    """None when ``offered`` may replace ``installed``; else the reason it may not."""
    if installed is None:
        return "secondline-agent is not installed as a package here"
    if version_key(offered) > version_key(installed):
        return None
    at = last.get("at") if last is not None else None
    if (
        last is not None
        and last.get("to") == installed
        and last.get("from") == offered
        and isinstance(at, int | float)
        and 0 <= now - at <= ROLLBACK_WINDOW_SECONDS
    ):
        return None  # the rollback of this helper's own last update, soon after it
    if version_key(offered) == version_key(installed):
        return f"{offered} is installed already"
    return f"{offered} is older than the installed {installed}: downgrades are refused"


def _read_root_file(path: Path, max_bytes: int) -> bytes:
    """A file only root can have written (owner root, not group- or world-writable)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if info.st_uid != 0 or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise ReleaseError(f"{path} is not root's alone; the update was not installed")
        return handle.read(max_bytes)


def _copy_in(source: Path, dest: Path, max_bytes: int) -> bytes:
    """Copy a file the agent's account wrote (no symlink followed) into root's dir."""
    fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise ReleaseError(f"{source} is not a regular file; the update was not installed")
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ReleaseError(f"{source} is too large; the update was not installed")
    dest.write_bytes(data)
    return data


def installed_version() -> str | None:
    result = subprocess.run(
        ["dpkg-query", "--show", "--showformat=${Version}", "secondline-agent"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    version = result.stdout.strip()
    return version if result.returncode == 0 and VERSION_RE.fullmatch(version) else None


def install_requested(
    state_dir: Path,
    *,
    pin: Path = PIN,
    record: Path = RECORD,
    installed: Callable[[], str | None] = installed_version,
    run: Callable[[list[str]], int] = lambda argv: subprocess.run(argv, check=False).returncode,
) -> str:
    """Act on ``updates/install-request``; a sentence saying what happened."""
    updates = state_dir / "updates"
    try:
        name = _copy_request(updates / REQUEST)
    except FileNotFoundError:
        return "no update was requested"
    try:
        message = _install(updates, name, pin, record, installed, run)
    except (AgentError, OSError) as exc:
        reason = str(exc) if isinstance(exc, AgentError) else f"{exc.filename}: {exc.strerror}"
        _result(state_dir, reason)
        return reason
    return message


def _copy_request(path: Path) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(1024)
    path.unlink()
    return data.decode("ascii", "replace").strip()


def _install(
    updates: Path,
    name: str,
    pin: Path,
    record: Path,
    installed: Callable[[], str | None],
    run: Callable[[list[str]], int],
) -> str:
    try:
        key = Ed25519PublicKey.parse(_read_root_file(pin, 1024).decode("ascii").strip())
    except FileNotFoundError:
        raise ReleaseError(
            f"root has no release key pinned ({pin}); run: sudo dpkg-reconfigure secondline-agent"
        ) from None
    except (MessageError, UnicodeDecodeError):
        raise ReleaseError(f"{pin} is not a release key; reinstall the package") from None
    work = Path(tempfile.mkdtemp(prefix="secondline-agent-update-"))  # 0700, root's
    try:
        deb = work / "package.deb"
        manifest = _copy_in(updates / f"{name}.manifest", work / "manifest", MANIFEST_MAX_BYTES)
        signature = _copy_in(updates / f"{name}.manifest.sig", work / "sig", MANIFEST_MAX_BYTES)
        verified = verify_manifest(key.raw, manifest, signature.decode("ascii", "replace"))
        if verified.file != name:
            raise ReleaseError("the request names another package than its manifest")
        data = _copy_in(updates / name, deb, PACKAGE_MAX_BYTES)
        check_digest(verified, len(data), hashlib.sha256(data).hexdigest())
        last = _last(record)
        current = installed()
        now = time.time()
        refusal = may_install(current, verified.version, last, now)
        if refusal is not None:
            raise ReleaseError(f"{refusal}; the update was not installed")
        record.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        rollback = current is not None and version_key(verified.version) < version_key(current)
        # After a rollback nothing may be rolled "back" again: the record goes.
        body = {} if rollback else {"from": current, "to": verified.version, "at": now}
        record.write_text(json.dumps(body))
        status = run(install_command(str(deb)))
        if status != 0:
            raise ReleaseError(f"dpkg failed with status {status}; see the journal of the unit")
        return f"installed {verified.version} over {current}"
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _last(record: Path) -> dict[str, object] | None:
    try:
        data = json.loads(_read_root_file(record, 1024))
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _result(state_dir: Path, reason: str) -> None:
    """Tell the agent why (a file of its own account, so its checks accept it)."""
    owner = state_dir.stat()
    path = state_dir / "updates" / RESULT
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(" ".join(reason.split())[:300] + "\n")
    os.chown(path, owner.st_uid, owner.st_gid)
