"""deploy/secondline-node@.service passes `systemd-analyze verify`: the unit a cluster node
runs under, as an operator installs it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "secondline-node@.service"
# Where the unit expects the installed command (docs/cluster.md); the test points it at
# this checkout's, the one substitution made: verify checks that ExecStart's file exists.
INSTALLED = "/opt/secondline/bin/secondline"


def test_the_node_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """systemd accepts every line of the node's template unit (verified as an instance),
    and its command line is the one a node is started with."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is needed (Debian's systemd package)")
    text = UNIT.read_text()
    assert f"ExecStart={INSTALLED} --data-dir /var/lib/secondline/%i serve --node %i" in text
    here = Path(sys.executable).with_name("secondline")
    assert here.is_file(), here
    unit = tmp_path / UNIT.name
    unit.write_text(text.replace(INSTALLED, str(here)))
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    ours = [line for line in result.stderr.splitlines() if "secondline-node" in line]
    assert result.returncode == 0, result.stderr
    assert ours == []
