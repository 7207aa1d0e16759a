"""Facts about the machine: what the broker shows about an agent.

:class:`Facts` is the wire unit (enrollment request and ``sl:facts`` output), pure and
strictly validated, because agent data is hostile to the broker. :func:`collect_facts`
reads them from the machine (``/etc/os-release``, ``uname``, ``utmp``, and for ``sl:facts``
the installed packages and running services from ``dpkg-query`` or ``rpm`` and
``systemctl``) and sanitises what it finds so that the result always validates.

Packages and services are optional keys: an agent from before them sends none, and the
enrollment request leaves them out (they would not fit its size limit); the broker reads
them from ``sl:facts`` after every tunnel connect. The knowledge base ranks with them.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import socket
import struct
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from agent.errors import MessageError
from agent.protocol import (
    FACT_TEXT_MAX,
    FACT_USERS_MAX,
    LOCAL_USER_RE,
    has_control_chars,
    load_json_object,
    sanitize_text,
)

_TEXT_FIELDS: Final = ("hostname", "os", "os_version", "kernel", "arch")
_FIELDS: Final = frozenset((*_TEXT_FIELDS, "users"))
_SOFTWARE_FIELDS: Final = ("packages", "services")  # optional: older agents send neither
FACTS_JSON_MAX: Final = 128 * 1024
# A Debian desktop has about 2,500 packages, a server a few hundred; beyond the caps the
# first names in sorted order are kept (collect) or the facts refused (parse).
FACT_PACKAGES_MAX: Final = 4000
FACT_SERVICES_MAX: Final = 400
# Package names (Debian policy, RPM) and systemd unit names without ".service"; anything
# else (escaped unit names, markup, spaces) is left out when collecting, refused on parse.
PACKAGE_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9+._-]{0,99}")
SERVICE_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9@:._-]{0,99}")
SOFTWARE_TIMEOUT_SECONDS: Final = 10.0
SOFTWARE_OUTPUT_MAX: Final = 4 * 1024 * 1024

# struct utmp on Linux (glibc, 64-bit and 32-bit alike since the time fields are 32-bit):
# ut_type, ut_pid, ut_line[32], ut_id[4], ut_user[32], ut_host[256], ut_exit, ut_session,
# ut_tv, ut_addr_v6[4], unused[20].
_UTMP_RECORD: Final = struct.Struct("=hxxi32s4s32s256shhiii16s20x")
_USER_PROCESS: Final = 7
_OS_RELEASE_LINE_RE: Final = re.compile(r"([A-Z0-9_]+)=(.*)")


@dataclass(frozen=True, slots=True, kw_only=True)
class Facts:
    """Hostname, OS, kernel, architecture, logged-in users, installed packages and running
    services of a machine."""

    hostname: str
    os: str
    os_version: str
    kernel: str
    arch: str
    users: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()
    services: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in _TEXT_FIELDS:
            _check_text(getattr(self, name), name)
        if not self.hostname:
            raise MessageError("facts: hostname is empty")
        if len(self.users) > FACT_USERS_MAX:
            raise MessageError(f"facts: more than {FACT_USERS_MAX} users")
        for user in self.users:
            if not isinstance(user, str) or LOCAL_USER_RE.fullmatch(user) is None:
                raise MessageError("facts: a user name has characters that are not allowed")
        for name, names, cap, pattern in (
            ("packages", self.packages, FACT_PACKAGES_MAX, PACKAGE_RE),
            ("services", self.services, FACT_SERVICES_MAX, SERVICE_RE),
        ):
            if len(names) > cap:
                raise MessageError(f"facts: more than {cap} {name}")
            for item in names:
                if not isinstance(item, str) or pattern.fullmatch(item) is None:
                    raise MessageError(f"facts: a name in {name} has characters not allowed")

    @classmethod
    def from_dict(cls, obj: object) -> Facts:
        """Validate a decoded JSON object; unknown keys are refused."""
        if not isinstance(obj, dict):
            raise MessageError("facts are not a JSON object")
        unknown = sorted(
            str(key) for key in obj if key not in _FIELDS and key not in _SOFTWARE_FIELDS
        )
        if unknown:
            raise MessageError(f"facts: unknown key {unknown[0][:40]!r}")
        missing = sorted(key for key in _FIELDS if key not in obj)
        if missing:
            raise MessageError(f"facts: missing key {missing[0]!r}")
        lists = {}
        for key in ("users", *_SOFTWARE_FIELDS):
            value = obj.get(key, [])
            if not isinstance(value, list):
                raise MessageError(f"facts: {key} is not a list")
            lists[key] = tuple(value)
        return cls(
            hostname=obj["hostname"],
            os=obj["os"],
            os_version=obj["os_version"],
            kernel=obj["kernel"],
            arch=obj["arch"],
            users=lists["users"],
            packages=lists["packages"],
            services=lists["services"],
        )

    @classmethod
    def parse(cls, data: bytes | str) -> Facts:
        """Parse the JSON written by ``sl:facts``."""
        return cls.from_dict(load_json_object(data, "facts", max_bytes=FACTS_JSON_MAX))

    def to_dict(self) -> dict[str, object]:
        """The JSON object of the contract."""
        out: dict[str, object] = {
            "hostname": self.hostname,
            "os": self.os,
            "os_version": self.os_version,
            "kernel": self.kernel,
            "arch": self.arch,
            "users": list(self.users),
        }
        # Left out when empty: the shape older brokers know.
        if self.packages:
            out["packages"] = list(self.packages)
        if self.services:
            out["services"] = list(self.services)
        return out

    def serialize(self) -> bytes:
        """Compact JSON bytes."""
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()


def _check_text(value: object, name: str) -> None:
    if not isinstance(value, str):
        raise MessageError(f"facts: {name} is not a string")
    if len(value) > FACT_TEXT_MAX:
        raise MessageError(f"facts: {name} is longer than {FACT_TEXT_MAX} characters")
    if has_control_chars(value):
        raise MessageError(f"facts: {name} holds control characters")


def parse_os_release(text: str) -> dict[str, str]:
    """Parse ``/etc/os-release`` (shell-style ``KEY=value`` lines, optionally quoted)."""
    result: dict[str, str] = {}
    for raw_line in text.splitlines():
        match = _OS_RELEASE_LINE_RE.fullmatch(raw_line.strip())
        if match is None:
            continue
        key, value = match.group(1), match.group(2)
        quote = value[:1]
        if len(value) >= 2 and quote in ("'", '"') and value.endswith(quote):
            value = value[1:-1]
            if quote == '"':
                value = re.sub(r'\\([\\$"`])', r"\1", value)
        result[key] = value
    return result


def parse_utmp(data: bytes) -> list[str]:
    """User names of the ``USER_PROCESS`` records of a utmp file, in file order."""
    users: list[str] = []
    size = _UTMP_RECORD.size
    for offset in range(0, len(data) - size + 1, size):
        fields = _UTMP_RECORD.unpack_from(data, offset)
        if fields[0] != _USER_PROCESS:
            continue
        name = fields[4].split(b"\0", 1)[0].decode("utf-8", "replace")
        users.append(name)
    return users


def clean_users(names: Iterable[str]) -> tuple[str, ...]:
    """Drop invalid names and duplicates, sort, and keep at most the allowed count."""
    valid = {name for name in names if LOCAL_USER_RE.fullmatch(name)}
    return tuple(sorted(valid)[:FACT_USERS_MAX])


def clean_names(names: Iterable[str], pattern: re.Pattern[str], cap: int) -> tuple[str, ...]:
    """Valid names, each once, sorted, at most ``cap``."""
    return tuple(sorted({n for n in names if pattern.fullmatch(n)})[:cap])


def parse_package_list(text: str) -> tuple[str, ...]:
    """Package names from ``dpkg-query -W -f '${Package}\\n'`` or ``rpm -qa --qf
    '%{NAME}\\n'`` (one a line)."""
    return clean_names((line.strip() for line in text.splitlines()), PACKAGE_RE, FACT_PACKAGES_MAX)


def parse_running_services(text: str) -> tuple[str, ...]:
    """Service names (``cups``) from ``systemctl list-units --type=service --state=running
    --plain --no-legend`` (``cups.service loaded active running CUPS Scheduler``)."""
    names = (
        line.split(None, 1)[0].removesuffix(".service")
        for line in text.splitlines()
        if line.strip()
    )
    return clean_names(names, SERVICE_RE, FACT_SERVICES_MAX)


def _program_output(argv: list[str]) -> str:
    """What a program printed, or '' when it is missing, fails or takes too long: a machine
    without a package manager or without systemd still has facts."""
    program = shutil.which(argv[0])
    if program is None:
        return ""
    try:
        done = subprocess.run(
            [program, *argv[1:]],
            capture_output=True,
            timeout=SOFTWARE_TIMEOUT_SECONDS,
            check=False,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"},
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    if done.returncode != 0:
        return ""
    return done.stdout[:SOFTWARE_OUTPUT_MAX].decode("utf-8", "replace")


def collect_software() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The installed packages and the running services of this machine."""
    listing = _program_output(["dpkg-query", "-W", "-f", "${Package}\n"]) or _program_output(
        ["rpm", "-qa", "--qf", "%{NAME}\n"]
    )
    units = _program_output(
        [
            *("systemctl", "list-units", "--type=service", "--state=running"),
            *("--plain", "--no-legend", "--no-pager"),
        ]
    )
    return parse_package_list(listing), parse_running_services(units)


