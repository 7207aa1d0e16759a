"""Small but real agent packages of any version, for the self-update tests: dpkg-deb builds
a ``secondline-agent_VERSION_amd64.deb`` holding this checkout's ``agent`` package with
``agent/version.py`` saying VERSION, at the path the real package uses
(``/opt/secondline-agent/lib/agent``). Without the vendored libraries (the test's
virtualenv has them), so it builds in a moment where ``make agent-deb`` takes a minute."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
LIB = Path("opt/secondline-agent/lib")


def release_deb(version: str, out_dir: Path) -> Path:
    """Build the package of ``version`` into ``out_dir``; its path."""
    tree = out_dir / f"tree-{version}"
    shutil.rmtree(tree, ignore_errors=True)
    shutil.copytree(
        ROOT / "agent", tree / LIB / "agent", ignore=shutil.ignore_patterns("__pycache__")
    )
    (tree / LIB / "agent" / "version.py").write_text(
        f'from typing import Final\n\nVERSION: Final = "{version}"\n'
    )
    (tree / "DEBIAN").mkdir()
    (tree / "DEBIAN" / "control").write_text(
        "Package: secondline-agent\n"
        f"Version: {version}\n"
        "Architecture: amd64\n"
        "Maintainer: Secondline <dev@secondline.invalid>\n"
        "Description: Secondline agent (self-update test build)\n"
    )
    deb = out_dir / f"secondline-agent_{version}_amd64.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "--build", str(tree), str(deb)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    shutil.rmtree(tree)
    return deb


def agent_lib(root: Path) -> Path:
    """Where a package unpacked into ``root`` keeps the agent (for PYTHONPATH)."""
    return root / LIB
