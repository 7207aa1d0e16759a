"""What the figures were measured on: hardware, kernel and the versions that matter."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path

from bench.openssh import openssh_version
from bench.results import JSON


def _first_value(path: Path, key: str) -> str | None:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == key:
                return value.strip()
    except OSError:
        return None
    return None


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.platform()


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def _memory_bytes() -> int | None:
    total = _first_value(Path("/proc/meminfo"), "MemTotal")
    return int(total.split()[0]) * 1024 if total else None


def machine_info() -> dict[str, JSON]:
    """Return the machine and software the run measured."""
    load = os.getloadavg()
    return {
        "nproc": os.cpu_count(),
        "memory_bytes": _memory_bytes(),
        "kernel": platform.release(),
        "os": _os_name(),
        "cpu_model": _first_value(Path("/proc/cpuinfo"), "model name") or platform.processor(),
        "loadavg_at_start": [round(value, 2) for value in load],
        "versions": {
            "python": sys.version.split()[0],
            "openssh": openssh_version(),
            "asyncssh": _version("asyncssh"),
            "secondline": _version("secondline"),
            "matplotlib": _version("matplotlib"),
        },
    }
