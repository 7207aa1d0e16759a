"""The agent's Debian package, built once per test run by the same script as
``make agent-deb``."""

from __future__ import annotations

import atexit
import functools
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


@functools.cache
def build_agent_deb() -> Path:
    """Build the package into a directory of its own; the path of the .deb."""
    out = Path(tempfile.mkdtemp(prefix="secondline-deb-"))
    atexit.register(shutil.rmtree, out, True)
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "build_agent_deb.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.strip().splitlines()[-1])
