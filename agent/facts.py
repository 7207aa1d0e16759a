"""Facts about the machine: what the broker shows about an agent.

:class:`Facts` is the wire unit (enrollment request and ``sl:facts`` output), pure and
strictly validated, because agent data is hostile to the broker. :func:`collect_facts`
reads them from the machine (``/etc/os-release``, ``uname``, ``utmp``) and sanitises what
it finds so that the result always validates.
"""

from __future__ import annotations

import json
import os
import platform
import re
import socket
import struct
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
FACTS_JSON_MAX: Final = 32 * 1024

# struct utmp on Linux (glibc, 64-bit and 32-bit alike since the time fields are 32-bit):
# ut_type, ut_pid, ut_line[32], ut_id[4], ut_user[32], ut_host[256], ut_exit, ut_session,
# ut_tv, ut_addr_v6[4], unused[20].
_UTMP_RECORD: Final = struct.Struct("=hxxi32s4s32s256shhiii16s20x")
_USER_PROCESS: Final = 7
_OS_RELEASE_LINE_RE: Final = re.compile(r"([A-Z0-9_]+)=(.*)")


@dataclass(frozen=True, slots=True, kw_only=True)
class Facts:
    """Hostname, OS, kernel, architecture and logged-in users of a machine."""

    hostname: str
    os: str
    os_version: str
    kernel: str
    arch: str
    users: tuple[str, ...] = ()

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

    @classmethod
    def from_dict(cls, obj: object) -> Facts:
        """Validate a decoded JSON object; unknown keys are refused."""
        if not isinstance(obj, dict):
            raise MessageError("facts are not a JSON object")
        unknown = sorted(str(key) for key in obj if key not in _FIELDS)
        if unknown:
            raise MessageError(f"facts: unknown key {unknown[0][:40]!r}")
        missing = sorted(key for key in _FIELDS if key not in obj)
        if missing:
            raise MessageError(f"facts: missing key {missing[0]!r}")
        users = obj["users"]
        if not isinstance(users, list):
            raise MessageError("facts: users is not a list")
        return cls(
            hostname=obj["hostname"],
            os=obj["os"],
            os_version=obj["os_version"],
            kernel=obj["kernel"],
            arch=obj["arch"],
            users=tuple(users),
        )

    @classmethod
    def parse(cls, data: bytes | str) -> Facts:
        """Parse the JSON written by ``sl:facts``."""
        return cls.from_dict(load_json_object(data, "facts", max_bytes=FACTS_JSON_MAX))

    def to_dict(self) -> dict[str, object]:
        """The JSON object of the contract."""
        return {
            "hostname": self.hostname,
            "os": self.os,
            "os_version": self.os_version,
            "kernel": self.kernel,
            "arch": self.arch,
            "users": list(self.users),
        }

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


def collect_facts(
    *,
    os_release: Path = Path("/etc/os-release"),
    utmp: Path = Path("/run/utmp"),
) -> Facts:
    """Read the facts of this machine; the result always validates."""
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
    uname = os.uname()
    hostname = _fact_text(socket.gethostname() or uname.nodename).strip()
    return Facts(
        hostname=hostname or "unknown",
        os=_fact_text(release.get("NAME", platform.system())),
        os_version=_fact_text(release.get("VERSION_ID", "")),
        kernel=_fact_text(uname.release),
        arch=_fact_text(uname.machine),
        users=users,
    )


def _fact_text(value: str) -> str:
    """A collected fact as the broker accepts it: no control characters, and no ``<`` or
    ``>`` (the broker refuses markup in facts, and an os-release that holds them must not
    keep the machine from enrolling)."""
    return sanitize_text(value.replace("<", "").replace(">", ""), FACT_TEXT_MAX)
