"""Whether an article fits the machine a ticket is about (pure).

A ticket's text says "printer does not print"; its machine says Windows 11. An article about
CUPS on Debian shares the words but not the machine. The agent reports the OS of each machine
linked to the ticket; an article names OS names and carries the commands of the session it
came from. Both sides are reduced to OS families (windows, linux, macos): from OS names, and
for an article without OS names from its commands (``apt-get``, ``systemctl`` are Linux;
``ipconfig``, ``Get-Printer`` are Windows). An article whose families are known and share
none with the ticket's machines goes after the ones that fit, never out of the list: the
machine may not be where the problem is (a Windows client of a Linux print server).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Final, TypeVar

from broker.kb.analysis import fold, words

_FAMILY_WORDS: Final = {
    "windows": frozenset({"windows", "win10", "win11"}),
    "linux": frozenset(
        {"linux", "debian", "ubuntu", "fedora", "rhel", "centos", "suse", "opensuse", "alpine"}
        | {"mint", "arch", "rocky", "almalinux", "raspbian"}
    ),
    "macos": frozenset({"macos", "osx", "darwin"}),
}
# Programs by the OS family they run on; ``sudo`` is skipped before looking the name up.
_LINUX_TEXT: Final = (
    "apt apt-get aptitude dpkg snap yum dnf rpm zypper systemctl journalctl service lpstat "
    "lpadmin lp lpr cancel cupsctl cupsenable ip ifconfig nmcli iptables nft ufw mount umount "
    "df du lsblk fdisk mkfs chown chmod chgrp useradd usermod passwd sss_cache realm kinit "
    "klist timedatectl chronyc localectl hostnamectl update-ca-certificates restic rsync "
    "smbclient su ls cat grep find rm mv cp tail less vi nano crontab"
)
_WINDOWS_TEXT: Final = (
    "ipconfig netsh net cmdkey gpupdate gpresult manage-bde powercfg w32tm winget mstsc tzutil "
    "sfc dism reg regedit wmic schtasks taskkill tasklist robocopy xcopy del ren rd msiexec "
    "wusa certutil bcdedit chkdsk diskpart powershell pwsh"
)
_MAC_TEXT: Final = "brew softwareupdate diskutil launchctl defaults"
_COMMANDS: Final = (
    ("linux", frozenset(_LINUX_TEXT.split())),
    ("windows", frozenset(_WINDOWS_TEXT.split())),
    ("macos", frozenset(_MAC_TEXT.split())),
)
# PowerShell cmdlets are Verb-Noun (Get-Printer, Unlock-ADAccount): Windows.
_CMDLET: Final = re.compile(r"^[A-Z][a-z]+-[A-Z][A-Za-z]+$")

T = TypeVar("T")


def os_families(names: Iterable[str]) -> frozenset[str]:
    """The OS families named in OS names ("Debian GNU/Linux 12" → linux)."""
    found: set[str] = set()
    for name in names:
        folded = {fold(w) for w in words(name)}
        found.update(family for family, known in _FAMILY_WORDS.items() if folded & known)
    return frozenset(found)


def command_family(command: str) -> str | None:
    """The OS family a command line belongs to, by its program, or None when unclear."""
    parts = command.strip().split()
    if not parts:
        return None
    program = parts[1] if parts[0] == "sudo" and len(parts) > 1 else parts[0]
    if _CMDLET.match(program):
        return "windows"
    name = program.rsplit("/", 1)[-1].casefold()
    for family, known in _COMMANDS:
        if name in known:
            return family
    return None


def article_families(os_names: Sequence[str], commands: Sequence[str]) -> frozenset[str]:
    """The families an article is for: its OS names, else what its commands run on."""
    named = os_families(os_names)
    if named:
        return named
    return frozenset(f for f in (command_family(c) for c in commands) if f is not None)


def fits(machine: frozenset[str], article: frozenset[str]) -> bool:
    """False only when both sides are known and share no family."""
    return not machine or not article or bool(machine & article)


def machine_order(machine: frozenset[str], items: Sequence[tuple[T, frozenset[str]]]) -> list[T]:
    """``items`` (best first, with their families) with those not fitting the machine moved
    after the others, each group keeping its order."""
    fitting = [item for item, families in items if fits(machine, families)]
    others = [item for item, families in items if not fits(machine, families)]
    return fitting + others