def collect_facts(
    *,
    os_release: Path = Path("/etc/os-release"),
    utmp: Path = Path("/run/utmp"),
    software: bool = True,
) -> Facts:
    """Read the facts of this machine; the result always validates. Without ``software``
    the packages and services are left out (the enrollment request)."""
    try:
        release = parse_os_release(os_release.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        try:
            release = parse_os_release(
                Path("/usr/lib/os-release").read_text(encoding="utf-8", errors="replace")
            )
        except OSError:
            release = {}
    try:
        users = clean_users(parse_utmp(utmp.read_bytes()))
    except OSError:
        users = ()
    packages, services = collect_software() if software else ((), ())
    uname = os.uname()
    hostname = _fact_text(socket.gethostname() or uname.nodename).strip()
    return Facts(
        hostname=hostname or "unknown",
        os=_fact_text(release.get("NAME", platform.system())),
        os_version=_fact_text(release.get("VERSION_ID", "")),
        kernel=_fact_text(uname.release),
        arch=_fact_text(uname.machine),
        users=users,
        packages=packages,
        services=services,
    )


def _fact_text(value: str) -> str:
    """A collected fact as the broker accepts it: no control characters, and no ``<`` or
    ``>`` (the broker refuses markup in facts, and an os-release that holds them must not
    keep the machine from enrolling)."""
    return sanitize_text(value.replace("<", "").replace(">", ""), FACT_TEXT_MAX)
