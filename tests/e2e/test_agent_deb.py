"""The agent's Debian package: built by tools/build_agent_deb.py (``make agent-deb``),
checked by lintian, installed into a throwaway root, removed and purged without a trace."""

from __future__ import annotations

import hashlib
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.protocol import Ed25519PublicKey
from agent.release import ReleaseManifest, sign_manifest
from tests.support.agent_release import release_deb
from tests.support.deb_root import DebRoot
from tests.support.packages import build_agent_deb

pytestmark = pytest.mark.e2e

UNIT = "/lib/systemd/system/secondline-agent.service"
DROP_IN_DIR = "/etc/systemd/system/secondline-agent.service.d"
UPDATE_PATH_UNIT = "/lib/systemd/system/secondline-agent-update.path"
UPDATE_SERVICE = "/lib/systemd/system/secondline-agent-update.service"
UPDATES = "/var/lib/secondline-agent/updates"


@pytest.fixture
def root(tmp_path: Path) -> Iterator[DebRoot]:
    r = DebRoot(tmp_path / "root")
    try:
        yield r
    finally:
        r.cleanup()


def test_lintian_finds_nothing_beyond_the_documented_override() -> None:
    """lintian, pedantic tags included, has nothing to say about the package."""
    deb = build_agent_deb()
    result = subprocess.run(
        ["lintian", "--pedantic", "--fail-on", "error,warning,info,pedantic", str(deb)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    tags = [line for line in result.stdout.splitlines() if line[:2] in ("E:", "W:", "I:", "P:")]
    assert result.returncode == 0, result.stdout + result.stderr
    assert tags == []


def _verify_unit(root: DebRoot) -> None:
    result = root.run("systemd-analyze", "verify", UNIT, UPDATE_PATH_UNIT, UPDATE_SERVICE)
    ours = [line for line in result.stderr.splitlines() if "secondline-agent" in line]
    assert result.returncode == 0, result.stderr
    assert ours == []


def _exposure(root: DebRoot) -> float:
    result = root.run("systemd-analyze", "security", "--offline=true", "secondline-agent.service")
    found = re.search(
        r"Overall exposure level for secondline-agent.service: ([0-9.]+)", result.stdout
    )
    assert found is not None, result.stdout + result.stderr
    return float(found.group(1))


def test_install_remove_and_purge_leave_nothing_behind(root: DebRoot) -> None:
    """dpkg installs the files with their modes, the account, the private state dir and the
    enabled unit (which systemd-analyze accepts, alone and with the root drop-in); remove
    keeps the state, purge takes everything, the account included."""
    root.put(build_agent_deb(), "/tmp/secondline-agent.deb")
    root.ok("dpkg", "-i", "/tmp/secondline-agent.deb")

    assert root.mode("/usr/bin/secondline-agent") == ("755", "root", "root")
    assert root.mode("/opt/secondline-agent/lib/agent/cli.py") == ("644", "root", "root")
    assert root.mode("/lib/systemd/system/secondline-agent.service") == ("644", "root", "root")
    assert root.mode("/var/lib/secondline-agent") == ("700", "secondline-agent", "secondline-agent")
    account = root.ok("getent", "passwd", "secondline-agent").strip().split(":")
    assert int(account[2]) < 1000, account  # a system account
    assert account[5:] == ["/nonexistent", "/bin/bash"]
    assert root.ok("getent", "shadow", "secondline-agent").split(":")[1] in ("*", "!")
    wants = "/etc/systemd/system/multi-user.target.wants/secondline-agent.service"
    assert root.ok("readlink", wants).strip() == UNIT
    watch = "/etc/systemd/system/multi-user.target.wants/secondline-agent-update.path"
    assert root.ok("readlink", watch).strip() == UPDATE_PATH_UNIT

    # The vendored libraries load on the distribution's python3; root's command runs as the
    # agent's account, whose state dir it is.
    result = root.run("secondline-agent", "status")
    assert result.returncode == 1
    assert "not enrolled" in result.stderr
    imports = "import asyncssh, websockets, cryptography.hazmat.bindings._rust; print('ok')"
    assert root.ok("python3", "-IB", "-c", f"import sys; sys.path.insert(0, "
                   f"'/opt/secondline-agent/lib'); {imports}").strip() == "ok"  # fmt: skip

    _verify_unit(root)
    assert _exposure(root) <= 2.0  # systemd's own rating of the sandbox: "OK"
    root.ok("mkdir", "-p", DROP_IN_DIR)
    root.ok("ln", "-s", "/usr/share/secondline-agent/sessions-as-login-user.conf", DROP_IN_DIR)
    _verify_unit(root)
    assert _exposure(root) > 9.0  # root, unsandboxed: what sessions as another account need

    # Remove keeps the enrollment and the account; purge does not.
    root.ok("sh", "-c", "umask 077; echo keep > /var/lib/secondline-agent/marker")
    root.ok("dpkg", "--remove", "secondline-agent")
    assert root.run("test", "-e", "/usr/bin/secondline-agent").returncode == 1
    assert root.run("test", "-e", "/opt/secondline-agent").returncode == 1
    assert root.run("test", "-e", "/var/lib/secondline-agent/marker").returncode == 0
    assert root.run("getent", "passwd", "secondline-agent").returncode == 0

    root.ok("dpkg", "--purge", "secondline-agent")
    root.ok("rm", "/tmp/secondline-agent.deb")
    assert root.run("getent", "passwd", "secondline-agent").returncode == 2
    assert root.traces() == []


def _request(root: DebRoot, key: Ed25519PrivateKey, deb: Path, *, tamper: bool = False) -> str:
    """What the unprivileged agent leaves for root: the package, its signed manifest and
    the request, all written by the agent's account; then root's update command runs."""
    data = deb.read_bytes()
    manifest = ReleaseManifest(
        file=deb.name,
        version=deb.name.split("_")[1],
        arch="amd64",
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
    ).serialize()
    files = {
        deb.name: data[:-1] + b"\0" if tamper else data,
        deb.name + ".manifest": manifest,
        deb.name + ".manifest.sig": sign_manifest(key, manifest).encode(),
        "install-request": deb.name.encode() + b"\n",
    }
    for name, content in files.items():
        local = deb.with_name(f"upload-{name}")
        local.write_bytes(content)
        root.put(local, f"/tmp/{name}")
        root.ok("install", "-m", "0600", "-o", "secondline-agent", "-g", "secondline-agent",
                f"/tmp/{name}", f"{UPDATES}/{name}")  # fmt: skip
        root.ok("rm", f"/tmp/{name}")
    out = root.ok("secondline-agent", "install-update", "--state-dir", "/var/lib/secondline-agent")
    assert root.run("test", "-e", f"{UPDATES}/install-request").returncode == 1
    return out


def test_root_installs_only_a_verified_newer_update(root: DebRoot, tmp_path: Path) -> None:
    """The update unit's command, as root: a package changed after signing and an older
    signed version are refused (the reason left for the agent, in its own file); the newer
    signed one is installed with dpkg; the pin is root's, not the agent's state.json."""
    root.put(build_agent_deb(), "/tmp/secondline-agent.deb")
    root.ok("dpkg", "-i", "/tmp/secondline-agent.deb")
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    root.ok("install", "-d", "-m", "0700", "/var/lib/secondline-agent-update")
    root.ok("sh", "-c", "umask 077; cat > /var/lib/secondline-agent-update/release_key",
            input_text=Ed25519PublicKey(raw=raw).serialize() + "\n")  # fmt: skip
    root.ok("install", "-d", "-m", "0700", "-o", "secondline-agent", "-g", "secondline-agent",
            UPDATES)  # fmt: skip
    newer, older = release_deb("0.2.0", tmp_path), release_deb("0.0.9", tmp_path)

    def version() -> str:
        return root.ok("dpkg-query", "-W", "-f=${Version}", "secondline-agent")

    assert "SHA-256" in _request(root, key, newer, tamper=True)
    assert root.mode(f"{UPDATES}/install-result")[1] == "secondline-agent"
    assert "SHA-256" in root.ok("cat", f"{UPDATES}/install-result")
    assert "downgrades are refused" in _request(root, key, older)
    assert version() == "0.1.0"
    # Signed by another key than root's pin: refused, whatever the agent's files say.
    assert "does not verify" in _request(root, Ed25519PrivateKey.generate(), newer)
    assert _request(root, key, newer).splitlines()[-1] == "installed 0.2.0 over 0.1.0"
    assert version() == "0.2.0"
