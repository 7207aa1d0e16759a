"""Build the agent's Debian package with dpkg-deb: ``make agent-deb``.

The package runs the agent on the distribution's ``python3`` (Debian 12: 3.11) with the
agent and its libraries vendored in ``/opt/secondline-agent/lib``, installed by pip from
the same versions the test suite ran with (those of this virtualenv). Why not a virtualenv
of its own: the interpreter, with its security updates, stays Debian's; a venv would pin
an interpreter path of the build machine. Why not Debian's libraries: Debian 12's
asyncssh, websockets and cryptography are older than the agent needs.

The vendored cffi and websockets' speed-up carry CPython 3.11 binaries, so the package
is for one architecture and depends on python3 (>= 3.11), python3 (<< 3.12).

Usage: python tools/build_agent_deb.py [--out DIR]; prints the path of the .deb.
"""

from __future__ import annotations

import argparse
import email.utils
import gzip
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging" / "deb"
NAME = "secondline-agent"
#: The agent's libraries, pinned to what this checkout tested; pip adds their dependencies.
LIBRARIES = ("asyncssh", "websockets", "cryptography")
MAINTAINER = "Secondline maintainers <maintainers@secondline.invalid>"


def project_version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def architecture() -> str:
    out = subprocess.run(
        ["dpkg", "--print-architecture"], check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


def vendor(lib: Path) -> None:
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in LIBRARIES]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-compile",
            "--only-binary=:all:",
            "--target",
            str(lib),
            *pins,
        ],
        check=True,
    )
    shutil.rmtree(lib / "bin", ignore_errors=True)
    shutil.copytree(
        ROOT / "agent", lib / "agent", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    for cache in list(lib.rglob("__pycache__")):
        shutil.rmtree(cache)


def install_file(src: Path | bytes, dest: Path, mode: int) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(src, bytes):
        dest.write_bytes(src)
    else:
        shutil.copyfile(src, dest)
    dest.chmod(mode)


def gzipped(data: bytes) -> bytes:
    # mtime 0: the same sources give the same package.
    return gzip.compress(data, compresslevel=9, mtime=0)


def source_date() -> int:
    """The last commit's time: file dates and the changelog follow the sources."""
    out = subprocess.run(
        ["git", "-C", str(ROOT), "log", "-1", "--format=%ct"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(out.stdout.strip())


def changelog(version: str, when: int) -> bytes:
    stamp = email.utils.formatdate(when, usegmt=False)
    return (
        f"{NAME} ({version}) unstable; urgency=medium\n\n"
        "  * Built from the Secondline repository (see its git log).\n\n"
        f" -- {MAINTAINER}  {stamp}\n"
    ).encode()


def strip_objects(lib: Path) -> None:
    """Shared objects without debugging symbols, as dh_strip leaves them."""
    for so in lib.rglob("*.so"):
        subprocess.run(
            [
                "strip",
                "--strip-unneeded",
                "--remove-section=.comment",
                "--remove-section=.note",
                str(so),
            ],
            check=True,
        )


def control(version: str, arch: str, installed_kib: int) -> str:
    return (
        f"Package: {NAME}\n"
        f"Version: {version}\n"
        f"Architecture: {arch}\n"
        f"Maintainer: {MAINTAINER}\n"
        f"Installed-Size: {installed_kib}\n"
        "Depends: python3 (>= 3.11), python3 (<< 3.12), adduser, debconf (>= 0.5) | debconf-2.0,"
        " init-system-helpers (>= 1.52), libc6 (>= 2.28)\n"
        # The consent window and session indicator on the desktop (agent/consent_window.py);
        # without them the end user answers in a terminal.
        "Recommends: python3-gi, gir1.2-gtk-3.0\n"
        "Section: admin\n"
        "Priority: optional\n"
        "Description: Secondline remote-support agent\n"
        " Dials out to the helpdesk's Secondline broker and serves recorded support\n"
        " sessions on this machine, with the end user's consent. Nothing listens on the\n"
        " machine; the broker's certificate is pinned at enrollment.\n"
    )


def build(out_dir: Path) -> Path:
    version = project_version()
    # The agent reports agent.version.VERSION and compares offered releases with it: a
    # package whose name says another version would be offered itself again and again.
    sys.path.insert(0, str(ROOT))
    from agent.version import VERSION

    if version != VERSION:
        raise SystemExit(
            f"pyproject.toml says {version}, agent/version.py says {VERSION}; make them equal"
        )
    arch = architecture()
    work = out_dir / f"{NAME}-build"
    shutil.rmtree(work, ignore_errors=True)
    root = work / "root"
    when = source_date()
    vendor(root / "opt" / NAME / "lib")
    strip_objects(root / "opt" / NAME / "lib")
    install_file(PACKAGING / NAME, root / "usr/bin" / NAME, 0o755)
    install_file(
        PACKAGING / f"{NAME}.service", root / "lib/systemd/system" / f"{NAME}.service", 0o644
    )
    for unit in (f"{NAME}-update.path", f"{NAME}-update.service"):
        install_file(PACKAGING / unit, root / "lib/systemd/system" / unit, 0o644)
    install_file(
        PACKAGING / "sessions-as-login-user.conf",
        root / "usr/share" / NAME / "sessions-as-login-user.conf",
        0o644,
    )
    doc = root / "usr/share/doc" / NAME
    install_file(PACKAGING / "copyright", doc / "copyright", 0o644)
    install_file(gzipped(changelog(version, when)), doc / "changelog.gz", 0o644)
    man = (PACKAGING / f"{NAME}.8").read_bytes()
    install_file(gzipped(man), root / "usr/share/man/man8" / f"{NAME}.8.gz", 0o644)
    install_file(
        PACKAGING / "lintian-overrides", root / "usr/share/lintian/overrides" / NAME, 0o644
    )

    files = sorted(p for p in root.rglob("*") if p.is_file())
    launcher = root / "usr/bin" / NAME
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() or path == launcher else 0o644)
    installed_kib = sum((p.stat().st_size + 1023) // 1024 for p in files)
    debian = root / "DEBIAN"
    debian.mkdir()
    (debian / "control").write_text(control(version, arch, installed_kib))
    (debian / "md5sums").write_text(
        "".join(
            f"{hashlib.md5(p.read_bytes()).hexdigest()}  {p.relative_to(root)}\n"  # noqa: S324
            for p in files
        )
    )
    for script in ("config", "postinst", "prerm", "postrm"):
        install_file(PACKAGING / script, debian / script, 0o755)
    install_file(PACKAGING / "templates", debian / "templates", 0o644)
    (debian / "control").chmod(0o644)
    (debian / "md5sums").chmod(0o644)

    deb = out_dir / f"{NAME}_{version}_{arch}.deb"
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(when)}
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(root), str(deb)],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    shutil.rmtree(work)
    return deb


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="where the .deb goes")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(build(args.out.resolve()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
