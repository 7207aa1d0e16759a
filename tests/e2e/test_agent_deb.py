"""The agent's Debian package: built by tools/build_agent_deb.py (``make agent-deb``),
checked by lintian, installed into a throwaway root, removed and purged without a trace."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.deb_root import DebRoot
from tests.support.packages import build_agent_deb

pytestmark = pytest.mark.e2e

UNIT = "/lib/systemd/system/secondline-agent.service"
DROP_IN_DIR = "/etc/systemd/system/secondline-agent.service.d"


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
    result = root.run("systemd-analyze", "verify", UNIT)
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
